"""Kafka's refusals become the service's own errors, naming who was refused what."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError
from pydantic import SecretStr

from provisioning.errors import ConfigurationError
from provisioning.kafka_access import (
    KafkaAccessDenied,
    KafkaLoginRefused,
    denial,
    login_refusals,
    principal_of,
)
from provisioning.settings import Settings

WORKER = Settings(kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="SCRAM-SHA-512",
                  kafka_sasl_username="provisioning-worker",
                  kafka_sasl_password=SecretStr("s3cr3t"))


def test_a_topic_refusal_names_principal_operation_and_topic() -> None:
    refused = denial(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED), WORKER, "Write",
                     topic="prod.provisioning.commands")

    assert isinstance(refused, KafkaAccessDenied) and isinstance(refused, ConfigurationError)
    assert str(refused) == (
        "Kafka denied User:provisioning-worker Write on topic prod.provisioning.commands "
        "(Broker: Topic authorization failed); see the README's Kafka ACL table, or "
        "`provisioning acls apply`")
    assert (refused.principal, refused.operation, refused.resource) == (
        "User:provisioning-worker", "Write", "topic prod.provisioning.commands")


@pytest.mark.parametrize(("code", "resource"), [
    (KafkaError.GROUP_AUTHORIZATION_FAILED, "group provisioning-worker"),
    (KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED, "transactional id provisioning-worker-0"),
    (KafkaError.CLUSTER_AUTHORIZATION_FAILED, "the cluster"),
])
def test_each_kind_of_refusal_names_its_resource(code: int, resource: str) -> None:
    refused = denial(KafkaError(code), WORKER, "Read", topic="t", group="provisioning-worker",
                     transactional_id="provisioning-worker-0")

    assert refused is not None and refused.resource == resource


def test_other_errors_are_no_refusal() -> None:
    for code in (KafkaError._TRANSPORT, KafkaError.NOT_LEADER_FOR_PARTITION,
                 KafkaError._MSG_TIMED_OUT):
        assert denial(KafkaError(code), WORKER, "Write", topic="t") is None
    assert denial(None, WORKER, "Write", topic="t") is None


def test_a_refused_login_is_raised_once_from_the_error_callback_without_the_password() -> None:
    on_error = login_refusals(WORKER)
    failed = KafkaError(KafkaError._AUTHENTICATION,
                        "SASL authentication error: Authentication failed due to invalid "
                        "credentials with SASL mechanism SCRAM-SHA-512")

    on_error(KafkaError(KafkaError._TRANSPORT, "broker down"))  # not a refusal: ignored
    with pytest.raises(KafkaLoginRefused) as error:
        on_error(failed)
    on_error(failed)  # once: the process is stopping, its clean-up must not raise it again

    assert str(error.value).startswith("Kafka refused the login of User:provisioning-worker: "
                                       "SASL authentication error")
    assert "s3cr3t" not in str(error.value)


def test_the_principal_as_the_brokers_see_it() -> None:
    assert principal_of(Settings()) == "User:ANONYMOUS"
    assert principal_of(WORKER) == "User:provisioning-worker"
    mtls = Settings(kafka_security_protocol="SSL", kafka_ssl_certificate_location="/tls/w.crt")
    assert principal_of(mtls) == "the principal of certificate /tls/w.crt"

