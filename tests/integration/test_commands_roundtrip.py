"""A command goes through the real broker: published, consumed read_committed, decoded."""

from __future__ import annotations

import time
import uuid

from confluent_kafka import Consumer, Producer, TopicPartition

from producers.client import partition_for
from producers.commands import CommandPublisher
from provisioning.settings import Settings
from provisioning.topics import TopicLayout
from schemas import codec
from schemas.examples import EXAMPLES


def _consumer(settings: Settings, group_id: str) -> Consumer:
    return Consumer(
        {
            **settings.kafka_config(),
            "group.id": group_id,
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )


def _read_all(consumer: Consumer, topic: str, partitions: int, timeout_s: float = 30) -> list:
    """Everything in the topic up to its end offsets (read_committed: the last stable offset).

    Positions, not message offsets, tell when the end is reached: transaction markers take
    offsets of their own and are never delivered.
    """
    assigned = [TopicPartition(topic, p, 0) for p in range(partitions)]
    consumer.assign(assigned)
    ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in range(partitions)}
    messages = []
    deadline = time.monotonic() + timeout_s
    while True:
        message = consumer.poll(0.2)
        if message is not None:
            assert message.error() is None, message.error()
            messages.append(message)
            continue
        positions = {tp.partition: tp.offset for tp in consumer.position(assigned)}
        if all(ends[p] == 0 or positions[p] >= ends[p] for p in range(partitions)):
            return messages
        assert time.monotonic() < deadline, f"stalled before the end: {positions} of {ends}"


def _tenant_command() -> dict:
    return {**EXAMPLES["ProvisionTenantRequest"], "requestId": str(uuid.uuid4())}


def test_published_command_is_consumed_and_decoded(
    settings: Settings, topics: TopicLayout, group_id: str
) -> None:
    commands = [_tenant_command() for _ in range(20)]
    with CommandPublisher(settings) as publisher:
        for command in commands:
            publisher.publish("ProvisionTenantRequest", command, traceparent="00-" + "a" * 32
                              + "-" + "b" * 16 + "-01")

    consumer = _consumer(settings, group_id)
    try:
        messages = _read_all(consumer, topics.commands, settings.topic_partitions)
    finally:
        consumer.close()

    assert len(messages) == len(commands)
    by_id = {c["requestId"]: c for c in commands}
    for message in messages:
        decoded = codec.decode_as(message.value(), "ProvisionTenantRequest")
        headers = dict(message.headers())
        assert message.key().decode() == decoded.value["requestId"]
        assert decoded.value == by_id[decoded.value["requestId"]]
        assert headers["event-type"] == b"ProvisionTenantRequest"
        assert headers["content-type"] == codec.CONTENT_TYPE.encode()
        assert headers["traceparent"].startswith(b"00-")
        # Same partition as a Java producer would choose for this requestId.
        assert message.partition() == partition_for(message.key(), settings.topic_partitions)


def test_read_committed_sees_committed_transactions_only(
    settings: Settings, topics: TopicLayout, group_id: str
) -> None:
    producer = Producer({**settings.kafka_config(), "transactional.id": f"tx-{group_id}",
                         "partitioner": "murmur2_random"})
    producer.init_transactions(30)
    committed, aborted = _tenant_command(), _tenant_command()
    for command, finish in ((aborted, producer.abort_transaction),
                            (committed, producer.commit_transaction)):
        producer.begin_transaction()
        producer.produce(
            topics.commands,
            key=command["requestId"].encode(),
            value=codec.encode("ProvisionTenantRequest", command),
            headers=codec.headers_for("ProvisionTenantRequest"),
        )
        finish(30)

    consumer = _consumer(settings, group_id)
    try:
        messages = _read_all(consumer, topics.commands, settings.topic_partitions)
    finally:
        consumer.close()

    seen = [codec.decode(m.value()).value["requestId"] for m in messages]
    assert seen == [committed["requestId"]]
