"""Restoring state partitions on the real broker, right after their topic was created: the new
partitions have no leader for a moment (seen in CI: a worker ended 100 ms after its first
assignment), and restoring waits for one, for a bounded time."""

from __future__ import annotations

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
