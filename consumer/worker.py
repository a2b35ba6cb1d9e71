"""The worker: commands and step replies in, sagas driven through `decide`, events and state out.

One loop on one thread owns the consumer, the producer and the saga states; participants run
on a thread pool (`StepRunner`). Each turn of the loop:

1. takes up the commit in flight if it has ended (releasing the side effects held for it)
   and begins the next transaction;
2. polls a batch of commands and step replies and applies each to its saga;
3. applies the outcomes of steps that finished since the last turn;
4. fires due timers (retry backoff, attempt timeouts, deadlines, expiry of terminal sagas);
5. starts a commit when none is in flight and the open transaction is due: older than the
   commit interval, or the input caught up with (see `consumer/checkpoint.py` for the commit
   sequence; it runs while the next turns go on);
6. pauses the command partitions while too many sagas are in flight, resumes them after.

Partition ownership follows the consumer group: on assignment the partition's saga states are
restored from the state topic and their in-flight work resumed; on revocation the open
transaction is committed and the partition's state, timers and late results are dropped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import signal
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from consumer import wire
from consumer.checkpoint import Checkpoint, ProducerFailed, ProducerFenced, TransactionAborted
from consumer.commands import InvalidCommand, read_command
from consumer.dlq import dead_letter, readable_request_id
from consumer.kafka_clients import (
    end_offsets_consumer,
    group_consumer,
    init_transactions,
    probe_consumer_config,
    restore_consumer,
    transactional_producer,
    while_broker_unavailable,
)
from consumer.observe import SagaObserver
from consumer.participants.answers import clean_outcome, clean_text
from consumer.participants.base import Action, Outcome, Participant, StepCall, StepOutcome
from consumer.reply_topics import ReplyTopics
from consumer.routing import Routing
from consumer.state_store import (
    TERMINAL,
    Parked,
    StateStore,
    decode_state,
    restore_partition,
    snapshot_headers,
)
from consumer.steps import FinishedStep, StepRunner
from consumer.timers import TimerQueue
from consumer.unrestored import UnrestoredPartitions
from consumer.watchdog import PartitionWatchdog
from provisioning import metrics
from provisioning.errors import CodecError, ConfigurationError, ProvisioningError, TransientError
from provisioning.kafka_access import KafkaAccessDenied, client_config, denial, raise_if_denied
from provisioning.replication import TRANSACTION_LOG, check_replication
from provisioning.settings import Settings
from provisioning.topics import ReplyTopicRule, TopicLayout, verify_copartitioning
from sagas import (
    CompensateStep,
    CompensationResult,
    EmitEvent,
    ExecuteStep,
    PersistState,
    ProvisioningFailed,
    ProvisioningRejected,
    Reply,
    SagaState,
    SetTimer,
    StartCommand,
    Status,
    StepResult,
    TimerFired,
    decide,
    idempotency_key,
    resume,
)
from sagas import Outcome as SagaOutcome
from sagas.outcomes import UNRECORDABLE
from schemas import codec

log = logging.getLogger(__name__)
# Fenced this often within the window: another live process has this transactional id.
MAX_FENCINGS = 3
FENCING_WINDOW_S = 60
# How long a restore waits for a state partition's leader before the partition is left paused
# and tried again on a later turn (`consumer/unrestored.py`): at assignment (a topic created a
# moment ago gets its leaders within a second or two) and on each later try.
ASSIGN_LEADER_WAIT_S = 10.0
RETRY_LEADER_WAIT_S = 5.0


@dataclass(frozen=True, slots=True)
class WorkerOptions:
    group_id: str = "provisioning-worker"
    instance_id: str = socket.gethostname()
    commit_interval_ms: int = 100  # the longest a transaction stays open
    # Held steps wait for the commit, so every step of a saga costs one commit: when the
    # worker has caught up with its input it commits early, after at least this long, instead
    # of waiting for the interval (low latency when idle, large transactions under load).
    min_commit_interval_ms: int = 5
    max_in_flight: int = 10_000
    step_concurrency: int = 32
    # Steps handed to the thread pool and not finished (running or queued) at which the worker
    # stops starting sagas, and starts them again below 80 % of it; None: twice
    # step_concurrency, so a step waits for a thread about as long as one step takes.
    max_queued_steps: int | None = None
    idempotency_window_ms: int = 7 * 24 * 3600 * 1000
    poll_batch: int = 500
    stuck_after_ms: int = 15 * 60 * 1000  # a running saga unchanged this long counts as stuck
    # Static group membership (`group.instance.id` = instance id): a worker restarted under
    # the same id (a StatefulSet pod) gets its partitions back at once, without a rebalance;
    # a worker that leaves for good is only replaced after the session timeout.
    static_membership: bool = False
    # The largest record one saga's transition may write (key, value and headers), under the
    # producer's message.max.bytes (1,000,000) and the broker's 1 MiB default: a larger one
    # would fail the whole transaction, so it fails its saga's step instead.
    max_record_bytes: int = 900_000
    # An assigned partition with unread records and no progress for this long, while flow
    # control is not holding it back, is stalled: readiness false, a warning, a metric.
    # Steps of in-process participants start as soon as they are decided, not after the
    # commit of the state that asked for them: a saga's steps then share transactions.
    eager_local_steps: bool = True
    stall_after_s: float = 60.0
    watchdog_interval_s: float = 5.0
    # A turn of the poll loop longer than this means a call that never returns (the longest
    # legitimate ones: a commit retried 3 x 30 s, a restore up to 120 s): /healthz fails.
    stuck_turn_s: float = 300.0

    @property
    def queued_steps_limit(self) -> int:
        return self.max_queued_steps or 2 * self.step_concurrency


# Built once: `isinstance(x, A | B)` makes the union anew on every call.
STEP_EFFECTS = (ExecuteStep, CompensateStep)


@dataclass(frozen=True, slots=True)
class _Expire:
    request_id: str


class SagaFault(ProvisioningError):
    """One saga's input could not be decided, or its records not written: that saga's problem
    (its command is dead-lettered, its step fails), never the transaction's."""


@dataclass(slots=True)
class _Staged:
    """One transition's records, encoded and checked, waiting to be produced."""

    after: SagaState | None
    records: list[tuple[str, dict[str, Any]]] = dataclasses.field(default_factory=list)
    snapshot: SagaState | None = None  # encoded at commit, if still the saga's latest
    held: list[Any] = dataclasses.field(default_factory=list)  # after the commit
    eager: list[Any] = dataclasses.field(default_factory=list)  # in-process steps, at once
    timers: list[SetTimer] = dataclasses.field(default_factory=list)  # set at once
    events: list[Any] = dataclasses.field(default_factory=list)




class Worker:
    def __init__(
        self,
        settings: Settings,
        route: Callable[[StepCall], Participant],
        options: WorkerOptions = WorkerOptions(),
        clock: Callable[[], int] = lambda: int(time.time() * 1000),
        routing: Routing | None = None,
    ) -> None:
        self.settings = settings
        self.options = options
        # Which steps go out as StepRequests on Kafka, and the workflows with their overrides.
        self.routing = routing or Routing.builtin()
        self.topics = TopicLayout(settings.topic_prefix)
        self.clock = clock
        self.store = StateStore(decode=decode_state)
        self.timers = TimerQueue()
        self.steps = StepRunner(route, options.step_concurrency)
        self._generation: dict[int, int] = {}
        self._unrestored = UnrestoredPartitions()
        self._paused = False
        self._stopping = False
        self._admin = AdminClient(client_config(settings), logger=log)
        # A write to one of the service's own topics that the cluster refused: the worker's
        # ACLs are wrong, and replaying the transaction would only be refused again.
        self._refused: KafkaAccessDenied | None = None
        self.reply_topics = ReplyTopics(
            ReplyTopicRule(self.topics, settings.reply_topic_pattern), self._admin)
        self._rewind_pending = False
        self._fencings: list[float] = []  # when the producer was fenced (monotonic)
        self._started = False
        self._abandoned: list[Producer] = []  # producers whose call never returned
        # State records of this transaction, the last per saga (see checkpoint step 1).
        self._snapshots: dict[tuple[int, str], SagaState] = {}
        self.observer = SagaObserver(self.routing.registry)
        self.ready = False  # set once the first assignment is restored
        membership = ({"group.instance.id": f"{options.group_id}-{options.instance_id}"}
                      if options.static_membership else {})
        self.consumer: Consumer = group_consumer(settings, options.group_id, **membership)
        self._transactional_id = f"{options.group_id}-{options.instance_id}"
        self.producer: Producer = transactional_producer(settings, self._transactional_id)
        self.checkpoint = Checkpoint(self.producer, self.consumer, on_delivery=self._delivered)
        self._turn_started = time.monotonic()  # read by liveness() on the ops thread
        self._restorer = restore_consumer(settings)
        self._ends = end_offsets_consumer(settings)
        self.watchdog = PartitionWatchdog(
            self.consumer, probe_consumer_config(settings, options.group_id),
            held_back=lambda topic: self._paused and topic == self.topics.commands,
            stall_after_s=options.stall_after_s, interval_s=options.watchdog_interval_s)
        self._export_gauges()

    # --- lifecycle ---------------------------------------------------------------------------

    def run(self) -> None:
        """Run until `stop()` (or SIGTERM/SIGINT), then finish the transaction and close; the
        consumers are closed whatever stops the worker, even a refused login before the loop
        (the process's exit must not find them running: see `provisioning.cli.run`)."""
        try:
            self._start()
            self._loop()
        finally:
            self.close()

    def _start(self) -> None:
        self._check_topics()
        self._init_transactions()
        # After init_transactions: on a fresh cluster the transaction log exists from then on.
        check_replication(self._admin, self.settings,
                          [TRANSACTION_LOG, self.topics.state, self.topics.events])
        self.consumer.subscribe(
            [self.topics.commands, self.topics.step_replies],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        log.info("worker started", extra={"group": self.options.group_id,
                                          "instance": self.options.instance_id})
        self.watchdog.start()
        self._started = True

    def _loop(self) -> None:
        try:
            while not self._stopping:
                self.turn()
            self._commit()
        except BaseException:
            # Said now: closing may fail too, and its error would hide this one.
            log.exception("worker stopping on an error")
            raise

    def install_signal_handlers(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: self.stop())

    def stop(self) -> None:
        self._stopping = True

    def close(self) -> None:
        self.watchdog.stop()  # before the consumer it reads from is closed
        self.steps.shutdown(wait=False)
        with contextlib.suppress(KafkaException, RuntimeError):
            self.consumer.close()
        self._restorer.close()
        self._ends.close()
        # A producer lost to a fencing raises from flush (through the binding's log callback,
        # as a SystemError): nothing of its transaction may be delivered anyway. Not
        # `producer.close()`: it aborts the transaction and flushes with no timeout (a worker
        # once never stopped in it); the process's exit ends the producer instead.
        with contextlib.suppress(KafkaException, SystemError):
            self.producer.flush(10)

    # --- one turn of the loop ------------------------------------------------------------------

    def turn(self) -> None:
        self._turn_started = time.monotonic()
        if self._refused is not None:
            raise self._refused
        if self._rewind_pending:
            self._rewind_or_wait()
            return
        self._restore_due()
        try:
            self._settle_commit(wait=False)
            if not self.checkpoint.open:
                self.checkpoint.begin()
            messages = self._next_batch(self._poll_timeout())
            for message in messages:
                self._handle_message(message)
            self._drain_finished()
            self._fire_timers()
            caught_up = len(messages) < self.options.poll_batch
            self._settle_commit(wait=False)
            if self.checkpoint.committing is None and self._commit_due(caught_up):
                self._start_commit()
            self._apply_flow_control()
        except (ProducerFenced, ProducerFailed) as exc:
            self._producer_lost(exc)
        except TransactionAborted as exc:
            log.warning("transaction aborted, rewinding", extra={"reason": str(exc)})
            self._rewind_or_wait()

    def _producer_lost(self, exc: ProducerFenced | ProducerFailed) -> None:
        """Renew the producer (and rewind), unless it was lost again and again: then another
        live process uses this transactional id (the same --instance-id; each fences the
        other), and this one stops. A single loss is what a broker failover does to a
        transaction that outlived transaction.timeout.ms (seen in the replicated chaos run)."""
        now = time.monotonic()
        self._fencings = [t for t in self._fencings if now - t < FENCING_WINDOW_S] + [now]
        if len(self._fencings) >= MAX_FENCINGS:
            log.error("producer fenced %d times within %d s: another process uses this "
                      "transactional id; stopping", len(self._fencings), FENCING_WINDOW_S,
                      extra={"reason": str(exc)})
            self.checkpoint.abort()  # nothing of its transaction may be committed by this one
            self._stopping = True
            return
        log.warning("producer fenced, renewing it and rewinding", extra={"reason": str(exc)})
        self._rewind_or_wait()

    def _drain_finished(self) -> None:
        """The outcomes of steps, again and again while more arrive: an eager in-process step
        answers within microseconds, so a saga can go through several steps in this turn and
        write one snapshot for all of them (measured on the no-op bench: 17 records per saga
        when each step waited for the next turn). Bounded, like the records polled, and by the
        commit interval spent in this turn: a turn, and so its transaction, must stay far from
        transaction.timeout.ms even on a starved CPU. Not by the transaction's age: that
        counts from the start of the commit in flight, and a commit that took 300-600 ms (a
        busy broker) left every outcome waiting for it, the commands held back behind them by
        flow control (the half-load bench's p99 of 1-1.6 s, its first seconds)."""
        budget = 4 * self.options.poll_batch
        until = time.monotonic() + self.options.commit_interval_ms / 1000
        while budget > 0 and time.monotonic() < until:
            finished = self.steps.finished(limit=min(budget, self.options.poll_batch))
            if not finished:
                return
            budget -= len(finished)
            for step in finished:
                self._handle_finished(step)

    def _next_batch(self, timeout_s: float) -> list[Message]:
        """Up to `poll_batch` records, returning as soon as one is there: consume() alone
        would wait for a full batch or the whole timeout (measured: up to 100 ms added to a
        command's start on an idle worker)."""
        steps_running = self.steps.running > 0
        first = self.consumer.poll(0 if steps_running else timeout_s)
        if first is None:
            if steps_running:
                # Waiting for a step's outcome instead: it ends the wait at once (the poll
                # would have slept its whole timeout), and the record that arrives meanwhile
                # is read on the next turn.
                self.steps.wait_for_any(timeout_s)
            return []
        return [first, *self.consumer.consume(self.options.poll_batch - 1, 0)]

    def _commit_due(self, caught_up: bool) -> bool:
        age_ms = self.checkpoint.age_s() * 1000
        if age_ms >= self.options.commit_interval_ms:
            return True
        waiting = bool(self.checkpoint.held) or bool(self._snapshots)
        return caught_up and waiting and age_ms >= self.options.min_commit_interval_ms

    def _poll_timeout(self) -> float:
        if self.steps.running or self.checkpoint.transitions or self.checkpoint.committing:
            # A step or the commit in flight may end any moment; it is seen on the next turn.
            return 0.002
        next_fire = self.timers.next_fire_at()
        if next_fire is not None:
            return min(0.1, max(0.0, (next_fire - self.clock()) / 1000))
        return 0.1

    # --- inputs ---------------------------------------------------------------------------------

    def _handle_message(self, message: Message) -> None:
        if message.error():
            raise_if_denied(message.error(), self.settings, "Read", topic=message.topic(),
                            group=self.options.group_id)
            log.warning("consume error", extra={"error": str(message.error())})
            return
        partition = message.partition()
        if not self.store.owns(partition):
            return
        if message.topic() == self.topics.commands:
            self._handle_command(message)
        else:
            self._handle_reply(message)
        self.checkpoint.consumed(message.topic(), partition, message.offset())

    def _handle_command(self, message: Message) -> None:
        answer_to: tuple[str, str] | None = None  # who waits for a reply to this command
        try:
            command = read_command(message.key(), message.value() or b"",
                                   self.settings.max_command_bytes, self.reply_topics.rule)
            if isinstance(command, StartCommand) and command.reply_to is not None:
                answer_to = (command.request_id, command.reply_to)
            if not isinstance(command, StartCommand) and \
                    self.store.get(message.partition(), command.request_id) is None:
                action = type(command).__name__.removeprefix("Operator").lower()
                raise InvalidCommand(
                    f"no saga {command.request_id} to {action} "
                    "(unknown, or expired after its idempotency window)")
            trace_parent = _header(message, "traceparent")
            if trace_parent and isinstance(command, StartCommand):
                command = dataclasses.replace(command, trace_parent=trace_parent)
            self._apply(message.partition(), command.request_id, command)
        except (CodecError, InvalidCommand, SagaFault) as exc:
            self._dead_letter(message, exc, getattr(exc, "answer_to", None) or answer_to)

    def _handle_reply(self, message: Message) -> None:
        try:
            reply = codec.decode_as(message.value() or b"", "StepReply").value
        except CodecError as exc:
            self._drop_reply("undecodable", message, str(exc))
            return
        problem = self._reply_problem(message.partition(), reply)
        if problem is not None:
            self._drop_reply(problem, message, f"step {reply['step']} attempt {reply['attempt']}")
            return
        self._apply_answer(message.partition(), reply["requestId"], _reply_input(reply))

    def _reply_problem(self, partition: int, reply: dict[str, Any]) -> str | None:
        """Why a step reply is not the answer its saga waits for, or None when it is: only an
        attempt sent to a Kafka participant and still unanswered may be answered, under its own
        idempotency key and by the participant it was sent to."""
        state = self.store.get(partition, reply["requestId"])
        if state is None:
            return "unknown_saga"
        expected = Status.COMPENSATING if reply["action"] == "COMPENSATE" else Status.IN_PROGRESS
        if not (state.status is expected and state.attempt_in_flight
                and state.run == reply["run"] and state.current_step == reply["step"]
                and state.current_attempt == reply["attempt"]):
            return "not_awaited"
        route = self.routing.route_for(state.workflow_type, reply["step"])
        if route.kind != "kafka":
            return "not_remote"
        if reply["idempotencyKey"] != idempotency_key(state.request_id, state.run, reply["step"]):
            return "wrong_idempotency_key"
        participant = reply.get("participant")
        if participant is not None and participant != route.target:
            return "wrong_participant"
        return None

    def _drop_reply(self, reason: str, message: Message, detail: str) -> None:
        metrics.REJECTED_REPLIES.labels(reason).inc()
        log.warning("step reply dropped", extra={
            "reason": reason, "detail": clean_text(detail, 300), "partition": message.partition(),
            "offset": message.offset()})

    def _handle_finished(self, finished: FinishedStep) -> None:
        if self._generation.get(finished.partition) != finished.generation:
            return  # the partition was revoked since the step started: its new owner redoes it
        call = finished.call
        self._apply_answer(finished.partition, call.request_id, _answer(
            call.request_id, call.run, call.step, call.attempt, call.action, finished.outcome))

    def _fire_timers(self) -> None:
        now = self.clock()
        for partition, payload in self.timers.due(now):
            if not self.store.owns(partition):
                continue
            if isinstance(payload, _Expire):
                self._expire(partition, payload.request_id, now)
            elif self.store.parked(partition, payload.request_id):
                # A finished saga ignores every timer (`decide`): its attempt timeouts, set
                # while it ran, are dropped without decoding it.
                continue
            else:  # the SetTimer itself was kept: most never reach a running saga
                self._apply_or_drop(partition, payload.request_id, TimerFired(
                    request_id=payload.request_id, run=payload.run, kind=payload.kind,
                    step=payload.step, attempt=payload.attempt))

    # --- transitions -------------------------------------------------------------------------
    #
    # One saga's input is decided and its records encoded and checked (`_stage`) before any of
    # them is produced (`_perform`). Whatever goes wrong in between is that saga's fault
    # (`SagaFault`), never the transaction's: a command is dead-lettered, a participant's answer
    # is replaced by a permanent failure that says why (the saga compensates), anything else is
    # dropped and counted. The transaction carries on with everyone else's work; only broker
    # faults abort it.

    def _apply(self, partition: int, request_id: str, saga_input: Any) -> None:
        """Decide, stage and perform one input; raises `SagaFault` with nothing changed."""
        state = self.store.get(partition, request_id)
        now = self.clock()
        try:
            new_state, effects = decide(state, saga_input, now, registry=self.routing.registry)
            staged = self._stage(partition, request_id, state, effects)
        except SagaFault:
            raise
        except Exception as exc:  # noqa: BLE001 - one saga's input, never the worker
            log.exception("deciding a saga's input failed", extra={"request_id": request_id})
            raise SagaFault(f"{type(exc).__name__} while deciding: {exc}") from exc
        self._perform(partition, request_id, staged)
        if new_state is not None and new_state is not state:
            self._watch_expiry(partition, new_state)

    def _apply_answer(self, partition: int, request_id: str,
                      answer: StepResult | CompensationResult) -> None:
        """A participant's answer; one that cannot be recorded fails the attempt for good."""
        try:
            self._apply(partition, request_id, answer)
        except SagaFault as exc:
            self._apply_or_drop(partition, request_id, _unrecordable(answer, exc))

    def _apply_or_drop(self, partition: int, request_id: str, saga_input: Any) -> None:
        try:
            self._apply(partition, request_id, saga_input)
        except SagaFault as exc:
            metrics.SAGA_FAULTS.labels(type(saga_input).__name__).inc()
            log.error("saga input dropped: its records cannot be written", extra={
                "request_id": request_id, "input": type(saga_input).__name__,
                "reason": clean_text(str(exc), 500)})

    def _stage(self, partition: int, request_id: str, before: SagaState | None,
               effects: tuple[Any, ...]) -> _Staged:
        """Every record of one transition, encoded and within the limits, and what to hold."""
        # The new snapshot, if the state changed, is the last effect (`sagas/effects.py`).
        last = effects[-1] if effects else None
        after = last.state if isinstance(last, PersistState) else None
        saga = after or before
        trace_parent = saga.trace_parent if saga is not None else None
        staged = _Staged(after=after)
        for effect in effects:  # the most frequent kinds first (every step: two of each)
            if isinstance(effect, EmitEvent):
                staged.events.append(effect.event)
                staged.records.append(self._event_record(request_id, effect.event, trace_parent))
            elif isinstance(effect, SetTimer):
                staged.timers.append(effect)
            elif isinstance(effect, PersistState):
                # Written at commit: only the saga's last state of the transaction matters,
                # encoded then, once per saga and transaction (a saga often moves several
                # times in one). Every text in it went through an event of this saga first;
                # only its size is its own, checked here (when its texts changed: the
                # state before was checked with the same ones).
                if before is None or _texts_changed(before, effect.state):
                    self._check_state_size(effect.state)
                staged.snapshot = effect.state
            elif isinstance(effect, STEP_EFFECTS):
                route = self.routing.route_for(effect.workflow_type, effect.step)
                if route.kind == "kafka":
                    # In this transaction: the participant sees the request only if the state
                    # that asked for it commits, and its reply comes back on step-replies.
                    staged.records.append(
                        self._step_request_record(effect, route.target, trace_parent))
                elif route.kind == "builtin" and self.options.eager_local_steps:
                    # In-process and idempotent by its key: it need not wait for the commit
                    # of the state that asked for it (the rule and its cost: checkpoint.py).
                    staged.eager.append(effect)
                else:
                    staged.held.append(effect)
            elif isinstance(effect, Reply):
                reply = self._reply_record(effect)
                if reply is not None:
                    staged.records.append(reply)
        return staged

    def _perform(self, partition: int, request_id: str, staged: _Staged) -> None:
        for topic, record in staged.records:
            self.checkpoint.produce(topic, record)
        if staged.after is not None and staged.snapshot is not None:
            self._snapshots[(partition, request_id)] = staged.snapshot
            self.store.put(partition, staged.after)
        for effect in staged.held:
            self.checkpoint.hold(partition, effect)
        for timer in staged.timers:
            self.timers.set(timer.fire_at, partition, timer)  # a TimerFired when it fires
        for effect in staged.eager:
            self._start_step(partition, effect)
        self.checkpoint.transitions += 1
        try:
            self.observer.transition(staged.events, staged.after)
        except Exception:  # noqa: BLE001 - what operators see must not stop the work
            log.exception("observing a transition failed", extra={"request_id": request_id})

    def _record(self, topic: str, key: str, obj: Any, partition: int | None = None,
                headers: list[tuple[str, bytes]] | None = None,
                headers_size: int | None = None) -> tuple[str, dict[str, Any]]:
        """`obj` as a record for `topic`; `SagaFault` if it cannot be encoded or is too large.
        `headers_size`: the bytes `headers` count for (worked out here when not given)."""
        name = type(obj).__name__
        try:
            value = wire.encode(obj)
        except CodecError as exc:
            raise SagaFault(f"its {name} cannot be encoded: {exc}") from exc
        if headers is None:
            headers, headers_size = _plain_headers(name, None)
        elif headers_size is None:
            headers_size = headers_bytes(headers)
        raw_key = key.encode()
        record: dict[str, Any] = {"key": raw_key, "value": value, "headers": headers}
        if partition is not None:
            record["partition"] = partition
        self._check_size(name, len(raw_key) + len(value) + headers_size)
        return topic, record

    def _event_record(self, request_id: str, event: Any,
                      trace_parent: str | None) -> tuple[str, dict[str, Any]]:
        """`event` as a record of the events topic. Its `workflow-type` header is the event's
        `workflowType`, so subscribers filter by workflow without decoding: "unknown" for the
        rejection of a command whose workflow could not be read (filtered out by any
        workflow filter, like the field)."""
        headers, size = _plain_headers(type(event).__name__, event.workflow_type)
        if trace_parent:
            traced = ("traceparent", trace_parent.encode("ascii", "replace"))
            headers, size = [*headers, traced], size + headers_bytes([traced])
        return self._record(self.topics.events, request_id, event, headers=headers,
                            headers_size=size)

    def _check_size(self, what: str, size: int) -> None:
        """`SagaFault` if a record of `size` bytes (`record_size`) is over the limit."""
        if size > self.options.max_record_bytes:
            raise SagaFault(f"its {what} record would be {size} bytes, over the limit of "
                            f"{self.options.max_record_bytes}")

    def _delivered(self, error: Any, message: Message) -> None:
        if error is None:
            return
        # The transaction's commit will fail and abort; the loop then rewinds. A caller's
        # reply topic that refused the record is not written to again (see `_reply_record`).
        topic = message.topic()
        log.error("delivery failed", extra={"topic": topic, "error": str(error)})
        if self.reply_topics.rule.problem(topic) is None:  # a caller's topic, not ours
            self.reply_topics.refused(topic, error)
        elif self._refused is None:
            self._refused = denial(error, self.settings, "Write", topic=topic)

    def _remote(self, effect: ExecuteStep | CompensateStep) -> str | None:
        """The Kafka participant the step is routed to, if it is."""
        route = self.routing.route_for(effect.workflow_type, effect.step)
        return route.target if route.kind == "kafka" else None

    def _step_request_record(self, effect: ExecuteStep | CompensateStep,
                             participant: str | None,
                             trace_parent: str | None) -> tuple[str, dict[str, Any]]:
        assert participant is not None  # a Kafka route names its participant (routing.py)
        action = Action.COMPENSATE if isinstance(effect, CompensateStep) else Action.EXECUTE
        request = {
            "requestId": effect.request_id, "run": effect.run,
            "workflowType": effect.workflow_type, "tenantId": effect.tenant_id,
            "step": effect.step, "action": action.value, "attempt": effect.attempt,
            "idempotencyKey": effect.idempotency_key, "params": dict(effect.params),
            "deadline": effect.deadline_at, "replyTopic": self.topics.step_replies,
            "occurredAt": self.clock(),
        }
        try:
            value = codec.encode("StepRequest", request)
        except CodecError as exc:
            raise SagaFault(f"its StepRequest cannot be encoded: {exc}") from exc
        record = {"key": effect.request_id.encode(), "value": value,
                  "headers": codec.headers_for("StepRequest", trace_parent)}
        self._check_size("StepRequest", record_size(record))
        return self.topics.step_requests(participant), record

    def _reply_record(self, effect: Reply) -> tuple[str, dict[str, Any]] | None:
        """The seed's response for the command's `replyTo`, or None when the worker may not
        write there (`consumer/reply_topics.py`): the reply is dropped, the saga goes on."""
        topic = effect.reply_to
        problem = self.reply_topics.problem(topic)
        if problem is not None:
            metrics.REPLIES_DROPPED.inc()
            log.warning("reply not sent", extra={"topic": clean_text(topic, 249),
                                                 "reason": clean_text(problem, 300)})
            return None
        return self._record(topic, effect.response.request_id, effect.response)

    def _dead_letter(self, message: Message, error: Exception,
                     answer_to: tuple[str, str] | None) -> None:
        """The command to the DLQ with the reason; a `ProvisioningRejected` event when its key
        is a requestId without a saga; a `ProvisioningFailed` reply when its caller named a
        reply topic the worker may write to (`answer_to`): nobody waits forever."""
        now = self.clock()
        metrics.DLQ.labels(type(error).__name__).inc()
        log.warning("command sent to DLQ", extra={"reason": clean_text(str(error), 500),
                                                  "partition": message.partition(),
                                                  "offset": message.offset()})
        self.checkpoint.produce(self.topics.commands_dlq, dead_letter(
            message, error, now, max_value_bytes=self.settings.max_command_bytes))
        request_id = readable_request_id(message)
        if request_id is not None and self.store.get(message.partition(), request_id) is None:
            rejected = ProvisioningRejected(
                request_id=request_id, sequence=0, run=0, workflow_type="unknown",
                tenant_id=None, occurred_at=now, reason=clean_text(str(error), 1000),
                code="invalid",
            )
            self.checkpoint.produce(*self._event_record(request_id, rejected, trace_parent=None))
        if answer_to is not None:
            failed = ProvisioningFailed(request_id=answer_to[0], run=0, failed_step=None,
                                        reason=clean_text(str(error), 1000), occurred_at=now)
            reply = self._reply_record(Reply(reply_to=answer_to[1], response=failed))
            if reply is not None:
                self.checkpoint.produce(*reply)
        self.checkpoint.transitions += 1

    # --- commit and release --------------------------------------------------------------------

    def _commit(self) -> None:
        """Commit everything up to now and wait for it (a revocation, the worker's stop)."""
        self._settle_commit(wait=True)
        if not self.checkpoint.open and self.checkpoint.is_empty() and not self._snapshots:
            return
        self._start_commit()
        self._settle_commit(wait=True)

    def _start_commit(self) -> None:
        """Checkpoint steps 1 and 3: the last snapshot of every saga moved, then the commit,
        which runs while the loop goes on (`_settle_commit` on a later turn)."""
        if not self.checkpoint.open:
            self.checkpoint.begin()
        self._write_snapshots()
        self.checkpoint.start_commit()

    def _settle_commit(self, wait: bool) -> None:
        """Checkpoint step 4, once the commit in flight has ended: the effects held for it."""
        committed = self.checkpoint.settle(wait)
        if committed is None:
            return
        metrics.COMMIT_SECONDS.observe(committed.seconds)
        if committed.records or committed.held or committed.offsets:
            # What each saga costs in transactions and records (the bench reports it).
            metrics.TRANSACTIONS.inc()
            metrics.RECORDS_WRITTEN.inc(committed.records)
            metrics.RECORD_BYTES_WRITTEN.inc(committed.record_bytes)
        for partition, effect in committed.held:
            self._release(partition, effect)

    def _write_snapshots(self) -> None:
        snapshots, self._snapshots = self._snapshots, {}
        plain, size = _plain_headers("SagaState", None)
        for (partition, request_id), state in snapshots.items():
            status = snapshot_headers(state)
            try:
                record = self._record(self.topics.state, request_id, state,
                                      partition=partition, headers=plain + status,
                                      headers_size=size + headers_bytes(status))
            except SagaFault as exc:  # its events encoded: never seen; restored from before
                metrics.SAGA_FAULTS.labels("SagaState").inc()
                log.error("state not written", extra={"request_id": request_id,
                                                      "reason": clean_text(str(exc), 500)})
                continue
            self.checkpoint.produce(*record)
            self.store.park(partition, state, record[1]["value"])

    def _check_state_size(self, state: SagaState) -> None:
        """A state over the record limit fails its saga's input here, not the commit. Its
        texts (parameters, outputs, reasons) are most of it: counted, plus room for the rest."""
        params, outputs = state.params, state.outputs
        size = (1024 + sum(map(len, params.keys())) + sum(map(len, params.values()))
                + sum(map(len, outputs.keys())) + sum(map(len, outputs.values()))
                + len(state.reason or ""))
        if size > self.options.max_record_bytes:
            raise SagaFault(f"its SagaState record would be about {size} bytes, over the "
                            f"limit of {self.options.max_record_bytes}")

    def _release(self, partition: int, effect: Any) -> None:
        if not self.store.owns(partition):
            return
        if isinstance(effect, SetTimer):
            self.timers.set(effect.fire_at, partition, effect)  # a TimerFired when it fires
        elif self._remote(effect):
            # Only `resume` gets here with a Kafka step: its StepRequest was committed with the
            # state that asked for it, so the participant has it; the attempt timer covers a
            # request that is lost anyway.
            return
        else:
            self._start_step(partition, effect)

    def _start_step(self, partition: int, effect: ExecuteStep | CompensateStep) -> None:
        """Hand an in-process step to the step threads."""
        action = Action.COMPENSATE if isinstance(effect, CompensateStep) else Action.EXECUTE
        self.steps.submit(partition, self._generation[partition], _step_call(effect, action))

    # --- terminal sagas ------------------------------------------------------------------------

    def _watch_expiry(self, partition: int, state: SagaState) -> None:
        if state.status in TERMINAL and state.finished_at is not None:
            expires_at = state.finished_at + self.options.idempotency_window_ms
            self.timers.set(expires_at, partition, _Expire(state.request_id))

    def _expire(self, partition: int, request_id: str, now: int) -> None:
        state = self.store.get(partition, request_id)
        if state is None or state.status not in TERMINAL or state.finished_at is None:
            return
        if state.finished_at + self.options.idempotency_window_ms > now:
            return
        if state.uncompensated_steps:
            # Kept until an operator clears its leftovers (re-attempt or resolve needs the
            # saga); the transition that clears the last one watches its expiry again.
            return
        self._snapshots.pop((partition, request_id), None)
        self.checkpoint.produce(self.topics.state, {"key": request_id.encode(), "value": None,
                                                    "partition": partition})
        self.store.remove(partition, request_id)
        self.checkpoint.transitions += 1

    # --- partition ownership -------------------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        numbers = sorted({tp.partition for tp in partitions if tp.topic == self.topics.commands})
        for number in numbers:
            self._try_restore(number, ASSIGN_LEADER_WAIT_S)
        consumer.assign(partitions)
        self._set_reading(partitions)
        if not self._unrestored:
            self.ready = True
        log.info("partitions assigned", extra={"partitions": numbers,
                                               "unrestored": self._unrestored.numbers()})

    def _set_reading(self, partitions: list[TopicPartition]) -> None:
        """Pause or resume each partition for what it is now: unrestored ones wait, commands
        as flow control says, the rest read. (librdkafka keeps a partition paused across a
        re-assignment, whatever it should be now.)"""
        def held(tp: TopicPartition) -> bool:
            return tp.partition in self._unrestored or (
                self._paused and tp.topic == self.topics.commands)
        paused = [tp for tp in partitions if held(tp)]
        reading = [tp for tp in partitions if not held(tp)]
        if paused:
            self.consumer.pause(paused)
        if reading:
            self.consumer.resume(reading)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        outcome = "committed"
        try:
            self._commit()
        except (TransactionAborted, KafkaException) as exc:
            outcome = f"aborted: {exc}"
            self.checkpoint.abort()
        except ProducerFenced:
            outcome = "fenced"
            self.checkpoint.open = False  # nothing of it may be committed by this process
        numbers = {tp.partition for tp in partitions}
        log.info("partitions revoked", extra={"partitions": sorted(numbers),
                                              "transaction": outcome})
        self._forget(numbers)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Lost, not revoked: another member may already own them; nothing may be committed.
        log.warning("partitions lost", extra={"partitions": sorted({tp.partition
                                                                      for tp in partitions})})
        self.checkpoint.abort()
        self._forget({tp.partition for tp in partitions})

    def _forget(self, numbers: set[int]) -> None:
        self._unrestored.forget(numbers)
        self._snapshots = {k: v for k, v in self._snapshots.items() if k[0] not in numbers}
        for number in numbers:
            self.observer.forget(self.store.request_ids(number))
            self.store.drop(number)
            self._generation[number] = self._generation.get(number, 0) + 1
        self.timers.drop_partitions(numbers)

    def _try_restore(self, partition: int, leader_wait_s: float) -> bool:
        """Restore `partition`; if it cannot be read now, leave it to a later turn: a state
        partition without a reachable leader must cost its own sagas a wait, never the worker
        (one ended when a restore during an assignment failed: replicated chaos run)."""
        try:
            self._restore(partition, leader_wait_s)
        except (TransientError, KafkaException) as exc:
            wait_s = self._unrestored.failed(partition, time.monotonic(), str(exc))
            metrics.RESTORE_FAILURES.inc()
            log.warning("cannot restore partition yet: its sagas wait, the others go on",
                        extra={"partition": partition, "reason": str(exc),
                               "retry_in_s": wait_s})
            return False
        self._unrestored.restored(partition)
        return True

    def _restore_due(self) -> None:
        """Try again the restores that failed and are due; a partition restored is read
        again from its committed offsets."""
        due = self._unrestored.due(time.monotonic()) if self._unrestored else []
        if not due:
            return
        # A client may keep a stale view of the cluster (a leader it cannot find): new ones.
        self._renew_restore_clients()
        for number in due:
            if not self._try_restore(number, RETRY_LEADER_WAIT_S):
                continue
            tps = [TopicPartition(topic, number)
                   for topic in (self.topics.commands, self.topics.step_replies)]
            try:
                self._seek_committed(tps)
            except KafkaException as exc:
                self._forget({number})
                self._unrestored.failed(number, time.monotonic(), str(exc))
                continue
            self._set_reading(tps)
            log.info("partition restored after a wait", extra={"partition": number})
        if not self._unrestored:
            self.ready = True

    def _renew_restore_clients(self) -> None:
        for client in (self._restorer, self._ends):
            with contextlib.suppress(KafkaException, RuntimeError):
                client.close()
        self._restorer = restore_consumer(self.settings)
        self._ends = end_offsets_consumer(self.settings)

    def _seek_committed(self, partitions: list[TopicPartition]) -> None:
        """Back to the committed offsets (the beginning where none is committed)."""
        for tp in self.consumer.committed(partitions, timeout=30):
            if tp.offset >= 0:
                self.consumer.seek(tp)
            else:
                self.consumer.seek(TopicPartition(tp.topic, tp.partition, OFFSET_BEGINNING))

    def _restore(self, partition: int, leader_wait_s: float) -> None:
        self._generation[partition] = self._generation.get(partition, 0) + 1
        states, _ = restore_partition(self._restorer, self.topics.state, partition,
                                      decode_state, leader_wait_s=leader_wait_s,
                                      ends=self._ends)
        self.store.adopt(partition, states)
        now = self.clock()
        for request_id, state in states.items():
            if isinstance(state, Parked):
                expires_at = state.finished_at + self.options.idempotency_window_ms
                self.timers.set(expires_at, partition, _Expire(request_id))
                continue
            if state.status in TERMINAL:
                self._watch_expiry(partition, state)
                continue
            for effect in resume(state, now, registry=self.routing.registry):
                self._release(partition, effect)

    def _rewind_or_wait(self) -> None:
        """Rewind; if the broker cannot be read right now (it is restarting), wait a moment
        and try again on the next turn instead of giving up the process."""
        try:
            self._rewind()
            self._rewind_pending = False
        except ProducerFenced as exc:  # the renewed producer too (counted: bounded)
            self._producer_lost(exc)
        except (TransientError, KafkaException) as exc:
            log.warning("cannot rewind yet, retrying in 1 s", extra={"reason": str(exc)})
            self._rewind_pending = True
            time.sleep(1)

    def _rewind(self) -> None:
        """After an aborted transaction: back to the last committed state and offsets, with a
        fresh transactional producer."""
        self.checkpoint.abort()  # a fenced or failed producer is replaced just below
        self._renew_producer()
        # Also those still waiting for their first restore: all are read again from the state
        # topic (a failed try of this rewind must not leave any of them out of the next).
        owned = set(self.store.partitions()) | set(self._unrestored.numbers())
        self._forget(owned)
        for partition in sorted(owned):
            self._try_restore(partition, ASSIGN_LEADER_WAIT_S)
        assignment = self.consumer.assignment()
        self._seek_committed(assignment)
        self._set_reading(assignment)

    def _renew_producer(self) -> None:
        """A new producer under the same transactional id (fencing the old one).

        Transactions abort for broker faults, and after a long broker outage librdkafka's
        producer may keep a stale group coordinator: its next send_offsets_to_transaction then
        blocks past any timeout (librdkafka issues 5456 and 5511; seen in the chaos suite, every
        worker stuck for good after a minute-long broker restart). A fresh producer looks the
        coordinator up again. Aborts are rare: the cost (init_transactions) does not matter.
        """
        old, self.producer = self.producer, transactional_producer(
            self.settings, self._transactional_id)
        if self.checkpoint.hung:
            # Left alone with the thread stuck in it, and kept: destroying a client with a
            # call in progress would block whichever thread collected it.
            self._abandoned.append(old)
        else:
            with contextlib.suppress(KafkaException, RuntimeError):
                old.purge()
        self._init_transactions()
        self.checkpoint.replace_producer(self.producer)

    def liveness(self) -> tuple[bool, str]:
        """Whether the poll loop still turns (for /healthz): a call into a client library that
        never returns must restart the process, not leave its partitions held."""
        stuck_s = time.monotonic() - self._turn_started
        if self._started and stuck_s > self.options.stuck_turn_s:
            return False, f"the poll loop has not turned for {stuck_s:.0f} s"
        return True, "ok"

    # --- flow control ---------------------------------------------------------------------------

    def _apply_flow_control(self) -> None:
        """No new sagas while too many are in flight or too many steps wait for a thread.

        A step that waits in the queue spends its attempt's time there: taking more commands
        than the participants can serve turns into timeouts and retries (the chaos suite saw
        it at 2,000 sagas at once). Paused, the commands wait in Kafka instead; the sagas
        already running go on, and so does everything else the worker reads.
        """
        load = max(self.store.in_flight / self.options.max_in_flight,
                   self.steps.running / self.options.queued_steps_limit)
        if self._paused and load < 0.8:
            self.consumer.resume(self._command_partitions())
            self._paused = False
        elif not self._paused and load >= 1.0:
            self.consumer.pause(self._command_partitions())
            self._paused = True

    def _command_partitions(self) -> list[TopicPartition]:
        return [tp for tp in self.consumer.assignment()
                if tp.topic == self.topics.commands and tp.partition not in self._unrestored]

    # --- what operators see -------------------------------------------------------------------

    def _export_gauges(self) -> None:
        """Active and stuck sagas per workflow type, computed when Prometheus scrapes."""
        for workflow_type in sorted({w.type for w in self.routing.registry}):
            metrics.ACTIVE.labels(workflow_type).set_function(
                lambda wt=workflow_type: self._count_running(wt, stuck_only=False))
            metrics.STUCK.labels(workflow_type).set_function(
                lambda wt=workflow_type: self._count_running(wt, stuck_only=True))

    def _count_running(self, workflow_type: str, stuck_only: bool) -> int:
        stuck_before = self.clock() - self.options.stuck_after_ms
        count = 0
        for partition in list(self.store.partitions()):
            for state in list(self.store.running(partition)):
                if (state.workflow_type == workflow_type
                        and (not stuck_only or state.updated_at < stuck_before)):
                    count += 1
        return count

    def readiness(self) -> tuple[bool, str]:
        if self._unrestored:
            return False, (f"state partitions not restored yet, their sagas wait "
                           f"({self._unrestored.describe()})")
        if not self.ready:
            return False, "waiting for partitions to be assigned and restored"
        stalled = self.watchdog.problem()
        if stalled is not None:
            return False, stalled
        return True, f"owns partitions {self.store.partitions()}"

    def _init_transactions(self) -> None:
        # A worker (re)started while the broker restarts waits for it (a successor started
        # by the chaos runs' kill during a broker restart exited after 30 s).
        init_transactions(self.producer, self.settings, self._transactional_id)

    def _check_topics(self) -> None:
        """Every topic exists and this principal may see it; co-partitioning holds."""
        specs = self.topics.specs(self.settings.topic_partitions,
                                  participants=sorted(self.routing.kafka_participants()),
                                  max_command_bytes=self.settings.max_command_bytes)
        missing = []
        for spec in specs:
            # One topic at a time: a listing of all topics leaves out, without a word, those
            # the principal may not describe; a named one answers "authorization failed".
            found = while_broker_unavailable(lambda name=spec.name: self._metadata(name))
            topic = found.topics.get(spec.name)
            error = topic.error if topic is not None else None
            raise_if_denied(error, self.settings, "Describe", topic=spec.name)
            if topic is None or (error is not None
                                 and error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART):
                missing.append(spec.name)
        if missing:
            raise ConfigurationError(
                f"topics missing: {', '.join(missing)}; run `provisioning topics create`"
            )
        # With the same patience: a worker (re)started while the broker restarts waits for it.
        while_broker_unavailable(lambda: verify_copartitioning(self._admin, specs))

    def _metadata(self, topic: str) -> Any:
        try:
            return self._admin.list_topics(topic, timeout=10)
        finally:
            self._admin.poll(0)  # a refused login raises here, from the error callback


def _reply_input(reply: dict[str, Any]) -> StepResult | CompensationResult:
    outcome = StepOutcome(Outcome(reply["outcome"]), dict(reply.get("output") or {}),
                          reply.get("reason"))
    return _answer(reply["requestId"], reply["run"], reply["step"], reply["attempt"],
                   Action(reply["action"]), outcome)


def _answer(request_id: str, run: int, step: str, attempt: int, action: Action,
            outcome: StepOutcome) -> StepResult | CompensationResult:
    """A participant's answer (in-process, HTTP or Kafka) as the saga's input, its text
    cleaned at this one boundary (`consumer/participants/answers.py`)."""
    outcome = clean_outcome(outcome, undo=action is Action.COMPENSATE)
    if action is Action.COMPENSATE:
        return CompensationResult(
            request_id=request_id, run=run, step=step, attempt=attempt,
            succeeded=outcome.outcome is Outcome.SUCCEEDED, reason=outcome.reason)
    return StepResult(
        request_id=request_id, run=run, step=step, attempt=attempt,
        outcome=_SAGA_OUTCOMES[outcome.outcome], output=outcome.output,  # frozen: copied
        reason=outcome.reason, acted=outcome.acted, retry_after_ms=outcome.retry_after_ms)


# A participant's outcome as the saga's, looked up (calling the enum by its value runs
# Python's enum machinery: 400 against 27 ns).
_SAGA_OUTCOMES = {outcome: SagaOutcome(outcome.value) for outcome in Outcome}


def _step_call(effect: ExecuteStep | CompensateStep, action: Action) -> StepCall:
    return StepCall(
        request_id=effect.request_id, run=effect.run, workflow_type=effect.workflow_type,
        tenant_id=effect.tenant_id, step=effect.step, action=action, attempt=effect.attempt,
        # From the items' view, copied in C: dict(FrozenMap) would call its __getitem__ in
        # Python once per parameter (58 calls a saga for the no-op tenant workflow).
        idempotency_key=effect.idempotency_key, params=dict(effect.params.items()),
        deadline_at=effect.deadline_at, trace_parent=effect.trace_parent,
    )


def _texts_changed(before: SagaState, after: SagaState) -> bool:
    """Whether `after` holds other parameters, outputs or reason than `before` (the texts
    that make a state's size: `Worker._check_state_size`)."""
    return (after.outputs is not before.outputs or after.params is not before.params
            or after.reason is not before.reason)


def _header(message: Message, name: str) -> str | None:
    for key, value in message.headers() or []:
        if key == name and value:
            return value.decode("ascii", "replace")
    return None


def _unrecordable(answer: StepResult | CompensationResult,
                  fault: SagaFault) -> StepResult | CompensationResult:
    """The answer as the failure it becomes when it cannot be recorded as given."""
    reason = clean_text(f"{UNRECORDABLE}: {fault}", 1000)
    if isinstance(answer, CompensationResult):
        return dataclasses.replace(answer, succeeded=False, reason=reason)
    # A success, or a failure that may have acted, was work done: undone with the rest.
    acted = answer.acted or answer.outcome is not SagaOutcome.PERMANENT_FAILURE
    return StepResult(request_id=answer.request_id, run=answer.run, step=answer.step,
                      attempt=answer.attempt, outcome=SagaOutcome.PERMANENT_FAILURE,
                      reason=reason, acted=acted)


def record_size(record: dict[str, Any]) -> int:
    """Bytes of a record as the producer counts them against its limit (near enough)."""
    return (len(record.get("key") or b"") + len(record.get("value") or b"")
            + headers_bytes(record.get("headers") or ()))


def headers_bytes(headers: Iterable[tuple[str, bytes | None]]) -> int:
    return sum(len(k) + len(v or b"") + 8 for k, v in headers)


# The headers of a record name and workflow type without a trace, and their size: the same
# for most of the worker's records, made once (`codec.headers_for` makes a new list per call,
# and summing it per record was 3 % of the no-op loop under cProfile). Shared between records,
# so never changed: the producer copies them. Workflow types are the registry's few (or
# "unknown"), record names the schemas'; emptied if it ever grows past its limit anyway.
_PLAIN_HEADERS: dict[tuple[str, str | None], tuple[list[tuple[str, bytes]], int]] = {}
_PLAIN_HEADERS_LIMIT = 1024


def _plain_headers(record_name: str, workflow_type: str | None
                   ) -> tuple[list[tuple[str, bytes]], int]:
    found = _PLAIN_HEADERS.get((record_name, workflow_type))
    if found is None:
        if len(_PLAIN_HEADERS) >= _PLAIN_HEADERS_LIMIT:
            _PLAIN_HEADERS.clear()
        headers = codec.headers_for(record_name, workflow_type=workflow_type)
        found = _PLAIN_HEADERS[(record_name, workflow_type)] = (headers, headers_bytes(headers))
    return found
