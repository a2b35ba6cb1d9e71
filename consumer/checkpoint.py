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
2. The side effects a transition asks for — starting a step or a compensation, arming a timer —
   are *held* in the checkpoint, not started.
3. `commit()`: the produced records are flushed, for at most `timeout_s` (commit_transaction's
   own flush was seen to wait forever after a broker failover, as in librdkafka issue 3041:
   records still unacknowledged then abort the transaction instead);
   `send_offsets_to_transaction` with the next offsets of every command and
   step-reply partition consumed since the last commit, together with the consumer group
   metadata (so a fenced zombie cannot commit), then `commit_transaction`, which commits
   records and offsets atomically. Inputs and outputs of a batch
   therefore land together or not at all: exactly once between Kafka inputs and outputs.
4. Only after the commit succeeded are the held side effects released to the step runner and
   the timer queue. A step thus only ever runs for a state that is durable; if the process dies
   before it finishes, the restored saga runs it again with the same idempotency key.
5. `begin()` opens the next transaction.

If producing or committing fails with an abortable error, `abort()` discards the transaction
and the held effects; the worker then rewinds to the last committed state (restores its
partitions again and seeks to the committed offsets) so nothing is lost or doubled. A fatal
error of the producer (`ProducerFailed`) and a fencing (`ProducerFenced`) end the same way,
with a new producer: a transaction that outlives `transaction.timeout.ms` during a broker
failover is aborted by its coordinator, which bumps the producer's epoch, and that looks
exactly like a fencing by another process (the worker stops only when fenced again and again,
`consumer/worker.py`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
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


_FENCED = (KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH)


@dataclass(slots=True)
class Checkpoint:
    producer: Producer
    consumer: Consumer
    timeout_s: float = 30.0
    opened_at: float = 0.0
    transitions: int = 0
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    held: list[tuple[int, Any]] = field(default_factory=list)
    open: bool = False

    def begin(self) -> None:
        self._guard(self.producer.begin_transaction)
        self.open = True
        self.opened_at = time.monotonic()
        self.transitions = 0

    def consumed(self, topic: str, partition: int, offset: int) -> None:
        """Record that the message at `offset` was fully handled within this transaction."""
        self.offsets[(topic, partition)] = offset + 1

    def hold(self, partition: int, effect: Any) -> None:
        self.held.append((partition, effect))

    def age_s(self) -> float:
        return time.monotonic() - self.opened_at if self.open else 0.0

    def is_empty(self) -> bool:
        return not self.offsets and not self.transitions

    def commit(self) -> list[tuple[int, Any]]:
        """Steps 3 and 4: commit offsets and records together, then hand back the held effects."""
        unacknowledged = self._guard(flush, self.producer, self.timeout_s)
        if unacknowledged:
            raise TransactionAborted(f"{unacknowledged} records not acknowledged within "
                                     f"{self.timeout_s:.0f} s")
        if self.offsets:
            positions = [TopicPartition(t, p, o) for (t, p), o in self.offsets.items()]
            self._guard(
                self.producer.send_offsets_to_transaction,
                positions,
                self.consumer.consumer_group_metadata(),
                self.timeout_s,
            )
        self._guard(self.producer.commit_transaction, self.timeout_s)
        released, self.held = self.held, []
        self.offsets.clear()
        self.open = False
        return released

    def abort(self, tries: int = 3) -> None:
        """Discard the open transaction and everything held for it. An abort that times out
        is called again (librdkafka's rule: a later begin would find it still in progress)."""
        self.held.clear()
        self.offsets.clear()
        try:
            for _ in range(tries if self.open else 0):
                try:
                    self.producer.abort_transaction(self.timeout_s)
                    break
                except KafkaException as exc:
                    # Fenced or fatal: the producer is done for, and so is its transaction;
                    # the caller renews the producer (worker._rewind).
                    error = exc.args[0]
                    if error.code() in _FENCED or error.fatal() or not error.retriable():
                        break
        finally:
            self.open = False

    def _guard(self, operation: Any, *args: Any, tries: int = 3) -> Any:
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
    if error.code() in _FENCED:
        raise ProducerFenced(f"producer fenced: {error.str()}") from exc
