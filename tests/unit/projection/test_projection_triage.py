"""Triage of a poll batch: events projected, unreadable records dead-lettered, and a record of an
unknown writer schema holding its partition with nothing at or after it projected or committed."""

from __future__ import annotations

from dataclasses import dataclass

from projection.triage import (
    MALFORMED,
    NOT_AN_EVENT,
    Hold,
    NotAnEvent,
    first_offsets,
    readiness_reason,
    triage,
)
from schemas import codec
from schemas.errors import MalformedRecord, TruncatedRecord
from schemas.examples import EXAMPLES

TOPIC = "t.provisioning.events"
RID = "3f6c2a9e-8d41-4b7a-9c55-1e2f3a4b5c6d"


@dataclass
class FakeRecord:
    _partition: int
    _offset: int
    _value: bytes | None
    _topic: str = TOPIC

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes | None:
        return self._value


def event(sequence: int) -> bytes:
    return codec.encode("ProvisioningStepStarted", {**EXAMPLES["ProvisioningStepStarted"],
                                                    "requestId": RID, "sequence": sequence})


def unknown_fingerprint(data: bytes) -> bytes:
    """The record with bytes 2..9 (the writer schema's fingerprint) changed."""
    return data[:2] + bytes(b ^ 0xFF for b in data[2:10]) + data[10:]


def test_events_are_projected_and_every_partition_committed_past_its_last_record() -> None:
    records = [FakeRecord(0, 5, event(1)), FakeRecord(1, 7, event(2)), FakeRecord(0, 6, event(3))]

    out = triage(records, codec.decode)

    assert [(e.partition, e.offset, e.sequence) for e in out.events] == [
        (0, 5, 1), (1, 7, 2), (0, 6, 3)]
    assert out.dead_letters == [] and out.holds == []
    assert out.commit_offsets == {(TOPIC, 0): 7, (TOPIC, 1): 8}


def test_an_unknown_fingerprint_holds_its_partition_at_that_record() -> None:
    held_bytes = unknown_fingerprint(event(2))
    records = [FakeRecord(0, 10, event(1)), FakeRecord(0, 11, held_bytes),
               FakeRecord(1, 3, event(9)), FakeRecord(0, 12, event(3)),
               FakeRecord(0, 13, b"\x00garbage"), FakeRecord(1, 4, event(10))]

    out = triage(records, codec.decode)

    # Before the hold: projected. At and after it on partition 0: nothing, not even a dead
    # letter. Partition 1 goes on.
    assert [(e.partition, e.offset) for e in out.events] == [(0, 10), (1, 3), (1, 4)]
    assert out.dead_letters == []
    assert out.holds == [Hold(TOPIC, 0, 11, held_bytes[2:10])]
    assert out.commit_offsets == {(TOPIC, 0): 11, (TOPIC, 1): 5}


def test_a_hold_on_the_first_record_commits_exactly_that_offset() -> None:
    out = triage([FakeRecord(2, 40, unknown_fingerprint(event(1)))], codec.decode)

    assert out.events == [] and out.commit_offsets == {(TOPIC, 2): 40}
    assert [(h.partition, h.offset) for h in out.holds] == [(2, 40)]


def test_records_of_a_partition_held_already_are_left_out_entirely() -> None:
    records = [FakeRecord(0, 11, event(2)), FakeRecord(1, 3, event(9))]

    out = triage(records, codec.decode, held={(TOPIC, 0)})

    assert [(e.partition, e.offset) for e in out.events] == [(1, 3)]
    assert out.commit_offsets == {(TOPIC, 1): 4}


def test_malformed_records_and_records_that_are_not_events_are_dead_lettered() -> None:
    state = codec.encode("SagaState", EXAMPLES["SagaState"])
    command = codec.encode("ProvisionTenantRequest", EXAMPLES["ProvisionTenantRequest"])
    garbage_body = event(1)[:10] + b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"
    records = [FakeRecord(0, 0, garbage_body), FakeRecord(0, 1, b"\xc3\x01\x00"),
               FakeRecord(0, 2, state), FakeRecord(0, 3, command), FakeRecord(0, 4, None),
               FakeRecord(0, 5, event(2))]

    out = triage(records, codec.decode)

    letters = [(d.record.offset(), type(d.error), d.kind) for d in out.dead_letters]
    assert letters == [(0, MalformedRecord, MALFORMED), (1, TruncatedRecord, MALFORMED),
                       (2, NotAnEvent, NOT_AN_EVENT), (3, NotAnEvent, NOT_AN_EVENT),
                       (4, MalformedRecord, MALFORMED)]
    assert "SagaState" in str(out.dead_letters[2].error)
    assert [e.offset for e in out.events] == [5]
    assert out.holds == [] and out.commit_offsets == {(TOPIC, 0): 6}


def test_first_offsets_rewind_every_partition_but_the_held_ones() -> None:
    records = [FakeRecord(0, 8, b""), FakeRecord(1, 3, b""), FakeRecord(0, 7, b""),
               FakeRecord(2, 1, b"")]

    assert first_offsets(records, skip={(TOPIC, 2)}) == {(TOPIC, 0): 7, (TOPIC, 1): 3}


def test_readiness_names_each_held_partition_offset_and_fingerprint() -> None:
    assert readiness_reason([]) is None
    holds = [Hold(TOPIC, 2, 40, bytes.fromhex("0102030405060708")),
             Hold(TOPIC, 0, 11, bytes.fromhex("a1a2a3a4a5a6a7a8"))]

    reason = readiness_reason(holds)

    assert reason is not None and reason.startswith("holding 2 events partitions")
    assert reason.index(f"{TOPIC}[0]@11") < reason.index(f"{TOPIC}[2]@40")
    assert "a1a2a3a4a5a6a7a8" in reason and "0102030405060708" in reason
