"""What the projector does with each record of a poll batch: project it, dead-letter it, or hold
its partition at it. Pure: no broker, no database.

- An event the projection folds (`fold.EVENT_TYPES`) is projected.
- A record whose writer schema the codec does not know (`UnknownFingerprint`) is most likely
  fine: a newer worker wrote it during a rolling deploy. Skipping it would lose that request's
  progress for good, dead-lettering it would take it out of the projection's order, so its
  partition is *held*: the records before it are projected, nothing at or after it is projected
  or committed, until a projector that knows the schema reads it.
- A record that cannot be read with the schema it names (`MalformedRecord`, `TruncatedRecord`),
  or a known record that is not an event (a `SagaState` or a command written to the events
  topic by mistake) will never project, however long we wait: it is dead-lettered with its
  reason and the partition goes on.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from projection import fold
from projection.fold import Event
from provisioning.errors import CodecError
from schemas.codec import Decoded
from schemas.errors import MalformedRecord, UnknownFingerprint

PartitionKey = tuple[str, int]  # (topic, partition)

# Values of the `kind` label of `provisioning_projector_unprojectable_records`.
UNKNOWN_SCHEMA = "unknown_schema"
MALFORMED = "malformed"
NOT_AN_EVENT = "not_an_event"


class Record(Protocol):
    """What triage needs of a consumed record (a `confluent_kafka.Message` is one)."""

    def topic(self) -> str | None: ...
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...
    def value(self) -> bytes | None: ...


R = TypeVar("R", bound=Record)


class NotAnEvent(CodecError):
    """A record the codec reads, but not an event the projection folds."""

    def __init__(self, record_name: str) -> None:
        super().__init__(f"a {record_name} record is not an event the projection folds")
        self.record_name = record_name


@dataclass(frozen=True, slots=True)
class Hold:
    """A partition stopped at a record of an unknown writer schema."""

    topic: str
    partition: int
    offset: int
    fingerprint: bytes  # bytes 2..9 of the record, as on the wire

    @property
    def key(self) -> PartitionKey:
        return (self.topic, self.partition)

    def describe(self) -> str:
        return (f"{self.topic}[{self.partition}]@{self.offset} "
                f"(unknown writer schema fingerprint {self.fingerprint.hex()})")


@dataclass(frozen=True, slots=True)
class DeadLetter(Generic[R]):
    record: R
    error: CodecError
    kind: str  # MALFORMED or NOT_AN_EVENT


@dataclass(slots=True)
class Triage(Generic[R]):
    events: list[Event] = field(default_factory=list)
    dead_letters: list[DeadLetter[R]] = field(default_factory=list)
    holds: list[Hold] = field(default_factory=list)
    commit_offsets: dict[PartitionKey, int] = field(default_factory=dict)
    """Per partition, the offset to commit: past its last record dealt with, or the offset of
    the record that holds it (that record is read again by whoever reads the partition next)."""


def triage(records: Sequence[R], decode: Callable[[bytes], Decoded],
           held: Collection[PartitionKey] = ()) -> Triage[R]:
    """Sort a poll batch (records in offset order per partition, as the consumer returns them).

    Records of a partition in `held`, or after a hold found in this batch, are left out
    entirely: neither projected nor counted in `commit_offsets`.
    """
    out: Triage[R] = Triage()
    stopped = set(held)
    for record in records:
        topic, partition, offset = record.topic(), record.partition(), record.offset()
        if topic is None or partition is None or offset is None or offset < 0:
            continue  # not a record at an offset (a consume error): nothing to project or commit
        key = (topic, partition)
        if key in stopped:
            continue
        value = record.value()
        if value is None:  # a tombstone: the events topic is not compacted, nobody means one
            out.dead_letters.append(DeadLetter(record, MalformedRecord("no value"), MALFORMED))
            out.commit_offsets[key] = offset + 1
            continue
        try:
            decoded = decode(value)
        except UnknownFingerprint as exc:
            out.holds.append(Hold(topic, partition, offset, exc.fingerprint))
            out.commit_offsets[key] = offset
            stopped.add(key)
            continue
        except CodecError as exc:  # MalformedRecord, TruncatedRecord: no later deploy reads it
            out.dead_letters.append(DeadLetter(record, exc, MALFORMED))
        else:
            if decoded.record_name in fold.EVENT_TYPES:
                out.events.append(Event(decoded.record_name, decoded.value, partition, offset))
            else:
                out.dead_letters.append(
                    DeadLetter(record, NotAnEvent(decoded.record_name), NOT_AN_EVENT))
        out.commit_offsets[key] = offset + 1
    return out


def first_offsets(records: Sequence[Record],
                  skip: Collection[PartitionKey] = ()) -> dict[PartitionKey, int]:
    """Per partition (except those in `skip`), the first offset in `records`: where to rewind a
    batch that could not be written."""
    first: dict[PartitionKey, int] = {}
    for record in records:
        topic, partition, offset = record.topic(), record.partition(), record.offset()
        if topic is None or partition is None or offset is None or offset < 0:
            continue
        key = (topic, partition)
        if key not in skip:
            first[key] = min(first.get(key, offset), offset)
    return first


def readiness_reason(holds: Collection[Hold]) -> str | None:
    """Why the projector is not ready because of its holds, or None when it holds nothing."""
    if not holds:
        return None
    where = "; ".join(h.describe() for h in sorted(holds, key=lambda h: h.key))
    count = len(holds)
    return (f"holding {count} events partition{'s' if count > 1 else ''} at a record whose "
            f"writer schema this projector does not know: {where}; deploy a projector with the "
            "newer schemas to project them")
