"""Restoring state partitions on the real broker, right after their topic was created: the new
partitions have no leader for a moment (seen in CI: a worker ended 100 ms after its first
assignment), and restoring waits for one, for a bounded time."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from consumer.kafka_clients import restore_consumer
from consumer.state_store import restore_partition
from provisioning.errors import TransientError
from provisioning.settings import Settings
from provisioning.topics import TopicLayout


def nothing_to_decode(value: bytes) -> None:
    pytest.fail("an empty partition has nothing to decode")


def test_partitions_of_a_topic_created_a_moment_ago_are_restored_once_they_have_a_leader(
    settings: Settings, kafka_admin: AdminClient,
) -> None:
    consumer = restore_consumer(settings)
    try:
        for round_ in range(3):  # each round a topic of its own, read the moment it exists
            topic = f"{TopicLayout(settings.topic_prefix).state}.{round_}"
            kafka_admin.create_topics([NewTopic(topic, 6, 1)])[topic].result(30)
            for partition in range(6):
                states, report = restore_partition(consumer, topic, partition, nothing_to_decode)
                assert (states, report.records) == ({}, 0)
    finally:
        consumer.close()


def test_a_partition_that_never_gets_a_leader_fails_after_the_wait(settings: Settings) -> None:
    consumer = restore_consumer(settings)
    started = time.monotonic()
    try:
        with pytest.raises(TransientError, match="reading watermarks"):
            restore_partition(consumer, f"{settings.topic_prefix}.missing-{uuid.uuid4().hex}", 0,
                              nothing_to_decode, leader_wait_s=1.5)
    finally:
        consumer.close()
    assert 1.5 <= time.monotonic() - started < 15


def test_a_committed_state_above_an_open_transaction_is_restored_once_that_one_ends(
    settings: Settings, kafka_admin: AdminClient,
) -> None:
    """The states a previous owner has just committed sit above the last stable offset until
    the commit markers are written (or, as here, until an older transaction below them ends).
    A restore that took the last stable offset for the end missed them, and their sagas were
    owned by nobody; it must read to the high watermark, waiting for that transaction."""
    from dataclasses import replace

    from confluent_kafka import Producer

    from consumer import wire
    from consumer.kafka_clients import end_offsets_consumer
    from consumer.state_store import decode_state, snapshot_headers
    from sagas import SagaState
    from schemas.examples import EXAMPLES

    topic = f"{TopicLayout(settings.topic_prefix).state}.{uuid.uuid4().hex[:6]}"
    kafka_admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
    state = replace(wire.from_record(SagaState, EXAMPLES["SagaState"]),
                    request_id=str(uuid.uuid4()))

    def transactional(name: str) -> Producer:
        producer = Producer({**settings.kafka_config(),
                             "transactional.id": f"{topic}-{name}-{uuid.uuid4().hex[:6]}"})
        producer.init_transactions(30)
        producer.begin_transaction()
        return producer

    older = transactional("older")  # still open: the last stable offset stays below it
    older.produce(topic, key=b"another", value=wire.encode(state))
    older.flush(10)
    owner = transactional("owner")
    owner.produce(topic, key=state.request_id.encode(), value=wire.encode(state),
                  headers=snapshot_headers(state))
    owner.commit_transaction(30)

    consumer, ends = restore_consumer(settings), end_offsets_consumer(settings)
    try:
        threading.Timer(2.0, older.abort_transaction).start()
        states, report = restore_partition(consumer, topic, 0, decode_state, ends=ends,
                                           timeout_s=30)
    finally:
        consumer.close()
        ends.close()
    assert list(states) == [state.request_id], report
