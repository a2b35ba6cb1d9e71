"""The client a platform service imports to ask for a provisioning and learn how it ended.

`ProvisioningClient.submit` validates a command the way the worker will, so a request the
worker would dead-letter fails in the caller's process instead, with the reason, and never
reaches Kafka. `await_outcome` follows the events topic for one requestId: it reads only the
partition that requestId lands on (the same murmur2 placement as the Java client), so waiting
costs one partition's traffic, not the whole topic's.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaException, Message, Producer, TopicPartition

from consumer.commands import RECORD_OF_WORKFLOW, InvalidCommand, to_start_command
from consumer.state_store import Parked, decode_or_skip, decode_state, restore_partition
from producers.commands import CommandPublisher
from provisioning import kafka_access
from provisioning.errors import CodecError, ConfigurationError, ProvisioningError, TransientError
from provisioning.settings import Settings
from provisioning.topics import ReplyTopicRule, TopicLayout
from sagas import SagaState, Status, payload_hash
from schemas import codec

log = logging.getLogger(__name__)

ENVELOPE_FIELDS = frozenset({"requestId", "requestedBy", "replyTo", "requestedAt"})
TERMINAL_STATUS = {
    "ProvisioningSucceeded": "COMPLETED",
    "ProvisioningFailedEvent": "FAILED",
    "ProvisioningRejected": "REJECTED",
}
SUBMIT_MARGIN_MS = 5_000
"""How far before submit() await_outcome starts reading: broker and client clocks differ."""
REMEMBERED_SUBMITS = 10_000
"""Submit times kept for await_outcome; a long-lived client must not grow without bound."""


class InvalidRequest(ProvisioningError):
    """The command would be refused by the worker; it was not published."""


class OutcomeTimeout(TransientError):
    """No terminal event for the request arrived in time; the saga may still be running."""

    def __init__(self, request_id: str, timeout_s: float, events_seen: tuple[str, ...]) -> None:
        seen = ", ".join(events_seen) if events_seen else "none"
        super().__init__(
            f"no outcome for request {request_id} within {timeout_s} s (events seen: {seen})"
        )
        self.request_id = request_id
        self.timeout_s = timeout_s
        self.events_seen = events_seen


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one run of a request ended, from its terminal event."""

    request_id: str
    status: str
    """COMPLETED, FAILED or REJECTED."""
    run: int
    resource_id: str | None = None
    """The tenant, subscription, user or resource id (COMPLETED only)."""
    reason: str | None = None
    """Human-readable cause (FAILED and REJECTED)."""
    failed_step: str | None = None
    """The step whose failure ended the saga (FAILED; None when no step failed)."""
    code: str | None = None
    """Machine-readable cause of a rejection: conflict or invalid (REJECTED only)."""
    events_seen: tuple[str, ...] = ()
    """Record names of this request's events read while waiting, terminal one last."""

    @property
    def succeeded(self) -> bool:
        return self.status == "COMPLETED"


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (`org.apache.kafka.common.utils.Utils.murmur2`) as a signed 32-bit int."""
    seed, m, r = 0x9747B28C, 0x5BD1E995, 24
    length = len(data)
    h = (seed ^ length) & 0xFFFFFFFF
    whole = length - length % 4
    for i in range(0, whole, 4):
        k = (int.from_bytes(data[i:i + 4], "little") * m) & 0xFFFFFFFF
        k ^= k >> r
        k = (k * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
    tail = data[whole:]
    for index in reversed(range(len(tail))):
        h ^= tail[index] << (8 * index)
    if tail:
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def partition_for(key: str | bytes, partitions: int) -> int:
    """The partition of a keyed record, as Java's default partitioner and librdkafka's
    `murmur2_random` choose it: toPositive(murmur2(key)) % partitions."""
    data = key.encode() if isinstance(key, str) else key
    return (murmur2(data) & 0x7FFFFFFF) % partitions


def canonical_id(request_id: str) -> str:
    """The requestId as the worker keys its events: a lower-case, hyphenated UUID.

    The worker parses the requestId and keys events with the parsed form, so an upper-case or
    brace-wrapped id would be published under one key and answered under another.
    """
    try:
        return str(uuid.UUID(str(request_id)))
    except ValueError:
        raise InvalidRequest(f"requestId {request_id!r} is not a UUID") from None


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def build_command(
    workflow_type: str,
    params: Mapping[str, Any],
    *,
    request_id: str,
    requested_by: str,
    reply_to: str | None,
    requested_at_ms: int,
) -> tuple[str, dict[str, Any]]:
    """The Avro record name and datum of a command, checked as the worker will check it.

    Raises InvalidRequest for an unknown workflow type, parameters that clash with the
    envelope, or a command that `to_start_command` or the Avro schema refuses.
    """
    record_name = RECORD_OF_WORKFLOW.get(workflow_type)
    if record_name is None:
        raise InvalidRequest(f"unknown workflow type {workflow_type!r}; expected one of "
                             f"{', '.join(sorted(RECORD_OF_WORKFLOW))}")
    clashing = ENVELOPE_FIELDS & set(params)
    if clashing:
        raise InvalidRequest(f"params must not set {', '.join(sorted(clashing))}; "
                             "pass them as submit() arguments")
    command = {**params, "requestId": request_id, "requestedBy": requested_by,
               "replyTo": reply_to, "requestedAt": requested_at_ms}
    try:
        to_start_command(record_name, command)
        codec.encode(record_name, command)  # enums and types, which the models leave to Avro
    except (InvalidCommand, CodecError) as exc:
        raise InvalidRequest(f"{workflow_type} request refused: {exc}") from None
    return record_name, command


class ProvisioningClient:
    """Submits provisioning commands and waits for their outcome on the events topic.

    Use it as a context manager, or call `close()`: commands queued with
    `wait_for_delivery=False` are delivered then.
    """

    def __init__(self, settings: Settings, producer: Producer | None = None) -> None:
        self._settings = settings
        self._events_topic = TopicLayout(settings.topic_prefix).events
        self._state_topic = TopicLayout(settings.topic_prefix).state
        self._reply_topics = ReplyTopicRule(TopicLayout(settings.topic_prefix),
                                            settings.reply_topic_pattern)
        self._publisher = CommandPublisher(settings, producer)
        self._submitted_at: OrderedDict[str, int] = OrderedDict()

    def submit(
        self,
        workflow_type: str,
        params: Mapping[str, Any],
        *,
        request_id: str | None = None,
        requested_by: str,
        reply_to: str | None = None,
        traceparent: str | None = None,
        wait_for_delivery: bool = True,
    ) -> str:
        """Publish one command; returns its requestId (a new uuid4 unless given).

        Resubmitting with the same requestId is safe: the worker runs a request once. With
        `wait_for_delivery=False` the command is only queued; call `flush()` to batch.
        """
        submitted_ms = now_ms()
        reply_topic_problem = self._reply_topics.problem(reply_to) if reply_to else None
        if reply_topic_problem is not None:
            raise InvalidRequest(f"{workflow_type} request refused: {reply_topic_problem}")
        record_name, command = build_command(
            workflow_type, params,
            request_id=str(uuid.uuid4()) if request_id is None else canonical_id(request_id),
            requested_by=requested_by, reply_to=reply_to, requested_at_ms=submitted_ms,
        )
        published_id = self._publisher.publish(record_name, command, traceparent)
        self._remember_submit(published_id, submitted_ms)
        if wait_for_delivery:
            self.flush()
        return published_id

    def flush(self, timeout_s: float = 30.0) -> None:
        """Wait until every queued command is delivered; raises PublishError or TransientError."""
        self._publisher.flush(timeout_s)

    def await_outcome(
        self, request_id: str, timeout_s: float = 60.0, *, since_ms: int | None = None
    ) -> Outcome:
        """The first terminal event of `request_id` written at or after `since_ms`.

        `since_ms` defaults to a few seconds before this client submitted the request, so an
        earlier run's result is not mistaken for this one's; for a request this client did not
        submit, the partition is read from its beginning. Raises OutcomeTimeout.
        """
        self.flush()  # a command still queued here cannot have an outcome yet
        request_id = canonical_id(request_id)
        if since_ms is None:
            submitted_ms = self._submitted_at.get(request_id)
            since_ms = 0 if submitted_ms is None else max(0, submitted_ms - SUBMIT_MARGIN_MS)
        deadline = time.monotonic() + timeout_s
        consumer = Consumer(self._reader_config(), logger=log)
        try:
            consumer.assign([self._start_position(consumer, request_id, since_ms, timeout_s)])
            outcome = self._read_until_terminal(consumer, request_id, deadline, timeout_s)
        finally:
            consumer.close()
        self._submitted_at.pop(request_id, None)
        return outcome

    def submit_and_wait(
        self,
        workflow_type: str,
        params: Mapping[str, Any],
        *,
        timeout_s: float = 60.0,
        request_id: str | None = None,
        requested_by: str,
        reply_to: str | None = None,
        traceparent: str | None = None,
    ) -> Outcome:
        """`submit` then `await_outcome`: for scripts and tools that block anyway.

        With a requestId the service already knows (the latest saga state, from the compacted
        state topic), it answers as the seed says: COMPLETED returns its outcome at once and
        sends nothing; running waits for it without sending again; FAILED sends it again (its
        next run). The same requestId with other parameters raises InvalidRequest.
        """
        if request_id is not None:
            request_id = canonical_id(request_id)
            known = self.saga_state(request_id, timeout_s)
            if known is not None:
                self._check_same_request(known, workflow_type, params, requested_by)
                if known.status is Status.COMPLETED:
                    return Outcome(request_id=request_id, status="COMPLETED", run=known.run,
                                   resource_id=known.resource_id)
                if known.is_running:
                    return self.await_outcome(request_id, timeout_s,
                                              since_ms=known.started_at)
        published_id = self.submit(workflow_type, params, request_id=request_id,
                                   requested_by=requested_by, reply_to=reply_to,
                                   traceparent=traceparent)
        return self.await_outcome(published_id, timeout_s)

    def saga_state(self, request_id: str, timeout_s: float = 60.0) -> SagaState | None:
        """The latest state of a request's saga, from the state topic (None: unknown, or
        forgotten after its idempotency window). Reads the request's partition of the state
        topic to its end: a lookup for tools, not for every request."""
        request_id = canonical_id(request_id)
        consumer = Consumer(self._reader_config(), logger=log)
        try:
            partition = partition_for(request_id, self._partition_count(consumer, timeout_s))
            states, _ = restore_partition(consumer, self._state_topic, partition, decode_state,
                                          timeout_s=timeout_s, leader_wait_s=timeout_s)
        finally:
            consumer.close()
        found = states.get(request_id)
        if isinstance(found, Parked):
            return decode_or_skip(decode_state, request_id, found.value)
        return found

    def _check_same_request(self, known: SagaState, workflow_type: str,
                            params: Mapping[str, Any], requested_by: str) -> None:
        record_name, command = build_command(workflow_type, params, request_id=known.request_id,
                                             requested_by=requested_by, reply_to=None,
                                             requested_at_ms=now_ms())
        start = to_start_command(record_name, command)
        if payload_hash(start.workflow_type, start.params) != known.payload_hash:
            raise InvalidRequest(f"requestId {known.request_id} was already used for a "
                                 "different request; use a new requestId")

    def close(self) -> None:
        """Deliver what is still queued. (Each await_outcome closes its own reader.)"""
        self.flush()

    def __enter__(self) -> ProvisioningClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- reading the events topic ------------------------------------------------------------

    def _remember_submit(self, request_id: str, submitted_ms: int) -> None:
        self._submitted_at[request_id] = submitted_ms
        self._submitted_at.move_to_end(request_id)
        while len(self._submitted_at) > REMEMBERED_SUBMITS:
            self._submitted_at.popitem(last=False)

    def _reader_config(self) -> dict[str, Any]:
        return {
            **kafka_access.client_config(self._settings),
            # Assigned, never subscribed: the group is not joined and nothing is committed.
            "group.id": "provisioning-client-unused",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
        }

    def _start_position(
        self, consumer: Consumer, request_id: str, since_ms: int, timeout_s: float
    ) -> TopicPartition:
        """The request's partition, at the first offset written at or after `since_ms`."""
        partition = partition_for(request_id, self._partition_count(consumer, timeout_s))
        topic = self._events_topic
        try:
            # The end first: a record written between the two calls is then not skipped.
            _, end = consumer.get_watermark_offsets(TopicPartition(topic, partition),
                                                    timeout=timeout_s)
            found = consumer.offsets_for_times([TopicPartition(topic, partition, since_ms)],
                                               timeout=timeout_s)[0]
        except KafkaException as exc:
            raise TransientError(f"locating {topic} [{partition}] at {since_ms}: {exc}") from exc
        offset = found.offset if found.offset >= 0 else end
        return TopicPartition(topic, partition, offset)

    def _partition_count(self, consumer: Consumer, timeout_s: float) -> int:
        try:
            metadata = consumer.list_topics(self._events_topic, timeout=timeout_s)
        except KafkaException as exc:
            raise TransientError(f"reading metadata of {self._events_topic}: {exc}") from exc
        topic = metadata.topics.get(self._events_topic)
        if topic is not None:
            kafka_access.raise_if_denied(topic.error, self._settings, "Describe",
                                         topic=self._events_topic)
        if topic is None or topic.error is not None or not topic.partitions:
            raise ConfigurationError(f"events topic {self._events_topic} does not exist; "
                                     "create it with `provisioning topics create`")
        return len(topic.partitions)

    def _read_until_terminal(
        self, consumer: Consumer, request_id: str, deadline: float, timeout_s: float
    ) -> Outcome:
        key = request_id.encode()
        seen: list[str] = []
        while (remaining := deadline - time.monotonic()) > 0:
            for message in consumer.consume(num_messages=500, timeout=min(remaining, 0.5)):
                kafka_access.raise_if_denied(message.error(), self._settings, "Read",
                                             topic=self._events_topic,
                                             group=self._reader_config()["group.id"])
                decoded = _decode_for_key(message, key)
                if decoded is None:
                    continue
                seen.append(decoded.record_name)
                if decoded.record_name in TERMINAL_STATUS:
                    return _outcome(request_id, decoded, tuple(seen))
        raise OutcomeTimeout(request_id, timeout_s, tuple(seen))


def _decode_for_key(message: Message, key: bytes) -> codec.Decoded | None:
    """The decoded event if `message` is one of this request's; None for anything else."""
    if message.error() is not None:
        log.warning("error reading the events topic: %s", message.error())
        return None
    if message.key() != key or message.value() is None:
        return None
    try:
        return codec.decode(message.value())
    except CodecError as exc:
        log.warning("undecodable event skipped at partition %d offset %d: %s",
                    message.partition(), message.offset(), exc)
        return None


def _outcome(request_id: str, decoded: codec.Decoded, seen: tuple[str, ...]) -> Outcome:
    value = decoded.value
    return Outcome(
        request_id=request_id,
        status=TERMINAL_STATUS[decoded.record_name],
        run=value["run"],
        resource_id=value.get("resourceId"),
        reason=value.get("reason"),
        failed_step=value.get("failedStep"),
        code=value.get("code"),
        events_seen=seen,
    )
