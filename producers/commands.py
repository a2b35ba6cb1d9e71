"""Publishing provisioning commands: what a platform service imports to delegate provisioning.

A command is an Avro record (`ProvisionTenantRequest`, ...) keyed by its requestId. The
producer uses librdkafka's `murmur2_random` partitioner, the Java client's default, so a Java
or Go service publishing the same requestId lands on the same partition.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from provisioning import kafka_access
from provisioning.errors import ProvisioningError, TransientError
from provisioning.settings import Settings
from provisioning.topics import COMMAND_HEADROOM_BYTES, TopicLayout
from schemas import codec

COMMAND_RECORDS = frozenset(
    {
        "ProvisionTenantRequest",
        "ProvisionServiceRequest",
        "ProvisionUserRequest",
        "ProvisionResourceRequest",
        # An operator's cancel, retry or resume of a request travels the same way.
        "ProvisioningOperatorCommand",
    }
)

log = logging.getLogger(__name__)


class PublishError(ProvisioningError):
    """A command could not be delivered to the commands topic."""


def producer_config(settings: Settings) -> dict[str, Any]:
    """Every producer of the service: acks from all in-sync replicas, idempotent (no record
    doubled by a retry), the Java client's partitioner; a refused login raises."""
    return {
        **kafka_access.client_config(settings),
        "partitioner": "murmur2_random",
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "compression.type": "lz4",
    }


def command_producer_config(settings: Settings) -> dict[str, Any]:
    """A producer of the commands topic. That topic refuses record batches over its
    max.message.bytes (`topics create` sets it from max_command_bytes), and librdkafka does
    not split a refused batch: batches stay under that size, so one large command never fails
    the small ones batched with it, and a command over it fails at once, locally."""
    batch_limit = settings.max_command_bytes + COMMAND_HEADROOM_BYTES
    return {**producer_config(settings), "batch.size": batch_limit,
            "message.max.bytes": batch_limit}


class CommandPublisher:
    """Publishes commands; call `flush()` to wait for delivery (or use it as a context manager)."""

    def __init__(self, settings: Settings, producer: Producer | None = None) -> None:
        self._settings = settings
        self._topic = TopicLayout(settings.topic_prefix).commands
        self._producer = producer or Producer(command_producer_config(settings), logger=log)
        self._failures: list[KafkaError] = []

    def publish(
        self, record_name: str, command: Mapping[str, Any], traceparent: str | None = None
    ) -> str:
        """Queue one command for delivery; returns its requestId."""
        if record_name not in COMMAND_RECORDS:
            raise PublishError(f"{record_name} is not a command; expected one of "
                               f"{', '.join(sorted(COMMAND_RECORDS))}")
        request_id = str(command["requestId"])
        self._producer.produce(
            self._topic,
            key=request_id.encode(),
            value=codec.encode(record_name, command),
            headers=codec.headers_for(record_name, traceparent),
            on_delivery=self._on_delivery,
        )
        self._producer.poll(0)
        return request_id

    def flush(self, timeout_s: float = 30.0) -> None:
        """Wait until every queued command is delivered; raise if any was not
        (`KafkaAccessDenied` when the cluster refused this principal)."""
        remaining = kafka_access.flush(self._producer, timeout_s)
        failures, self._failures = self._failures, []
        for failure in failures:
            kafka_access.raise_if_denied(failure, self._settings, "Write", topic=self._topic)
        if remaining:
            raise TransientError(f"{remaining} commands not delivered within {timeout_s} s")
        if failures:
            first = failures[0]
            error_class = TransientError if first.retriable() else PublishError
            raise error_class(f"{len(failures)} commands not delivered: {first.str()}")

    def __enter__(self) -> CommandPublisher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.flush()

    def _on_delivery(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self._failures.append(error)

