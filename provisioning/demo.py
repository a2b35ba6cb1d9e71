"""`provisioning demo`: one provisioning command through the real broker, shown step by step.

Until the worker runs sagas, the demo shows the first leg of the data flow: a platform service
publishes a ProvisionTenantRequest (Avro, key=requestId), and a read_committed consumer on the
commands topic reads it back and decodes it with nothing but the schemas.
"""

from __future__ import annotations

import logging
import time
import uuid

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient
from rich.console import Console
from rich.table import Table

from producers.commands import CommandPublisher
from provisioning.errors import TransientError
from provisioning.settings import Settings
from provisioning.topics import TopicLayout, create_topics
from schemas import codec

log = logging.getLogger(__name__)


def run_demo(settings: Settings, console: Console | None = None) -> int:
    console = console or Console()
    layout = TopicLayout(settings.topic_prefix)
    report = create_topics(
        AdminClient(settings.kafka_config(), logger=log),
        layout.specs(settings.topic_partitions),
        settings.topic_replication_factor,
    )
    console.print(f"topics: {len(report.created)} created, {len(report.existing)} already there")

    command = _sample_command()
    started = time.perf_counter()
    with CommandPublisher(settings) as publisher:
        publisher.publish("ProvisionTenantRequest", command)
    console.print(f"published ProvisionTenantRequest {command['requestId']} to {layout.commands}")

    message = _read_back(settings, layout.commands, command["requestId"])
    elapsed_ms = (time.perf_counter() - started) * 1000
    decoded = codec.decode_as(message.value(), "ProvisionTenantRequest")
    console.print(
        f"read it back from partition {message.partition()} offset {message.offset()} "
        f"(read_committed) in {elapsed_ms:.0f} ms, {len(message.value())} bytes"
    )
    console.print(_table(decoded.value, dict(message.headers() or [])))
    return 0


def _sample_command() -> dict:
    return {
        "requestId": str(uuid.uuid4()),
        "entityId": f"entity-{uuid.uuid4().hex[:8]}",
        "tenantName": "Acme Widgets",
        "subscriptionPlan": "BUSINESS",
        "billingInfo": {
            "accountName": "Acme Widgets Ltd",
            "billingEmail": "billing@acme.example",
            "currency": "EUR",
            "paymentMethod": "invoice",
        },
        "requestedBy": "user-demo",
        "replyTo": None,
        "requestedAt": int(time.time() * 1000),
    }


def _read_back(settings: Settings, topic: str, request_id: str, timeout_s: float = 30.0):
    """Find the command by its key, from the end offsets taken before it was published."""
    consumer = Consumer(
        {
            **settings.kafka_config(),
            "group.id": f"provisioning-demo-{uuid.uuid4().hex[:8]}",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
        },
        logger=log,
    )
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in range(settings.topic_partitions)])
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None or message.error():
                continue
            if message.key() == request_id.encode():
                return message
    finally:
        consumer.close()
    raise TransientError(f"command {request_id} not read back within {timeout_s} s")


def _table(command: dict, headers: dict[str, bytes]) -> Table:
    table = Table(title="ProvisionTenantRequest as decoded from Kafka")
    table.add_column("field")
    table.add_column("value")
    for key, value in command.items():
        table.add_row(key, str(value))
    for key, value in headers.items():
        table.add_row(f"header {key}", value.decode(errors="replace"))
    return table
