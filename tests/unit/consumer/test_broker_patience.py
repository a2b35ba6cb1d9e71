"""A broker that cannot be reached for a moment (restarting) is waited for, not a reason to
stop: librdkafka's "cannot reach it" errors are transient, and calls outside the poll loop
retry them."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException

from consumer.kafka_clients import while_broker_unavailable
from provisioning.errors import ConfigurationError, TransientError
from provisioning.topics import _wrap


@pytest.mark.parametrize("code", [KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN,
                                  KafkaError._TIMED_OUT])
def test_an_unreachable_broker_is_a_transient_error(code: int) -> None:
    wrapped = _wrap(KafkaException(KafkaError(code)), "listing topics")

    assert isinstance(wrapped, TransientError)
    assert str(wrapped).startswith("listing topics: ")


def test_a_wrong_request_stays_a_configuration_error() -> None:
    wrapped = _wrap(KafkaException(KafkaError(KafkaError.INVALID_PARTITIONS)), "creating topics")

    assert isinstance(wrapped, ConfigurationError)


def test_transient_errors_are_retried_until_the_broker_answers() -> None:
    answers = iter([TransientError("listing topics: broker transport failure"),
                    KafkaException(KafkaError(KafkaError._TRANSPORT)), "counts"])

    def operation() -> str:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert while_broker_unavailable(operation, first_wait_s=0.01, max_wait_s=0.01) == "counts"


def test_a_configuration_error_is_not_retried() -> None:
    calls = []

    def operation() -> None:
        calls.append(1)
        raise ConfigurationError("co-partitioned topics must have the same partition count")

    with pytest.raises(ConfigurationError):
        while_broker_unavailable(operation, first_wait_s=0.01, max_wait_s=0.01)
    assert len(calls) == 1
