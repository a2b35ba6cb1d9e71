"""Dead-lettered commands: list them, look at one, fix it and send it again.

The worker dead-letters a command it cannot run (undecodable bytes, an invalid command, a key
that is not its requestId, an operator action for an unknown saga), keeping the original bytes
and adding `dlq-*` headers with the reason. An operator reads them here and, after a fix,
redrives one: the command is decoded, the operator's changes applied, the result validated as
the worker would (a still-broken command is refused and nothing is sent), and published to the
commands topic keyed by its requestId, with headers naming where it came from and who sent it.
"""

from __future__ import annotations

import copy
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    Message,
    Producer,
    TopicPartition,
)

from consumer.commands import InvalidCommand, read_command, unflatten
from consumer.kafka_clients import watermarks
from producers.commands import COMMAND_RECORDS, command_producer_config
from provisioning import kafka_access
from provisioning.errors import CodecError, ProvisioningError, TransientError
from provisioning.settings import Settings
from provisioning.topics import ReplyTopicRule, TopicLayout
from schemas import codec

DLQ_READER_GROUP = "provisioning-dlq-reader"  # assigned, never joined: Describe suffices

# Reads are interactive (CLI, API): a DLQ partition without a leader yet (a topic created a
# moment ago) is waited for briefly, not for the worker's full minute.
LEADER_WAIT_S = 10.0


class DeadLetterNotFound(ProvisioningError):
    """No dead-lettered record at that partition and offset."""


class NotRedriven(ProvisioningError):
    """The record cannot be sent again (undecodable, or still invalid after the changes)."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    partition: int
    offset: int
    key: str | None
    timestamp_ms: int | None
    reason: str | None
    error_class: str | None
    origin: str | None  # topic:partition:offset it was read from
    record_name: str | None  # None: the bytes do not decode
    command: dict[str, Any] | None
    value: bytes

    @property
    def ref(self) -> str:
        return f"{self.partition}:{self.offset}"


def read_dead_letters(settings: Settings, *, limit: int = 100,
                      since_ms: int | None = None) -> list[DeadLetter]:
    """The oldest `limit` dead letters (from `since_ms` when given), in partition order."""
    topic = TopicLayout(settings.topic_prefix).commands_dlq
    consumer = _reader(settings)
    try:
        partitions = _partitions(consumer, topic, settings)
        starts = [TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions]
        if since_ms is not None:
            starts = consumer.offsets_for_times(
                [TopicPartition(topic, p, since_ms) for p in partitions], timeout=10)
        ends = {p: watermarks(consumer, TopicPartition(topic, p), LEADER_WAIT_S)[1]
                for p in partitions}
        letters: list[DeadLetter] = []
        live = [tp for tp in starts if tp.offset != -1 and ends[tp.partition] > 0]
        if not live:
            return []
        consumer.assign(live)
        deadline = time.monotonic() + 30
        while len(letters) < limit and _behind(consumer, live, ends):
            if time.monotonic() > deadline:
                raise TransientError(f"reading {topic} did not reach its end in 30 s")
            for message in _batch(consumer, settings, topic):
                letters.append(_letter(message))
        return sorted(letters, key=lambda x: (x.partition, x.offset))[:limit]
    finally:
        consumer.close()


def find(settings: Settings, ref: str) -> DeadLetter:
    """The dead letter at `<partition>:<offset>`."""
    try:
        partition, offset = (int(part) for part in ref.split(":"))
    except ValueError:
        raise DeadLetterNotFound(f"{ref!r} is not <partition>:<offset>") from None
    topic = TopicLayout(settings.topic_prefix).commands_dlq
    consumer = _reader(settings)
    try:
        if partition not in _partitions(consumer, topic, settings):
            raise DeadLetterNotFound(f"{topic} has no partition {partition}")
        low, high = watermarks(consumer, TopicPartition(topic, partition), LEADER_WAIT_S)
        if not low <= offset < high:
            raise DeadLetterNotFound(f"no dead letter at {ref} (partition {partition} holds "
                                     f"offsets {low}..{high - 1})")
        consumer.assign([TopicPartition(topic, partition, offset)])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            for message in _batch(consumer, settings, topic):
                if message.offset() == offset:
                    return _letter(message)
                if message.offset() > offset:
                    break
        raise DeadLetterNotFound(f"no dead letter at {ref}")
    finally:
        consumer.close()


def redrive(settings: Settings, letter: DeadLetter, *, changes: Mapping[str, str] | None = None,
            operator: str) -> str:
    """Fix the command with `changes` (dotted names), validate it, send it again; its id."""
    if letter.command is None or letter.record_name is None:
        raise NotRedriven(f"{letter.ref}: the bytes are not a command this service can decode "
                          "(they cannot be fixed here; the producer must send it again)")
    command = apply_changes(letter.record_name, letter.command, changes or {})
    value = checked_value(settings, letter.ref, letter.record_name, command)
    request_id = str(command["requestId"])
    topic = TopicLayout(settings.topic_prefix)
    headers = codec.headers_for(letter.record_name) + [
        ("redriven-from", f"{topic.commands_dlq}:{letter.ref}".encode()),
        ("redriven-by", operator.encode()),
    ]
    failures: list[KafkaError] = []
    producer = Producer(command_producer_config(settings))
    producer.produce(topic.commands, key=request_id.encode(), value=value, headers=headers,
                     on_delivery=lambda error, _: failures.append(error) if error else None)
    remaining = kafka_access.flush(producer, 30)
    for failure in failures:
        kafka_access.raise_if_denied(failure, settings, "Write", topic=topic.commands)
    if remaining or failures:
        raise TransientError(f"{letter.ref} was not sent: "
                             f"{failures[0].str() if failures else 'no delivery report'}")
    return request_id


def find_and_redrive(settings: Settings, ref: str, changes: Mapping[str, str],
                     operator: str) -> str:
    """`redrive` the dead letter at `<partition>:<offset>` (the API's and the console's
    redrive); its requestId. Raises DeadLetterNotFound, NotRedriven, TransientError."""
    return redrive(settings, find(settings, ref), changes=changes, operator=operator)


def checked_value(settings: Settings, ref: str, record_name: str,
                  command: Mapping[str, Any]) -> bytes:
    """The command's bytes, if the worker would take them: the worker's own check of a
    commands record (`read_command`: schema, fields, key, reply topic, size) decides, so a
    redriven command is held to exactly what the worker holds every command to."""
    try:
        value = codec.encode(record_name, command)
    except CodecError as exc:
        raise NotRedriven(f"{ref} does not fit its schema: {exc}") from None
    rule = ReplyTopicRule(TopicLayout(settings.topic_prefix), settings.reply_topic_pattern)
    try:
        read_command(str(command["requestId"]).encode(), value, settings.max_command_bytes, rule)
    except (InvalidCommand, CodecError) as exc:
        raise NotRedriven(f"{ref} is still not valid: {exc}") from None
    return value


def apply_changes(record_name: str, command: Mapping[str, Any], changes: Mapping[str, str]
                  ) -> dict[str, Any]:
    """`command` with an operator's fixes (dotted names for nested fields) applied."""
    fields = {f["name"] for f in codec.schema(record_name).plain["fields"]}
    fixed = copy.deepcopy(command)
    for name, nested in unflatten(dict(changes)).items():
        if name not in fields:
            raise NotRedriven(f"{record_name} has no field {name!r}; its fields are "
                              f"{', '.join(sorted(fields))}")
        if isinstance(nested, dict) and isinstance(fixed.get(name), dict):
            fixed[name] = {**fixed[name], **nested}
        else:
            fixed[name] = nested
    try:
        fixed["requestId"] = str(uuid.UUID(str(fixed["requestId"])))
    except ValueError:
        raise NotRedriven(f"requestId {fixed['requestId']!r} is not a UUID") from None
    return fixed


def _letter(message: Message) -> DeadLetter:
    headers = {k: v.decode("utf-8", "replace") for k, v in (message.headers() or []) if v}
    record_name, command = None, None
    try:
        decoded = codec.decode(message.value() or b"")
        if decoded.record_name in COMMAND_RECORDS:
            record_name, command = decoded.record_name, dict(decoded.value)
    except CodecError:
        pass
    origin = None
    if "dlq-origin-topic" in headers:
        origin = (f"{headers['dlq-origin-topic']}:{headers.get('dlq-origin-partition')}:"
                  f"{headers.get('dlq-origin-offset')}")
    timestamp = message.timestamp()[1]
    return DeadLetter(
        partition=message.partition(), offset=message.offset(),
        key=message.key().decode("utf-8", "replace") if message.key() else None,
        timestamp_ms=timestamp if timestamp > 0 else None, reason=headers.get("dlq-reason"),
        error_class=headers.get("dlq-error-class"), origin=origin, record_name=record_name,
        command=command, value=message.value() or b"")


def _reader(settings: Settings) -> Consumer:
    return Consumer({**kafka_access.client_config(settings), "group.id": DLQ_READER_GROUP,
                     "isolation.level": "read_committed", "enable.auto.commit": False,
                     "fetch.wait.max.ms": 10})


def _partitions(consumer: Consumer, topic: str, settings: Settings) -> list[int]:
    metadata = consumer.list_topics(topic, timeout=10).topics.get(topic)
    if metadata is not None:
        kafka_access.raise_if_denied(metadata.error, settings, "Describe", topic=topic)
    if metadata is None or metadata.error is not None:
        raise ProvisioningError(f"{topic} does not exist; run `provisioning topics create`")
    return sorted(metadata.partitions)


def _batch(consumer: Consumer, settings: Settings, topic: str) -> list[Message]:
    first = consumer.poll(0.2)
    if first is None:
        return []
    rest = consumer.consume(1000, 0)
    for message in (first, *rest):
        kafka_access.raise_if_denied(message.error(), settings, "Read", topic=topic,
                                     group=DLQ_READER_GROUP)
    return [m for m in [first, *rest] if m.error() is None]


def _behind(consumer: Consumer, assigned: list[TopicPartition], ends: dict[int, int]) -> bool:
    # position(), not the last offset read: the worker's transaction markers take offsets too.
    return any(tp.offset < ends[tp.partition] for tp in consumer.position(assigned))
