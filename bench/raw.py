"""The raw ceiling: confluent-kafka alone, with the engine's delivery guarantees.

One transactional producer writes M messages of the engine's average size in transactions of
the engine's typical size, while a read_committed consumer reads them; messages/s is M over
the time until the consumer has read the last one. No saga logic, no encoding beyond bytes:
what the broker and the client allow on this machine.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from bench.engine import delete_topics
from provisioning.settings import Settings
from provisioning.topics import TopicSpec, create_topics


def run_raw(base: Settings, messages: int, size: int = 400,
            per_transaction: int = 2000) -> dict[str, Any]:
    topic = f"bench.raw.{uuid.uuid4().hex[:8]}"
    admin = AdminClient(base.kafka_config())
    create_topics(admin, [TopicSpec(topic, base.topic_partitions, {})])
    try:
        return _measure(base, topic, messages, size, per_transaction)
    finally:
        delete_topics(admin, [topic])


def _measure(base: Settings, topic: str, messages: int, size: int,
             per_transaction: int) -> dict[str, Any]:
    partitions = base.topic_partitions
    read = 0
    done = threading.Event()

    def consume() -> None:
        nonlocal read
        consumer = Consumer({**base.kafka_config(), "group.id": f"raw-{uuid.uuid4().hex[:6]}",
                             "isolation.level": "read_committed", "enable.auto.commit": False,
                             "fetch.wait.max.ms": 10})
        consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        while read < messages:
            read += sum(1 for m in consumer.consume(10_000, 0.1) if not m.error())
        consumer.close()
        done.set()

    reader = threading.Thread(target=consume, daemon=True)
    reader.start()
    producer = Producer({**base.kafka_config(), "transactional.id": f"raw-{uuid.uuid4().hex}",
                         "enable.idempotence": True, "acks": "all", "linger.ms": 5,
                         "compression.type": "lz4", "partitioner": "murmur2_random"})
    producer.init_transactions(30)
    payload = os.urandom(size)
    started = time.perf_counter()
    for first in range(0, messages, per_transaction):
        producer.begin_transaction()
        for i in range(first, min(messages, first + per_transaction)):
            while True:
                try:
                    producer.produce(topic, key=str(i).encode(), value=payload)
                    break
                except BufferError:
                    producer.poll(0.01)
        producer.commit_transaction(30)
    produced_s = time.perf_counter() - started
    done.wait(300)
    elapsed = time.perf_counter() - started
    return {"messages": messages, "message_bytes": size, "per_transaction": per_transaction,
            "produce_s": round(produced_s, 2), "seconds": round(elapsed, 2),
            "messages_per_s": round(messages / elapsed, 1), "read": read}
