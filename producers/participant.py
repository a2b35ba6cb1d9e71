"""Becoming a saga participant over Kafka: what another service imports to do saga steps.

The worker routes a step to a Kafka participant by publishing a `StepRequest` (key =
requestId) on `provisioning.step-requests.<participant>`, inside its transaction. A
`StepParticipant` reads that topic in its consumer group, runs the handler registered for the
step (or for its compensation) and publishes a `StepReply` to the request's `replyTopic`, keyed
by requestId with the Java client's partitioner, so the reply lands on the partition of the
worker that owns the saga.

    participant = StepParticipant(settings, "entity-management")

    @participant.step("create-tenant")
    def create_tenant(request: StepRequest) -> dict[str, str]:
        return {"tenantId": tenants.create(request.params["entityId"],
                                           idempotency_key=request.idempotency_key)}

    @participant.compensation("create-tenant")
    def delete_tenant(request: StepRequest) -> None:
        tenants.delete_made_by(request.idempotency_key)

    participant.install_signal_handlers()
    participant.run()
    participant.close()

A handler's return value is the step's output (SUCCEEDED); `PermanentStepFailure` fails the
step for good (the saga compensates); any other exception is a transient failure that the
worker retries with a new attempt, according to the step's retry policy.

Delivery is at least once. Offsets are committed only after every reply of a batch was
delivered, so a crash in between delivers the requests again and their handlers run again
(possibly in another member of the group). Repeats of a request that already got a final
answer (SUCCEEDED or PERMANENT_FAILURE) are answered from an in-memory cache without calling
the handler, but that cache is per process and bounded: handlers must make their own side
effects idempotent with `request.idempotency_key` (`<requestId>:<run>:<step>`, the same for
every attempt of the step; execution and compensation share it).

Handlers run one by one on the polling thread. A handler (or a whole batch of them) must
finish within `max.poll.interval.ms` (`max_poll_interval_ms`, 300 s by default), or the member
leaves the group and its requests go to another one; lower `poll_batch` for slow handlers.

Logs name the request id, step, action and attempt, never the parameters, which may hold
personal data.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType, TracebackType
from typing import Any

from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from producers.commands import producer_config
from provisioning import kafka_access
from provisioning.errors import CodecError, ProvisioningError
from provisioning.settings import Settings
from provisioning.topics import TopicLayout
from schemas import codec

log = logging.getLogger(__name__)

EXECUTE, COMPENSATE = "EXECUTE", "COMPENSATE"
SUCCEEDED, TRANSIENT_FAILURE, PERMANENT_FAILURE = (
    "SUCCEEDED", "TRANSIENT_FAILURE", "PERMANENT_FAILURE"
)
MAX_REASON = 1000
"""Longest failure reason put in a reply."""
FLUSH_TIMEOUT_S = 30.0
RETRY_DELAY_S = 1.0
"""Pause before reading a batch again whose replies were not delivered."""


class PermanentStepFailure(ProvisioningError):
    """Raised by a handler: the step cannot succeed; the reply is PERMANENT_FAILURE with
    `str(exc)` as its reason, and the saga compensates instead of retrying."""


@dataclass(frozen=True)
class StepRequest:
    """One decoded StepRequest, as handlers receive it."""

    request_id: str
    run: int
    workflow_type: str
    tenant_id: str | None
    step: str
    action: str
    """EXECUTE or COMPENSATE."""
    attempt: int
    idempotency_key: str
    """`<requestId>:<run>:<step>`: the same for every attempt; key side effects with it."""
    params: Mapping[str, str]
    deadline_ms: int | None
    """When the worker stops waiting for this attempt (epoch ms); None: no deadline."""
    reply_topic: str
    occurred_at: int


@dataclass(frozen=True, slots=True)
class ParticipantCounts:
    """What the participant did so far; for metrics and tests."""

    handled: int
    """Requests answered with a reply, duplicates and failures included (a reply that could
    not be delivered counts too; its request is read and answered again)."""
    duplicates: int
    """Answered from the cache of final results, without calling a handler."""
    failures: int
    """Answered with TRANSIENT_FAILURE or PERMANENT_FAILURE by a handler call (or for want of
    a handler); cached repeats are not counted again."""
    expired: int = 0
    """Not answered: their deadline had passed when they were read."""
    undecodable: int = 0
    """Records skipped because they are not a decodable StepRequest."""


StepHandler = Callable[[StepRequest], Mapping[str, Any] | None]
CompensationHandler = Callable[[StepRequest], Any]


@dataclass(frozen=True, slots=True)
class _Result:
    outcome: str
    output: Mapping[str, str] = field(default_factory=dict)
    reason: str | None = None

    @property
    def final(self) -> bool:
        return self.outcome != TRANSIENT_FAILURE


class StepParticipant:
    """Answers the StepRequests of participant `name` in consumer group `group_id`.

    `group_id` defaults to `provisioning-participant-<name>`; the members of one group share
    the requests. `dedup_size` bounds the cache of final results (per idempotency key and
    action); `poll_batch` is the most requests handled between two commits.
    """

    def __init__(
        self,
        settings: Settings,
        name: str,
        *,
        group_id: str | None = None,
        dedup_size: int = 100_000,
        poll_batch: int = 100,
        max_poll_interval_ms: int = 300_000,
    ) -> None:
        if dedup_size < 0 or poll_batch < 1:
            raise ValueError("dedup_size must be >= 0 and poll_batch >= 1")
        self.name = name
        self._settings = settings
        self.topic = TopicLayout(settings.topic_prefix).step_requests(name)
        self.group_id = group_id or f"provisioning-participant-{name}"
        self._dedup_size = dedup_size
        self._poll_batch = poll_batch
        self._handlers: dict[tuple[str, str], Callable[[StepRequest], Any]] = {}
        self._results: OrderedDict[tuple[str, str], _Result] = OrderedDict()
        self._counts = {"handled": 0, "duplicates": 0, "failures": 0, "expired": 0,
                        "undecodable": 0}
        self._delivery_errors: list[tuple[KafkaError, str]] = []
        self._stopping = threading.Event()
        self._closed = False
        self._producer = Producer(producer_config(settings), logger=log)
        self._consumer = Consumer({
            **kafka_access.client_config(settings),
            "group.id": self.group_id,
            # The worker writes requests inside transactions: never act on an aborted one.
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "max.poll.interval.ms": max_poll_interval_ms,
        }, logger=log)
        self._consumer.subscribe([self.topic])

    # --- registration ---------------------------------------------------------------------------

    def step(self, name: str) -> Callable[[StepHandler], StepHandler]:
        """Decorator: `handler(request)` executes step `name`; what it returns (a mapping,
        values made strings; None for no output) is the step's output."""
        return self._register(name, EXECUTE)

    def compensation(self, name: str) -> Callable[[CompensationHandler], CompensationHandler]:
        """Decorator: `handler(request)` undoes step `name` (the step's own name, e.g.
        `create-tenant`); its return value is ignored."""
        return self._register(name, COMPENSATE)

    def _register(self, step: str, action: str) -> Callable[[Any], Any]:
        def register(handler: Callable[[StepRequest], Any]) -> Callable[[StepRequest], Any]:
            if (step, action) in self._handlers:
                raise ValueError(f"participant {self.name} already has a handler for {action} "
                                 f"of step {step}")
            self._handlers[(step, action)] = handler
            return handler
        return register

    # --- running --------------------------------------------------------------------------------

    @property
    def counts(self) -> ParticipantCounts:
        return ParticipantCounts(**self._counts)

    def poll_once(self, timeout_s: float = 1.0) -> int:
        """Handle one batch of requests, deliver the replies, then commit; returns how many
        requests were answered.

        If a reply cannot be delivered nothing is committed: the batch's partitions are rewound
        so its requests come again (repeats of final results are answered from the cache).
        """
        messages = self._consumer.consume(num_messages=self._poll_batch, timeout=timeout_s)
        answered = 0
        positions: dict[int, tuple[int, int]] = {}  # partition -> (first offset, next offset)
        for message in messages:
            if message.error() is not None:
                # Requests this principal may not read: its ACLs are wrong; stop, saying so.
                kafka_access.raise_if_denied(message.error(), self._settings, "Read",
                                             topic=self.topic, group=self.group_id)
                log.warning("error reading %s: %s", self.topic, message.error())
                continue
            first = positions.get(message.partition(), (message.offset(), 0))[0]
            positions[message.partition()] = (first, message.offset() + 1)
            answered += self._process(message)
        if positions:
            self._finish_batch(positions)
        return answered

    def run(self, stop: threading.Event | None = None) -> None:
        """Poll until `stop` is set (or a signal installed by `install_signal_handlers`
        arrives); the current batch is finished first. Does not close the participant."""
        while not (self._stopping.is_set() or (stop is not None and stop.is_set())):
            self.poll_once(timeout_s=0.5)

    def install_signal_handlers(self) -> None:
        """SIGTERM and SIGINT stop `run()` after the current batch (main thread only)."""
        def request_stop(signum: int, frame: object) -> None:
            log.info("participant %s stopping on signal %d", self.name, signum)
            self._stopping.set()

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)

    def close(self) -> None:
        """Deliver pending replies and leave the group, so the partitions move on at once.
        Call it after `run()` returned, on the same thread."""
        if self._closed:
            return
        self._closed = True
        self._stopping.set()
        try:
            kafka_access.flush(self._producer, FLUSH_TIMEOUT_S)
        finally:
            self._consumer.close()

    def __enter__(self) -> StepParticipant:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # --- one request ----------------------------------------------------------------------------

    def _process(self, message: Message) -> int:
        """Answer one record; returns 1 if a reply was produced, else 0."""
        request = self._decode(message)
        if request is None:
            self._count("undecodable")
            return 0
        if request.deadline_ms is not None and request.deadline_ms < _now_ms():
            self._count("expired")
            log.info("expired step request skipped: request %s step %s %s attempt %d "
                     "(the worker stopped waiting for it)", request.request_id, request.step,
                     request.action, request.attempt)
            return 0
        key = (request.idempotency_key, request.action)
        result = self._results.get(key)
        if result is not None:
            self._results.move_to_end(key)
            self._count("duplicates")
            log.info("repeated step request answered from cache: request %s step %s %s "
                     "attempt %d: %s", request.request_id, request.step, request.action,
                     request.attempt, result.outcome)
        else:
            result = self._call(request)
            if result.outcome != SUCCEEDED:
                self._count("failures")
            if result.final:
                self._remember(key, result)
        self._reply(request, result, message)
        self._count("handled")
        return 1

    def _decode(self, message: Message) -> StepRequest | None:
        try:
            value = codec.decode_as(message.value() or b"", "StepRequest").value
        except CodecError as exc:
            log.warning("undecodable record skipped: %s [%d] offset %d: %s", message.topic(),
                        message.partition(), message.offset(), exc)
            return None
        return StepRequest(
            request_id=value["requestId"],
            run=value["run"],
            workflow_type=value["workflowType"],
            tenant_id=value.get("tenantId"),
            step=value["step"],
            action=value["action"],
            attempt=value["attempt"],
            idempotency_key=value["idempotencyKey"],
            params=MappingProxyType(dict(value.get("params") or {})),
            deadline_ms=value.get("deadline"),
            reply_topic=value["replyTopic"],
            occurred_at=value["occurredAt"],
        )

    def _call(self, request: StepRequest) -> _Result:
        handler = self._handlers.get((request.step, request.action))
        if handler is None:
            reason = (f"participant {self.name} has no handler for {request.action} of step "
                      f"{request.step}")
            log.warning("%s (request %s attempt %d)", reason, request.request_id,
                        request.attempt)
            return _Result(PERMANENT_FAILURE, {}, reason)
        try:
            returned = handler(request)
            output = _output(returned) if request.action == EXECUTE else {}
        except PermanentStepFailure as exc:
            log.warning("step failed permanently: request %s step %s %s attempt %d: %s",
                        request.request_id, request.step, request.action, request.attempt, exc)
            return _Result(PERMANENT_FAILURE, {}, _truncate(str(exc)))
        except Exception as exc:  # noqa: BLE001 - any other failure is worth a retry
            log.warning("step failed, the worker may retry: request %s step %s %s attempt %d",
                        request.request_id, request.step, request.action, request.attempt,
                        exc_info=True)
            return _Result(TRANSIENT_FAILURE, {}, _truncate(f"{type(exc).__name__}: {exc}"))
        log.info("step done: request %s step %s %s attempt %d", request.request_id,
                 request.step, request.action, request.attempt)
        return _Result(SUCCEEDED, output)

    def _remember(self, key: tuple[str, str], result: _Result) -> None:
        if self._dedup_size == 0:
            return
        self._results[key] = result
        self._results.move_to_end(key)
        while len(self._results) > self._dedup_size:
            self._results.popitem(last=False)

    def _reply(self, request: StepRequest, result: _Result, message: Message) -> None:
        reply = {
            "requestId": request.request_id,
            "run": request.run,
            "step": request.step,
            "action": request.action,
            "attempt": request.attempt,  # this attempt's, also for an answer from the cache
            "idempotencyKey": request.idempotency_key,
            "outcome": result.outcome,
            "output": dict(result.output),
            "reason": result.reason,
            "occurredAt": _now_ms(),
            "participant": self.name,
        }
        headers = dict(message.headers() or [])
        traceparent = headers.get("traceparent")
        self._produce(request.reply_topic, request.request_id.encode(),
                      codec.encode("StepReply", reply),
                      codec.headers_for("StepReply", traceparent.decode("ascii", "replace")
                                        if traceparent else None))

    def _produce(self, topic: str, key: bytes, value: bytes,
                 headers: list[tuple[str, bytes]]) -> None:
        while True:
            try:
                self._producer.produce(topic, key=key, value=value, headers=headers,
                                       on_delivery=self._on_delivery)
                self._producer.poll(0)
                return
            except BufferError:
                self._producer.poll(0.05)  # the local queue is full: let deliveries drain
            except KafkaException as exc:  # e.g. a replyTopic the client knows is missing
                self._delivery_errors.append((exc.args[0], topic))
                return

    def _on_delivery(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self._delivery_errors.append((error, message.topic()))

    # --- offsets --------------------------------------------------------------------------------

    def _finish_batch(self, positions: dict[int, tuple[int, int]]) -> None:
        """Commit the batch once its replies are delivered; otherwise rewind it."""
        remaining = kafka_access.flush(self._producer, FLUSH_TIMEOUT_S)
        errors, self._delivery_errors = self._delivery_errors, []
        for error, topic in errors:
            # Replies this principal may not write would be refused on every replay.
            kafka_access.raise_if_denied(error, self._settings, "Write", topic=topic)
        errors = [error for error, _ in errors]
        if remaining or errors:
            detail = errors[0].str() if errors else f"{remaining} still queued"
            log.error("replies of a batch not delivered (%s); not committing, the %d "
                      "partition(s) are rewound and their requests will be answered again",
                      detail, len(positions))
            self._rewind({p: first for p, (first, _) in positions.items()})
            self._stopping.wait(RETRY_DELAY_S)  # not a tight loop; a stop signal cuts it short
            return
        offsets = [TopicPartition(self.topic, p, after) for p, (_, after) in positions.items()]
        try:
            self._consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            log.warning("commit failed (the requests will be delivered again): %s", exc)

    def _rewind(self, firsts: dict[int, int]) -> None:
        for partition, offset in firsts.items():
            try:
                self._consumer.seek(TopicPartition(self.topic, partition, offset))
            except KafkaException as exc:  # no longer assigned: its next owner reads it
                log.warning("could not rewind %s [%d]: %s", self.topic, partition, exc)

    def _count(self, what: str) -> None:
        self._counts[what] += 1


def _output(returned: Mapping[str, Any] | None) -> dict[str, str]:
    if returned is None:
        return {}
    if not isinstance(returned, Mapping):
        raise TypeError(f"a step handler must return a mapping or None, not "
                        f"{type(returned).__name__}")
    return {str(name): str(value) for name, value in returned.items()}


def _truncate(reason: str) -> str:
    return reason if len(reason) <= MAX_REASON else reason[:MAX_REASON - 1] + "…"


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
