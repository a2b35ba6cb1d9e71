"""Saga states of the partitions this worker owns, restored from the compacted state topic.

The state topic is the source of truth: the latest `SagaState` of every saga keyed by
requestId, tombstoned once a terminal saga leaves the idempotency window. On assignment the
worker reads a partition from its beginning up to its high watermark with a read_committed
client (state of an aborted transaction is never seen, and the read ends only once every
transaction below that offset has ended, the previous owner's last one included) and keeps
the result here; on revocation it drops it.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Message, TopicPartition

from consumer import wire
from consumer.kafka_clients import watermarks
from provisioning import metrics
from provisioning.errors import TransientError
from sagas import SagaState, Status
from schemas import codec

log = logging.getLogger(__name__)

TERMINAL = frozenset({Status.COMPLETED, Status.FAILED})


# Headers on every state record, so a restore can tell a finished saga from a running one
# without decoding it: most restored states are finished sagas kept for idempotency, and
# decoding them all would make a restore as slow as the Avro decoder.
STATUS_HEADER = "saga-status"
FINISHED_AT_HEADER = "saga-finished-at"


@dataclass(frozen=True, slots=True)
class Parked:
    """A finished saga's snapshot, kept encoded until something asks for it."""

    value: bytes
    finished_at: int


def snapshot_headers(state: SagaState) -> list[tuple[str, bytes]]:
    if state.status in TERMINAL and state.finished_at is not None:
        return [(STATUS_HEADER, b"terminal"), (FINISHED_AT_HEADER, str(state.finished_at).encode())]
    return [(STATUS_HEADER, b"running")]


@dataclass(frozen=True, slots=True)
class RestoreReport:
    partition: int
    states: int
    records: int
    seconds: float


class StateStore:
    def __init__(self, decode: Callable[[bytes], SagaState] | None = None) -> None:
        self._partitions: dict[int, dict[str, SagaState | Parked]] = {}
        self._in_flight = 0
        self._decode = decode

    @property
    def in_flight(self) -> int:
        """Sagas not yet COMPLETED or FAILED, over all owned partitions."""
        return self._in_flight

    def owns(self, partition: int) -> bool:
        return partition in self._partitions

    def partitions(self) -> list[int]:
        return list(self._partitions)

    def get(self, partition: int, request_id: str) -> SagaState | None:
        states = self._partitions[partition]
        state = states.get(request_id)
        if isinstance(state, Parked):
            assert self._decode is not None, "a store with parked states needs a decoder"
            decoded = decode_or_skip(self._decode, request_id, state.value)
            if decoded is None:
                del states[request_id]
                return None
            state = states[request_id] = decoded
        return state

    def parked(self, partition: int, request_id: str) -> bool:
        """Whether the saga is finished and kept encoded (nothing decoded to tell)."""
        return isinstance(self._partitions[partition].get(request_id), Parked)

    def put(self, partition: int, state: SagaState) -> None:
        states = self._partitions[partition]
        previous = states.get(state.request_id)
        self._in_flight += _active(state) - _active(previous)
        states[state.request_id] = state

    def park(self, partition: int, state: SagaState, value: bytes) -> None:
        """Keep a finished saga as its snapshot's bytes (`value`), as a restore does, if
        `state` is still its latest: one object instead of a dozen (its maps, tuples and
        strings) for the whole idempotency window. Decoded again if something asks."""
        states = self._partitions.get(partition)
        if (states is not None and states.get(state.request_id) is state
                and state.status in TERMINAL and state.finished_at is not None):
            states[state.request_id] = Parked(value, state.finished_at)

    def remove(self, partition: int, request_id: str) -> None:
        previous = self._partitions[partition].pop(request_id, None)
        self._in_flight -= _active(previous)

    def adopt(self, partition: int, states: dict[str, SagaState | Parked]) -> None:
        self.drop(partition)
        self._partitions[partition] = states
        self._in_flight += sum(_active(s) for s in states.values())

    def drop(self, partition: int) -> None:
        states = self._partitions.pop(partition, {})
        self._in_flight -= sum(_active(s) for s in states.values())

    def states(self, partition: int) -> Iterator[SagaState | Parked]:
        return iter(list(self._partitions[partition].values()))

    def running(self, partition: int) -> Iterator[SagaState]:
        return (s for s in self.states(partition)
                if isinstance(s, SagaState) and s.status not in TERMINAL)

    def request_ids(self, partition: int) -> list[str]:
        return list(self._partitions.get(partition, {}))


def _active(state: SagaState | Parked | None) -> int:
    return int(isinstance(state, SagaState) and state.status not in TERMINAL)


def restore_partition(
    consumer: Consumer,
    topic: str,
    partition: int,
    decode: Callable[[bytes], SagaState],
    timeout_s: float = 120.0,
    leader_wait_s: float = 60.0,
    ends: Consumer | None = None,
) -> tuple[dict[str, SagaState | Parked], RestoreReport]:
    """Read one state partition to its end; the latest record per key wins, tombstones delete.

    The end is the high watermark, asked of `ends` (a read_uncommitted client,
    `end_offsets_consumer`; `consumer` itself when None): `consumer` reads committed records
    only, so it reaches that end once every transaction below it is committed or aborted,
    including one whose commit markers are still on their way.

    Waits up to `leader_wait_s` for the partition's leader: a topic created a moment ago (or a
    broker restarting) answers "unknown partition" or "not leader" for a while, and a worker
    assigned such a partition must not end over it. Then raises `TransientError`.
    """
    started = time.perf_counter()
    tp = TopicPartition(topic, partition)
    try:
        low, end = watermarks(ends or consumer, tp, leader_wait_s)
    except KafkaException as exc:
        raise TransientError(f"reading watermarks of {topic}[{partition}]: {exc}") from exc
    states: dict[str, SagaState | Parked] = {}
    records = 0
    if end > low:
        learn_leaders(consumer, topic)
        consumer.assign([TopicPartition(topic, partition, OFFSET_BEGINNING)])
        with collector_paused():
            records = _read_to(consumer, tp, end, states, decode, time.monotonic() + timeout_s)
        consumer.unassign()
    report = RestoreReport(partition, len(states), records, time.perf_counter() - started)
    log.info("restored partition", extra={"partition": partition, "states": len(states),
                                           "records": records, "seconds": report.seconds})
    return states, report


def learn_leaders(consumer: Consumer, topic: str, timeout_s: float = 10.0) -> None:
    """Ask for `topic`'s metadata before assigning one of its partitions: a client assigned a
    partition it knows no leader for retries its first offset query on a 500 ms timer until
    the metadata comes by itself (measured: 0.5-1.0 s before the first record of a worker's
    first restore, half of a kill -9 failover to the same instance id). One metadata round
    trip (about a millisecond) per partition restored."""
    try:
        consumer.list_topics(topic, timeout=timeout_s)
    except KafkaException as exc:
        raise TransientError(f"reading the metadata of {topic}: {exc}") from exc


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off while a partition is read: every record read
    allocates objects that live on (messages, then states), so the collector ran again and
    again over a heap that only grew, for nothing: a restore makes no reference cycles, and
    what it drops is freed by reference counting. Measured: 45 % of a 200,000-state restore.
    Left off if it was off (and on if another thread turned it on meanwhile)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _read_to(
    consumer: Consumer,
    tp: TopicPartition,
    end: int,
    states: dict[str, SagaState | Parked],
    decode: Callable[[bytes], SagaState],
    deadline: float,
) -> int:
    records = 0
    # The latest record per key, its value and headers read only for the survivors.
    latest: dict[bytes | None, Message] = {}
    while True:
        # poll() returns with the first record there, consume() with a zero timeout takes
        # what else has arrived: consume() alone waits for a whole batch or its timeout, and
        # the last batch of a partition is rarely whole (20 ms for every partition restored).
        first = consumer.poll(0.02)
        batch = [] if first is None else [first, *consumer.consume(num_messages=4999, timeout=0)]
        records += len(batch)
        for message in batch:
            if message.error():
                raise TransientError(f"restoring {tp.topic}[{tp.partition}]: {message.error()}")
            latest[message.key()] = message
        # Transaction markers occupy offsets but are never delivered: ask the position.
        position = consumer.position([tp])[0].offset
        if position >= end:
            break
        if time.monotonic() > deadline:
            raise TransientError(
                f"restoring {tp.topic}[{tp.partition}] did not reach offset {end} in time"
            )
    # Only the last record per key counts (a tombstone deletes); finished sagas stay encoded.
    for raw_key, message in latest.items():
        value = message.value()
        if value is None:
            continue
        key = (raw_key or b"").decode("utf-8", "replace")
        state = _parked(value, message.headers()) or decode_or_skip(decode, key, value)
        if state is not None:
            states[key] = state
    return records


def _parked(value: bytes, headers: list | None) -> Parked | None:
    """A finished saga's record, kept encoded: its headers say so and its own header is a
    SagaState's (its fingerprint compared, nothing decoded)."""
    if not headers or value[2:10] not in _state_fingerprints():
        return None
    terminal, finished_at = False, None
    for name, header in headers:
        if name == STATUS_HEADER:
            terminal = header == b"terminal"
        elif name == FINISHED_AT_HEADER:
            finished_at = header
    if not terminal or finished_at is None:
        return None
    try:
        return Parked(value, int(finished_at))
    except ValueError:
        return None  # not what it claims: decoded in full, and skipped if it is no SagaState


@cache
def _state_fingerprints() -> frozenset[bytes]:
    return codec.fingerprints("SagaState")


def decode_state(value: bytes) -> SagaState:
    """A state record's value as the saga's state (CodecError when it is none)."""
    return wire.decode_as(SagaState, value)


def decode_or_skip(decode: Callable[[bytes], SagaState], key: str,
                   value: bytes) -> SagaState | None:
    """The state in `value`, or None (logged and counted) when the record is not a readable
    SagaState: a state topic is written by the worker alone, but a corrupt record must cost
    only its own saga, never the restore of a partition."""
    try:
        return decode(value)
    except Exception as exc:  # noqa: BLE001 - anything undecodable is corrupt, whatever raised
        metrics.CORRUPT_STATE_RECORDS.inc()
        log.error("corrupt state record skipped", extra={
            "request_id": key[:100], "reason": f"{type(exc).__name__}: {str(exc)[:300]}"})
        return None
