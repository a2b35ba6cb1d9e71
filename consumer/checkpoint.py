"""The worker's one commit sequence.

A `Checkpoint` is one Kafka transaction holding many saga transitions (never one per message).
What happens, in order, and why:

1. While the transaction is open, every transition produces its records into it as it happens:
   events (`provisioning.events`), step requests of Kafka participants, seed replies (the
   command's `replyTo`) and DLQ records. A saga's state snapshot (`provisioning.state`) is
   kept back and only its last version in the transaction is produced, just before step 3:
   the topic is compacted and restore reads only the latest, so intermediate snapshots would
   be written for nothing (a saga often moves several steps within one transaction). None of
   it is visible to read_committed readers yet.
2. The side effects a transition asks for are started at once or *held*, by who does them:
   - a step of an *in-process* participant (the built-in registry: idempotent by its key) and
     every timer start at once, before the state that asked for them commits (eager);
   - a step of an HTTP participant is held in the checkpoint until the commit (a Kafka
     participant's StepRequest is a record of the transaction itself, step 1).
   A saga whose steps are in-process thus runs several steps within one transaction, and its
   records of all of them commit together: measured on the no-op bench, a five-step saga
   went from six commits to one or two.
3. `start_commit()`: the commit runs on a helper thread while the worker goes on deciding.
   There, the produced records are flushed, for at most `timeout_s` (commit_transaction's
   own flush was seen to wait forever after a broker failover, as in librdkafka issue 3041:
   records still unacknowledged then abort the transaction instead);
   `send_offsets_to_transaction` with the next offsets of every command and
   step-reply partition consumed since the last commit, together with the consumer group
   metadata (so a fenced zombie cannot commit), then `commit_transaction`, which commits
   records and offsets atomically. Inputs and outputs of a batch
   therefore land together or not at all: exactly once between Kafka inputs and outputs.
   Meanwhile the loop goes on: what it consumes and holds is the next transaction's, and
   what it produces waits in `pending` (a producer cannot produce while it commits). Only
   one commit is in flight at a time. Why: a commit takes 20-60 ms of broker round trips on
   a busy two-core machine, and a loop that waited for each spent up to half its time
   waiting; measured on the no-op bench at half load, the median command-to-success latency
   went from 190 to 70-90 ms.
4. `settle()`, on a later turn: once the commit succeeded, the held side effects are
   released to the step runner. A failed commit leaves its transaction to `abort()`.
5. `begin()` opens the next transaction and produces into it what waited in `pending`.

What a crash (or an aborted transaction) may repeat, and what it can never lose:
- Never lost: a command, a step reply or a timer's effect is consumed only together with the
  events and state it caused (step 3); after a crash the saga continues from its last
  committed state, its command or reply read again.
- May run twice: an eager in-process step whose state had not committed yet. The restored
  saga issues that step again under the same idempotency key `<requestId>:<run>:<step>`, and
  the participant answers a repeated key with its first result (the built-in one records it
  in the same database transaction as its work), so nothing is done twice. The eager step's
  own result, if it arrives after the rewind, is discarded (its partition's generation has
  moved on; `consumer/steps.py`).
- Never started before its state commits: a step of an HTTP or Kafka participant, whose
  idempotency the service cannot vouch for beyond the key it sends.

If producing or committing fails with an abortable error, `abort()` discards the transaction,
what waited for the next one and the held effects (a commit still in flight is waited for
first); the worker then rewinds to the last committed state (restores its
partitions again, drops their timers and late results, and seeks to the committed offsets) so
nothing is lost or doubled. A fatal error of the producer (`ProducerFailed`), a producer that
hung in a call (`ProducerHung`) and a fencing (`ProducerFenced`) end the same way, with a new
producer: a transaction that outlives `transaction.timeout.ms` during a broker failover is
aborted by its coordinator, which bumps the producer's epoch, and that looks exactly like a
fencing by another process (the worker stops only when fenced again and again,
`consumer/worker.py`).
"""

from __future__ import annotations

import contextlib
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from queue import SimpleQueue
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from provisioning.errors import ProvisioningError, TransientError
from provisioning.kafka_access import flush


class TransactionAborted(TransientError):
    """The open transaction had to be aborted; the worker rewinds to the last commit."""


class ProducerFenced(ProvisioningError):
    """The producer's epoch is no longer the transactional id's: another process took the id
    over, or the coordinator aborted a transaction that outlived its timeout."""


class ProducerFailed(TransactionAborted):
    """The producer hit a fatal error of its own, not a fencing (seen after a broker died
    mid-transaction: the abort of the timed-out transaction failed with "invalid transaction
    state"). The transaction is lost; a new producer under the same transactional id (which
    fences this one) takes over, as after any abort."""


FENCED = (KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH)
# A record without a partition goes where the producer's partitioner puts it by its key
# (librdkafka's RD_KAFKA_PARTITION_UA, the client's default).
PARTITION_ANY = -1
NO_TIMESTAMP = 0  # the record is stamped when produced (the client's default)


class ProducerHung(TransactionAborted):
    """A transactional call did not return long after its timeout: the producer is unusable
    (librdkafka 5456/5511: after the broker went away mid-commit, send_offsets_to_transaction
    waits for a coordinator it never looks up again). The worker replaces it."""


class _Deadline:
    """Runs a blocking client call on a helper thread and stops waiting for it after a
    deadline. The call itself cannot be interrupted: a thread stuck in it is left behind with
    its producer, which the caller replaces (one thread and one producer per such incident).
    The helper is a daemon thread, not an executor's: an executor's threads are joined when
    the interpreter exits, and one stuck in a call kept a stopped worker running for good."""

    def __init__(self) -> None:
        self._calls = self._helper()

    @staticmethod
    def _helper() -> SimpleQueue:
        calls: SimpleQueue = SimpleQueue()
        threading.Thread(target=_serve, args=(calls,), name="txn", daemon=True).start()
        return calls

    def submit(self, operation: Any, *args: Any) -> Future:
        future: Future = Future()
        self._calls.put((future, operation, args))
        return future

    def replace(self) -> None:
        """A new helper thread: the current one is stuck in a call and keeps its queue."""
        self._calls = self._helper()

    def call(self, deadline_s: float, operation: Any, *args: Any) -> Any:
        future = self.submit(operation, *args)
        try:
            return future.result(timeout=deadline_s)
        except FutureTimeout:
            self.replace()
            raise ProducerHung(f"{getattr(operation, '__name__', 'a transactional call')} did "
                               f"not return within {deadline_s:.0f} s") from None


def _serve(calls: SimpleQueue) -> None:
    while True:
        future, operation, args = calls.get()
        try:
            future.set_result(operation(*args))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller, raised there
            future.set_exception(exc)


@dataclass(frozen=True, slots=True)
class Committed:
    """A transaction whose commit succeeded: the effects held for it, and how long it took."""

    held: list[tuple[int, Any]]
    offsets: int  # partitions whose consumed offsets it committed
    records: int  # produced in it
    record_bytes: int  # their values' bytes
    seconds: float


@dataclass(slots=True)
class _InFlight:
    future: Future
    # Monotonic: the call of the sequence running now has not returned by then, so it never
    # will (ProducerHung). Moved on by the helper thread as each call starts.
    give_up_at: float
    held: list[tuple[int, Any]]
    offsets: int
    records: int
    record_bytes: int
    started: float  # perf_counter


@dataclass(slots=True)
class Checkpoint:
    producer: Producer
    consumer: Consumer
    timeout_s: float = 30.0
    # When the work of the next commit began to gather (monotonic; None: nothing since the
    # last abort). A transaction's age is counted from here, its commit in flight or not.
    since: float | None = None
    transitions: int = 0
    records: int = 0  # produced for the next commit, pending ones included
    record_bytes: int = 0
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    held: list[tuple[int, Any]] = field(default_factory=list)
    # Records produced while the previous transaction commits (or before the next begins):
    # produced into the next transaction as soon as it begins.
    pending: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    open: bool = False  # a producer transaction begun and not yet ended
    committing: _InFlight | None = None
    # A call that has not returned this long after its own timeout never will.
    hang_margin_s: float = 15.0
    hung: bool = False  # the producer hung: it must be replaced, not used again
    on_delivery: Any = None  # the producer's delivery report callback
    _deadline: _Deadline = field(default_factory=_Deadline)

    def begin(self) -> None:
        """Step 5: the next transaction, with the records produced while it was not open."""
        self._guard(self.producer.begin_transaction)
        self.open = True
        if self.since is None:
            self.since = time.monotonic()
        pending, self.pending = self.pending, []
        for topic, record in pending:
            self._produce(topic, record)

    def produce(self, topic: str, record: dict[str, Any]) -> None:
        """Step 1: into the open transaction, or kept for the next while one commits."""
        self.records += 1
        self.record_bytes += len(record.get("value") or b"")
        if self.open and self.committing is None:
            self._produce(topic, record)
        else:
            self.pending.append((topic, record))

    def consumed(self, topic: str, partition: int, offset: int) -> None:
        """Record that the message at `offset` was fully handled within this transaction."""
        self.offsets[(topic, partition)] = offset + 1

    def hold(self, partition: int, effect: Any) -> None:
        self.held.append((partition, effect))

    def age_s(self) -> float:
        return time.monotonic() - self.since if self.since is not None else 0.0

    def is_empty(self) -> bool:
        return not self.offsets and not self.transitions and not self.pending

    def commit(self) -> list[tuple[int, Any]]:
        """Steps 3 and 4 at once: commit, wait for it, and hand back the held effects."""
        self.start_commit()
        committed = self.settle(wait=True)
        assert committed is not None
        return committed.held

    def start_commit(self) -> None:
        """Step 3, begun: the commit sequence runs on the helper thread while the worker goes
        on deciding (what it produces meanwhile waits in `pending` for the next transaction,
        what it consumes and holds belongs to that one). `settle` picks up the outcome."""
        assert self.open and self.committing is None, "start_commit needs an open transaction"
        positions = [TopicPartition(t, p, o) for (t, p), o in self.offsets.items()]
        group = self.consumer.consumer_group_metadata() if positions else None
        flight = _InFlight(Future(), self._call_deadline(), self.held, len(positions),
                           self.records, self.record_bytes, time.perf_counter())
        flight.future = self._deadline.submit(self._commit_sequence, positions, group, flight)
        self.committing = flight
        self.held, self.offsets, self.transitions = [], {}, 0
        self.records = self.record_bytes = 0
        self.since = time.monotonic()

    def settle(self, wait: bool) -> Committed | None:
        """Step 4: the commit in flight, once it ended (at once when `wait`). None while it
        runs, or when none is in flight. A failed commit leaves the transaction open, for
        `abort()`; one whose current call is past its deadline condemns the producer
        (`ProducerHung`), whether or not the caller waits."""
        flight = self.committing
        if flight is None:
            return None
        overdue = time.monotonic() >= flight.give_up_at
        if not (wait or overdue or flight.future.done()):
            return None
        try:
            self._wait_for(flight)
        finally:
            self.committing = None
        self.open = False
        return Committed(flight.held, flight.offsets, flight.records, flight.record_bytes,
                         time.perf_counter() - flight.started)

    def _wait_for(self, flight: _InFlight) -> None:
        """The commit's outcome (raised if it failed), waited for until the deadline of the
        call it is in; that deadline moves on while the sequence goes from call to call."""
        while True:
            try:
                flight.future.result(timeout=max(0.0, flight.give_up_at - time.monotonic()))
                return
            except FutureTimeout:
                if time.monotonic() < flight.give_up_at:
                    continue  # the sequence went on to its next call meanwhile
                self.hung = True
                self._deadline.replace()  # the stuck thread keeps its own queue
                raise ProducerHung("a call of the commit did not return within "
                                   f"{self.timeout_s + self.hang_margin_s:.0f} s") from None

    def _call_deadline(self) -> float:
        """When a call started now, with its timeout `timeout_s`, never will return (as
        `_call` rules for the calls it makes)."""
        return time.monotonic() + self.timeout_s + self.hang_margin_s

    def _commit_sequence(self, positions: list[TopicPartition], group: Any,
                         flight: _InFlight) -> None:
        """On the helper thread: flush (with a timeout: commit_transaction's own flush was seen
        to wait forever after a failover, librdkafka issue 3041), offsets, commit. Each call
        gets its own deadline, as a call through `_call` does."""
        flight.give_up_at = self._call_deadline()
        unacknowledged = self._attempts(flush, self.producer, self.timeout_s)
        if unacknowledged:
            raise TransactionAborted(f"{unacknowledged} records not acknowledged within "
                                     f"{self.timeout_s:.0f} s")
        if positions:
            flight.give_up_at = self._call_deadline()
            self._attempts(self.producer.send_offsets_to_transaction, positions, group,
                           self.timeout_s)
        flight.give_up_at = self._call_deadline()
        self._attempts(self.producer.commit_transaction, self.timeout_s)

    def _produce(self, topic: str, record: dict[str, Any]) -> None:
        # Every argument by position, in the order of the client's signature (its type stub,
        # `cimpl.pyi`: topic, value, key, partition, callback, on_delivery, timestamp,
        # headers): given keywords, the client looks each of its keywords up by name on every
        # call. Measured, 20,000 records a round, fifteen rounds: 0.78 µs a record against
        # 1.26 with `**record` (about fourteen records a saga).
        value, key = record.get("value"), record.get("key")
        partition, headers = record.get("partition", PARTITION_ANY), record.get("headers")
        while True:
            try:
                self.producer.produce(topic, value, key, partition, self.on_delivery, None,
                                      NO_TIMESTAMP, headers)
                return
            except BufferError:
                self.producer.poll(0.05)  # the local queue is full: let deliveries drain
            except KafkaException as exc:
                if exc.args[0].code() == KafkaError._FATAL:  # fenced, most likely
                    raise ProducerFailed(f"producing to {topic}: {exc}") from exc
                raise TransactionAborted(f"producing to {topic}: {exc}") from exc

    def abort(self, tries: int = 3) -> None:
        """Discard the open transaction and everything held for it. An abort that times out
        is called again (librdkafka's rule: a later begin would find it still in progress).
        A fenced, failed or hung producer ends the attempts without raising: the worker
        replaces it next (`Worker._rewind`)."""
        if self.committing is not None:
            # Its outcome first: the producer cannot abort while it commits. A commit that
            # succeeded is committed; its held effects are dropped with the rest (the worker
            # rewinds, and resuming the restored sagas asks for them again).
            with contextlib.suppress(Exception):
                self.settle(wait=True)
        self.held.clear()
        self.offsets.clear()
        self.pending.clear()
        self.records = self.record_bytes = 0
        self.since = None
        try:
            for _ in range(tries if self.open and not self.hung else 0):
                try:
                    self._call(self.producer.abort_transaction, self.timeout_s)
                    break
                except KafkaException as exc:
                    # Fenced or fatal: the producer is done for, and so is its transaction;
                    # the caller renews the producer (worker._rewind).
                    error = exc.args[0]
                    if error.code() in FENCED or error.fatal() or not error.retriable():
                        break
                except ProducerHung:
                    break
        finally:
            self.open = False

    def replace_producer(self, producer: Producer) -> None:
        self.producer, self.hung = producer, False

    def _call(self, operation: Any, *args: Any) -> Any:
        """A call to the broker through the producer, given up on `hang_margin_s` after its
        own timeout (the last argument, when there is one)."""
        timeout = args[-1] if args and isinstance(args[-1], int | float) else self.timeout_s
        try:
            return self._deadline.call(timeout + self.hang_margin_s, operation, *args)
        except ProducerHung:
            self.hung = True
            raise

    def _guard(self, operation: Any, *args: Any) -> Any:
        return self._call(self._attempts, operation, *args)

    @staticmethod
    def _attempts(operation: Any, *args: Any, tries: int = 3) -> Any:
        for attempt in range(1, tries + 1):
            try:
                return operation(*args)
            except KafkaException as exc:
                _raise_if_fenced(exc)
                error: KafkaError = exc.args[0]
                if error.fatal():
                    raise ProducerFailed(f"producer failed: {error.str()}") from exc
                # Retriable errors of commit/send_offsets may be retried as they are.
                if error.retriable() and not error.txn_requires_abort() and attempt < tries:
                    continue
                raise TransactionAborted(f"transaction must abort: {error.str()}") from exc
        raise AssertionError("unreachable")


def _raise_if_fenced(exc: KafkaException) -> None:
    error: KafkaError = exc.args[0]
    if error.code() in FENCED:
        raise ProducerFenced(f"producer fenced: {error.str()}") from exc
