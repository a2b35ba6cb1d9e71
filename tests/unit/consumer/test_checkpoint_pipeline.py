"""The commit runs while the worker goes on (consumer/checkpoint.py): what is produced,
consumed and held meanwhile belongs to the next transaction, never to the one committing."""

from __future__ import annotations

import threading

import pytest
from confluent_kafka import KafkaError, KafkaException

from consumer.checkpoint import Checkpoint, TransactionAborted


class RecordingProducer:
    """Keeps the order of transactional calls and records; its commit waits for `go`."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.produced: list[tuple] = []
        self.go = threading.Event()
        self.fail_commit: KafkaError | None = None

    def begin_transaction(self) -> None:
        self.calls.append(("begin",))

    def produce(self, topic: str, value: bytes | None = None, key: bytes | None = None,
                partition: int = -1, callback: object = None, on_delivery: object = None,
                timestamp: int = 0, headers: object = None) -> None:  # as cimpl.pyi says
        self.calls.append(("produce", topic, value))
        self.produced.append((topic, key, value, partition, headers, callback or on_delivery,
                              timestamp))

    def flush(self, *_: object) -> int:
        return 0

    def poll(self, *_: object) -> int:
        return 0

    def send_offsets_to_transaction(self, positions: list, *_: object) -> None:
        self.calls.append(("offsets", sorted((tp.topic, tp.partition, tp.offset)
                                             for tp in positions)))

    def commit_transaction(self, *_: object) -> None:
        self.go.wait(5)
        if self.fail_commit is not None:
            raise KafkaException(self.fail_commit)
        self.calls.append(("commit",))

    def abort_transaction(self, *_: object) -> None:
        self.calls.append(("abort",))


class Group:
    def consumer_group_metadata(self) -> object:
        return object()


@pytest.fixture
def producer() -> RecordingProducer:
    return RecordingProducer()


@pytest.fixture
def checkpoint(producer: RecordingProducer) -> Checkpoint:
    return Checkpoint(producer, Group(), timeout_s=1, hang_margin_s=1)  # type: ignore[arg-type]


def test_work_done_while_a_commit_runs_goes_into_the_next_transaction(
    producer: RecordingProducer, checkpoint: Checkpoint,
) -> None:
    checkpoint.begin()
    checkpoint.produce("events", {"value": b"first"})
    checkpoint.consumed("commands", 0, 9)
    checkpoint.hold(0, "first-held")
    checkpoint.start_commit()

    # The commit waits for the broker; the worker goes on.
    checkpoint.produce("events", {"value": b"second"})
    checkpoint.consumed("commands", 0, 10)
    checkpoint.hold(0, "second-held")
    assert checkpoint.settle(wait=False) is None, "still committing"
    assert ("produce", "events", b"second") not in producer.calls

    producer.go.set()
    first = checkpoint.settle(wait=True)
    assert first is not None and first.held == [(0, "first-held")] and first.offsets == 1
    assert (first.records, first.record_bytes) == (1, len(b"first")), "the later one is the next's"
    assert not checkpoint.open
    checkpoint.begin()
    assert checkpoint.commit() == [(0, "second-held")]

    assert producer.calls == [
        ("begin",), ("produce", "events", b"first"), ("offsets", [("commands", 0, 10)]),
        ("commit",),
        ("begin",), ("produce", "events", b"second"), ("offsets", [("commands", 0, 11)]),
        ("commit",),
    ]


def test_a_failed_commit_is_aborted_with_what_waited_for_the_next_one(
    producer: RecordingProducer, checkpoint: Checkpoint,
) -> None:
    producer.fail_commit = KafkaError(KafkaError._STATE, "abortable", txn_requires_abort=True)
    checkpoint.begin()
    checkpoint.produce("events", {"value": b"first"})
    checkpoint.start_commit()
    checkpoint.produce("events", {"value": b"second"})
    checkpoint.hold(0, "second-held")
    producer.go.set()

    with pytest.raises(TransactionAborted):
        checkpoint.settle(wait=True)
    assert checkpoint.open, "left for abort()"
    checkpoint.abort()

    assert producer.calls[-1] == ("abort",)
    assert not checkpoint.open and not checkpoint.pending and not checkpoint.held
    assert ("produce", "events", b"second") not in producer.calls


def test_an_abort_while_a_commit_runs_waits_for_it_first(
    producer: RecordingProducer, checkpoint: Checkpoint,
) -> None:
    checkpoint.begin()
    checkpoint.consumed("commands", 1, 3)
    checkpoint.start_commit()
    checkpoint.produce("events", {"value": b"later"})
    threading.Timer(0.2, producer.go.set).start()

    checkpoint.abort()

    # The commit ended before anything else touched the producer; nothing was left to abort.
    assert producer.calls == [("begin",), ("offsets", [("commands", 1, 4)]), ("commit",)]
    assert not checkpoint.open and checkpoint.committing is None and not checkpoint.pending


def test_every_part_of_a_record_reaches_the_producer(producer: RecordingProducer) -> None:
    def delivered(*_: object) -> None: ...

    checkpoint = Checkpoint(producer, Group(), timeout_s=1, hang_margin_s=1,  # type: ignore[arg-type]
                            on_delivery=delivered)
    checkpoint.begin()
    headers = [("event-type", b"ProvisioningSucceeded")]
    checkpoint.produce("events", {"key": b"r-1", "value": b"v", "headers": headers})
    checkpoint.produce("state", {"key": b"r-1", "value": None, "partition": 3})

    assert producer.produced == [
        # No partition: the partitioner's choice by key (librdkafka's RD_KAFKA_PARTITION_UA).
        ("events", b"r-1", b"v", -1, headers, delivered, 0),
        ("state", b"r-1", None, 3, None, delivered, 0),  # a tombstone to its saga's partition
    ]
