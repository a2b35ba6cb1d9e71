"""Reacting to provisioning events, at least once, for downstream services.

`EventSubscriber` reads the events topic in the caller's consumer group. An offset is stored
only after every handler of its event returned, and stored offsets are committed after each
batch, so a crash or a failing handler leads to the event being delivered again, never lost.
Handlers must therefore be idempotent (`requestId` plus `sequence` identify an event).

A failing handler does not stop the subscriber: the partition is rewound to the failed event
and paused for a backoff while the other partitions go on, and `consume()` keeps being called,
so the member never exceeds `max.poll.interval.ms` because of a retry.

`workflow_types` narrows the subscription to some workflows by each record's `workflow-type`
header: the records of other workflows are skipped without being decoded.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, get_args

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from tenacity import RetryCallState, wait_exponential
from tenacity.wait import wait_base

from provisioning import kafka_access
from provisioning.errors import CodecError, ProvisioningError
from provisioning.settings import Settings
from provisioning.topics import TopicLayout
from sagas import events as saga_events
from schemas import codec

log = logging.getLogger(__name__)

EVENT_RECORDS = frozenset(cls.__name__ for cls in get_args(saga_events.Event))
"""The records published on the events topic (the others go to commands, state or replyTo)."""
DEFAULT_RETRY_WAIT = wait_exponential(multiplier=0.5, min=0.5, max=30)
BATCH_SIZE = 500
HANDLED, SKIPPED, FAILED = "handled", "skipped", "failed"


class UnknownEventName(ProvisioningError, ValueError):
    """A handler was registered for a name that never appears on the events topic."""


class InvalidWorkflowFilter(ProvisioningError, ValueError):
    """`workflow_types` names no workflow (empty, or not non-empty strings)."""


@dataclass(frozen=True, slots=True)
class Event:
    """One decoded event, as handlers receive it."""

    record_name: str
    request_id: str
    value: dict[str, Any]
    partition: int
    offset: int
    headers: dict[str, bytes]
    timestamp_ms: int | None = None


@dataclass(frozen=True, slots=True)
class SubscriberCounts:
    """What the subscriber did so far; for metrics and tests."""

    handled: int
    skipped: int
    undecodable: int
    handler_failures: int
    filtered: int = 0
    """Events of workflows outside `workflow_types`, skipped (by header: never decoded)."""


Handler = Callable[[Event], Any]


@dataclass(slots=True)
class _Backoff:
    """A partition rewound to a failed event, paused until `resume_at`."""

    offset: int
    attempts: int
    resume_at: float
    paused: bool = True


class EventSubscriber:
    """Calls registered handlers for the events of the events topic, in consumer group `group_id`.

    `from_beginning` only matters for a group without committed offsets: read the topic from
    its start (True) or only what is published from now on (False).

    `workflow_types` (e.g. `{"tenant"}`) passes only those workflows' events to the handlers,
    chosen by the `workflow-type` header without decoding the others. A record without the
    header (written before the header existed) is decoded and chosen by its `workflowType`.
    The rejection of a command whose workflow could not be read says "unknown": it reaches
    only a subscriber that names "unknown" or has no filter.
    """

    def __init__(
        self,
        settings: Settings,
        group_id: str,
        *,
        from_beginning: bool = False,
        retry_wait: wait_base = DEFAULT_RETRY_WAIT,
        consumer_config: Mapping[str, Any] | None = None,
        workflow_types: Iterable[str] | None = None,
    ) -> None:
        self._workflow_types = _workflow_filter(workflow_types)
        self._settings = settings
        self._group_id = group_id
        self._topic = TopicLayout(settings.topic_prefix).events
        self._handlers: dict[str, list[Handler]] = {}
        self._retry_wait = retry_wait
        self._backoffs: dict[int, _Backoff] = {}
        self._stored_since_commit = False
        self._counts = {"handled": 0, "skipped": 0, "undecodable": 0, "handler_failures": 0,
                        "filtered": 0}
        self._consumer = Consumer(
            _consumer_config(settings, group_id, from_beginning, consumer_config or {}),
            logger=log,
        )
        self._consumer.subscribe([self._topic], on_revoke=self._on_revoke,
                                 on_lost=self._on_lost)
        self._closed = False

    def on(self, event_name: str, handler: Handler) -> Handler:
        """Call `handler(event)` for every `event_name` event; returns the handler.

        Several handlers of one event run in registration order; if one raises, all of them see
        the event again on the retry.
        """
        _check_event_name(event_name)
        self._handlers.setdefault(event_name, []).append(handler)
        return handler

    @property
    def counts(self) -> SubscriberCounts:
        return SubscriberCounts(**self._counts)

    def run(
        self, stop: threading.Event | None = None, *, max_events: int | None = None
    ) -> int:
        """Poll until `stop` is set or `max_events` events were handled; returns how many were.

        Does not close the subscriber: use it as a context manager or call `close()`.
        """
        handled = 0
        while not (stop is not None and stop.is_set()):
            if max_events is not None and handled >= max_events:
                break
            limit = BATCH_SIZE if max_events is None else min(BATCH_SIZE, max_events - handled)
            handled += self._poll(timeout_s=0.5, limit=limit)
        return handled

    def poll_once(self, timeout_s: float = 1.0) -> int:
        """Handle one batch of events; returns how many were handled."""
        return self._poll(timeout_s, BATCH_SIZE)

    def close(self) -> None:
        """Commit what was handled and leave the group, so its partitions move on at once."""
        if self._closed:
            return
        self._closed = True
        try:
            self._commit(asynchronous=False, force=True)
        finally:
            self._consumer.close()

    def __enter__(self) -> EventSubscriber:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- one batch ------------------------------------------------------------------------------

    def _poll(self, timeout_s: float, limit: int) -> int:
        self._resume_due_partitions()
        messages = self._consumer.consume(num_messages=limit, timeout=timeout_s)
        handled = 0
        rewound: set[int] = set()  # later messages of a rewound partition come again
        for message in messages:
            if message.error() is not None:
                kafka_access.raise_if_denied(message.error(), self._settings, "Read",
                                             topic=self._topic, group=self._group_id)
                log.warning("error reading the events topic: %s", message.error())
            elif message.partition() not in rewound:
                result = self._process(message)
                if result == HANDLED:
                    handled += 1
                elif result == FAILED:
                    rewound.add(message.partition())
        self._commit(asynchronous=True)
        return handled

    def _process(self, message: Message) -> str:
        """Run the handlers of one message; its offset is stored unless one of them failed."""
        by_header = self._wanted_by_header(message)
        if by_header is False:  # another workflow: not even decoded
            self._count("filtered")
            self._store(message)
            return SKIPPED
        event = self._decode(message)
        if (event is not None and by_header is None and self._workflow_types is not None
                and event.value.get("workflowType") not in self._workflow_types):
            self._count("filtered")
            self._store(message)
            return SKIPPED
        handlers = self._handlers.get(event.record_name, []) if event else []
        if not handlers:
            self._count("skipped" if event else "undecodable")
            self._store(message)
            return SKIPPED
        try:
            for handler in handlers:
                handler(event)
        except Exception as exc:  # noqa: BLE001 - any handler failure is retried
            self._retry_later(message, event, exc)
            return FAILED
        self._backoffs.pop(message.partition(), None)
        self._count("handled")
        self._store(message)
        return HANDLED

    def _wanted_by_header(self, message: Message) -> bool | None:
        """Whether the record's workflow is subscribed to, by its header; None when there is
        no filter or the record has no `workflow-type` header."""
        if self._workflow_types is None:
            return None
        for name, value in message.headers() or []:
            if name == codec.WORKFLOW_TYPE_HEADER and value is not None:
                return value.decode("utf-8", "replace") in self._workflow_types
        return None

    def _decode(self, message: Message) -> Event | None:
        try:
            decoded = codec.decode(message.value())
        except CodecError as exc:
            log.warning("undecodable record skipped: %s [%d] offset %d: %s", message.topic(),
                        message.partition(), message.offset(), exc)
            return None
        key = message.key()
        timestamp_type, timestamp_ms = message.timestamp()
        return Event(
            record_name=decoded.record_name,
            request_id=str(decoded.value.get("requestId") or (key or b"").decode(errors="replace")),
            value=decoded.value,
            partition=message.partition(),
            offset=message.offset(),
            headers=dict(message.headers() or []),
            timestamp_ms=timestamp_ms if timestamp_ms >= 0 else None,
        )

    # --- retries --------------------------------------------------------------------------------

    def _retry_later(self, message: Message, event: Event, error: Exception) -> None:
        """Rewind the partition to the failed event and pause it for the backoff."""
        partition, offset = message.partition(), message.offset()
        previous = self._backoffs.get(partition)
        attempts = previous.attempts + 1 if previous and previous.offset == offset else 1
        delay = self._delay(attempts)
        self._backoffs[partition] = _Backoff(offset, attempts, time.monotonic() + delay)
        self._count("handler_failures")
        log.warning("handler failed for %s of request %s (partition %d offset %d, attempt %d); "
                    "retrying in %.1f s: %s: %s", event.record_name, event.request_id, partition,
                    offset, attempts, delay, type(error).__name__, error)
        position = TopicPartition(self._topic, partition, offset)
        self._consumer.seek(position)
        self._consumer.pause([position])

    def _delay(self, attempts: int) -> float:
        state = RetryCallState(None, None, (), {})
        state.attempt_number = attempts
        return float(self._retry_wait(state))

    def _resume_due_partitions(self) -> None:
        now = time.monotonic()
        due = [p for p, b in self._backoffs.items() if b.paused and b.resume_at <= now]
        for partition in due:
            self._backoffs[partition].paused = False
        if due:
            self._consumer.resume([TopicPartition(self._topic, p) for p in due])

    # --- offsets --------------------------------------------------------------------------------

    def _store(self, message: Message) -> None:
        self._consumer.store_offsets(message=message)
        self._stored_since_commit = True

    def _commit(self, asynchronous: bool, force: bool = False) -> None:
        """Commit the stored offsets; `force` also when nothing was stored since the last
        commit, in case that asynchronous commit failed."""
        if not (self._stored_since_commit or force):
            return
        try:
            self._consumer.commit(asynchronous=asynchronous)
            self._stored_since_commit = False
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError._NO_OFFSET:
                log.warning("commit failed (the events will be delivered again): %s", exc)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Commit before the partitions move, so their next owner does not repeat our work."""
        self._commit(asynchronous=False, force=True)
        self._forget(partitions)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._forget(partitions)

    def _forget(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self._backoffs.pop(tp.partition, None)

    def _count(self, what: str) -> None:
        self._counts[what] += 1


def _consumer_config(
    settings: Settings, group_id: str, from_beginning: bool, overrides: Mapping[str, Any]
) -> dict[str, Any]:
    return {
        **kafka_access.client_config(settings),
        "group.id": group_id,
        "isolation.level": "read_committed",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest" if from_beginning else "latest",
        "on_commit": _report_commit,
        **overrides,
    }


def _report_commit(error: KafkaError | None, partitions: list[TopicPartition]) -> None:
    """Asynchronous commits fail silently otherwise; the events would then come again."""
    if error is not None and error.code() != KafkaError._NO_OFFSET:
        log.warning("commit failed (the events will be delivered again): %s", error)


def _workflow_filter(workflow_types: Iterable[str] | None) -> frozenset[str] | None:
    if workflow_types is None:
        return None
    if isinstance(workflow_types, str):  # "tenant" would otherwise become {"t", "e", ...}
        workflow_types = [workflow_types]
    chosen = frozenset(workflow_types)
    if not chosen or not all(isinstance(w, str) and w for w in chosen):
        raise InvalidWorkflowFilter(f"workflow_types must name at least one workflow, as non-empty "
                         f"strings (got {sorted(map(repr, chosen))}); None subscribes to all")
    return chosen


def _check_event_name(event_name: str) -> None:
    if event_name in EVENT_RECORDS:
        return
    if event_name in codec.record_names():
        raise UnknownEventName(
            f"{event_name} is not published on the events topic (it is a command, reply or "
            f"state record); events are: {', '.join(sorted(EVENT_RECORDS))}"
        )
    raise UnknownEventName(
        f"no event named {event_name!r}; events are: {', '.join(sorted(EVENT_RECORDS))}"
    )

