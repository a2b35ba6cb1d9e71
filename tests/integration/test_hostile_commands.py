"""Hostile records on the commands topic, drawn by hypothesis, against a real worker: each one
ends in the DLQ with its reason (or, when it happens to be a valid command, as a saga with an
end), the worker stays up, and the valid command sent after them completes."""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition
from harness import TopicReader, WorkerProcess, wait_until
from hostile import Hostile, hostile_records
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_worker import _tenant_command, worker  # noqa: F401 - the worker fixture

from consumer.commands import InvalidCommand, read_command
from consumer.participants.builtin.registry import add_entity
from provisioning.errors import CodecError
from provisioning.settings import Settings
from provisioning.topics import COMMAND_HEADROOM_BYTES, ReplyTopicRule, TopicLayout
from schemas import codec


class DeadLetters:
    """The DLQ's records by the (partition, offset) they came from."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self.consumer = Consumer({**settings.kafka_config(), "group.id": f"dlq-{uuid.uuid4()}",
                                  "isolation.level": "read_committed"})
        self.consumer.assign([TopicPartition(topic, p, 0)
                              for p in range(settings.topic_partitions)])
        self.reasons: dict[tuple[int, int], str] = {}

    def poll(self) -> None:
        for message in self.consumer.consume(500, timeout=0.3):
            if message.error():
                continue
            headers = dict(message.headers() or [])
            origin = (int(headers["dlq-origin-partition"]), int(headers["dlq-origin-offset"]))
            self.reasons[origin] = headers["dlq-reason"].decode()


def _valid_command(record: Hostile, settings: Settings) -> str | None:
    """The requestId when the worker's own checks take the record as a command."""
    rule = ReplyTopicRule(TopicLayout(settings.topic_prefix), settings.reply_topic_pattern)
    try:
        return read_command(record.key, record.value, settings.max_command_bytes,
                            rule).request_id
    except (CodecError, InvalidCommand):
        return None


@settings(max_examples=6, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large, HealthCheck.large_base_example])
@given(batch=st.lists(hostile_records, min_size=5, max_size=25))
def test_every_hostile_record_is_dead_lettered_or_runs_and_the_worker_goes_on(
    batch: list[Hostile], settings: Settings, topics: TopicLayout,
    worker: WorkerProcess,  # noqa: F811 - the fixture imported above
    migrated: sa.Engine,
) -> None:
    producer = Producer(settings.kafka_config())
    placed: list[tuple[Hostile, int, int]] = []
    refused: list[tuple[Hostile, str]] = []  # by the broker: the commands topic's size limit

    def delivered(err: KafkaError | None, msg: Message, record: Hostile) -> None:
        if err is None:
            placed.append((record, msg.partition(), msg.offset()))
        else:
            refused.append((record, err.name()))

    for n, record in enumerate(batch):
        producer.produce(topics.commands, key=record.key, value=record.value,
                         partition=n % settings.topic_partitions,
                         on_delivery=lambda err, msg, r=record: delivered(err, msg, r))
    # After them, on every partition, a valid command: once it ends, the worker has handled
    # everything before it.
    valid = []
    for partition in range(settings.topic_partitions):
        entity_id = f"entity-{uuid.uuid4().hex[:10]}"
        add_entity(migrated, entity_id, "Acme")
        command = _tenant_command(entity_id)
        producer.produce(topics.commands, key=command["requestId"].encode(), partition=partition,
                         value=codec.encode("ProvisionTenantRequest", command))
        valid.append(command["requestId"])
    assert producer.flush(30) == 0
    assert len(placed) + len(refused) == len(batch)
    limit = settings.max_command_bytes + COMMAND_HEADROOM_BYTES
    for record, error in refused:
        assert error == "MSG_SIZE_TOO_LARGE" and len(record.value) > settings.max_command_bytes, (
            f"{record.kind}: {len(record.value)} bytes refused with {error} (limit {limit})")

    events = TopicReader(settings, topics.events)
    events.wait_for(lambda r: all(r.terminal(i) for i in valid), 60, "the valid commands' ends")
    dlq = DeadLetters(settings, topics.commands_dlq)
    accepted = {r: _valid_command(r, settings) for r, _, _ in placed}
    expected = {(p, o) for r, p, o in placed if accepted[r] is None}
    wait_until(lambda: dlq.poll() or expected <= dlq.reasons.keys(), 30,
               "every invalid record in the DLQ")
    events.wait_for(lambda r: all(r.terminal(i) for i in accepted.values() if i), 60,
                    "an end for every record that was a valid command")

    ends = [events.terminal(i)[0].record_name for i in valid]
    assert ends == ["ProvisioningSucceeded"] * len(valid)
    for record, partition, offset in placed:
        if accepted[record] is None:
            assert dlq.reasons[(partition, offset)], f"{record.kind}: no reason given"
    ran = sum(1 for r, _, _ in placed if accepted[r] is not None)
    print(f"\nhostile: {len(placed)} records, {len(placed) - ran} dead-lettered, {ran} ran, "
          f"{len(refused)} refused by the broker for their size")
    assert worker.alive(), worker.log_text()[-3000:]
    assert "Traceback" not in worker.log_text()
    dlq.consumer.close()
    events.close()
