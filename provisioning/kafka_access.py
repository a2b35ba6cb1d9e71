"""Kafka's refusals as the service's own error: who was refused what, on which resource.

On a cluster with an authorizer, a client asking for what its principal's ACLs do not grant
gets an authorization error (a delivery report, a consumer error, a failed admin call), and a
client whose login fails gets an authentication error on its error callback, retried by
librdkafka forever. Neither must look like a slow or missing broker: every client of the
service turns them into `KafkaAccessDenied`, which names the principal, the operation and the
resource, and the process stops with that one line instead of waiting.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError

from provisioning.errors import ConfigurationError
from provisioning.settings import Settings

_DENIED = {
    KafkaError.TOPIC_AUTHORIZATION_FAILED: "topic",
    KafkaError.GROUP_AUTHORIZATION_FAILED: "group",
    KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED: "transactional id",
    KafkaError.CLUSTER_AUTHORIZATION_FAILED: "cluster",
}
ACL_HINT = "see the README's Kafka ACL table, or `provisioning acls apply`"
# librdkafka's own errors for a broker it cannot reach (restarting, say): not marked
# retriable, but nothing about the request is wrong.
_BROKER_AWAY = frozenset({KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN,
                          KafkaError._TIMED_OUT})


class KafkaAccessDenied(ConfigurationError):
    """Kafka refused this principal an operation that its ACLs do not grant."""

    def __init__(self, principal: str, operation: str, resource: str, detail: str) -> None:
        self.principal = principal
        self.operation = operation
        self.resource = resource
        super().__init__(f"Kafka denied {principal} {operation} on {resource} ({detail}); "
                         f"{ACL_HINT}")


class KafkaLoginRefused(KafkaAccessDenied):
    """Kafka refused this client's login (unknown user, wrong password or mechanism)."""

    def __init__(self, principal: str, detail: str) -> None:
        self.principal = principal
        self.operation = "login"
        self.resource = "the cluster"
        ConfigurationError.__init__(self, f"Kafka refused the login of {principal}: {detail}")


def principal_of(settings: Settings) -> str:
    """The principal the brokers see for these settings (for messages; never a secret)."""
    protocol = settings.kafka_security_protocol
    if protocol.startswith("SASL") and settings.kafka_sasl_username:
        return f"User:{settings.kafka_sasl_username}"
    if protocol == "SSL" and settings.kafka_ssl_certificate_location:
        return f"the principal of certificate {settings.kafka_ssl_certificate_location}"
    return "User:ANONYMOUS"


def denial(error: KafkaError | None, settings: Settings, operation: str, *,
           topic: str | None = None, group: str | None = None,
           transactional_id: str | None = None) -> KafkaAccessDenied | None:
    """`error` as a `KafkaAccessDenied` when it is a refusal by the cluster, else None."""
    if error is None:
        return None
    if error.code() == KafkaError._AUTHENTICATION:
        return KafkaLoginRefused(principal_of(settings), error.str())
    kind = _DENIED.get(error.code())
    if kind is None:
        return None
    name = {"topic": topic, "group": group, "transactional id": transactional_id,
            "cluster": "the cluster"}[kind]
    resource = f"{kind} {name}" if kind != "cluster" else "the cluster"
    if name is None:
        resource = kind
    return KafkaAccessDenied(principal_of(settings), operation, resource, error.str())


def worth_retrying(error: KafkaError) -> bool:
    """The broker says "try again", or cannot be reached at the moment."""
    return error.retriable() or error.code() in _BROKER_AWAY


def raise_if_denied(error: KafkaError | None, settings: Settings, operation: str,
                    **resource: str | None) -> None:
    refused = denial(error, settings, operation, **resource)
    if refused is not None:
        raise refused


def client_config(settings: Settings) -> dict[str, Any]:
    """`settings.kafka_config()` plus an error callback that raises `KafkaLoginRefused` from
    the client's next poll/flush/consume when the login is refused, instead of letting
    librdkafka retry it forever behind a client that merely looks slow."""
    return {**settings.kafka_config(), "error_cb": login_refusals(settings)}


def login_refusals(settings: Settings) -> Callable[[KafkaError], None]:
    principal = principal_of(settings)
    raised = False

    def on_error(error: KafkaError) -> None:
        nonlocal raised
        if error.code() == KafkaError._AUTHENTICATION and not raised:
            raised = True  # once: the caller stops; its clean-up must not raise it again
            raise KafkaLoginRefused(principal, error.str())

    return on_error


def flush(producer: Any, timeout_s: float, slice_s: float = 0.2) -> int:
    """`producer.flush(timeout_s)` in short slices, so that a refused login raised by the
    error callback ends it at once rather than after the whole timeout (a flush only raises
    a callback's exception when it returns). Returns the records still queued."""
    deadline = time.monotonic() + timeout_s
    remaining = producer.flush(min(slice_s, timeout_s))
    while remaining and time.monotonic() < deadline:
        remaining = producer.flush(min(slice_s, max(0.0, deadline - time.monotonic())))
    return remaining
