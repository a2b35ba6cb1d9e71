"""A state partition that cannot be restored (its leader unknown to the worker, as after a
broker fault in the replicated chaos run, where a worker ended over it): only that partition's
sagas wait, the worker goes on with the others and restores it once it can be read, before
reading any of its commands. At an assignment and after a rewind (a fenced producer).

In-process, on the real broker and database; the restore of partition 0 is made to fail the
way the client reported it (a `TransientError` from `restore_partition`) for as long as the
test says."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from confluent_kafka import Producer
from harness import TopicReader, wait_until
from test_blast_radius import _on_partition, publish
from test_worker_liveness import Running, builtin, worker_with  # noqa: F401 - a fixture

import consumer.worker
from consumer.participants.builtin import BuiltinParticipant
from provisioning.errors import TransientError
from provisioning.settings import Settings
from provisioning.topics import TopicLayout

UNKNOWN_PARTITION = 'KafkaError{code=_UNKNOWN_PARTITION,val=-190,str="Local: Unknown partition"}'


class UnreadablePartition:
    """`restore_partition` failing for partition 0 while `unreadable` is set."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.unreadable = threading.Event()
        self.tries: list[float] = []
        real = consumer.worker.restore_partition

        def restore(client: Any, topic: str, partition: int, decode: Any, **kwargs: Any) -> Any:
            if partition == 0 and self.unreadable.is_set():
                self.tries.append(time.monotonic())
                raise TransientError(f"reading watermarks of {topic}[0]: {UNKNOWN_PARTITION}")
            return real(client, topic, partition, decode, **kwargs)

        monkeypatch.setattr(consumer.worker, "restore_partition", restore)


@pytest.fixture
def partition_0(monkeypatch: pytest.MonkeyPatch) -> Iterator[UnreadablePartition]:
    yield UnreadablePartition(monkeypatch)


def requested(events: TopicReader, request_id: str) -> int:
    return sum(1 for r in events.by_key.get(request_id, [])
               if r.record_name == "ProvisioningRequested")


def readable_again(events: TopicReader, worker: Any, partition_0: UnreadablePartition,
                   waiting: list[dict], finished: list[dict]) -> None:
    """Partition 0 readable again: its waiting saga runs, readiness is back, and the finished
    saga's command sent again meanwhile was answered from its restored state, not rerun."""
    partition_0.unreadable.clear()
    events.wait_for(lambda r: bool(r.terminal(waiting[0]["requestId"])), 60,
                    "partition 0's saga once its state could be read")
    wait_until(lambda: worker.readiness()[0], 10, "readiness back")
    time.sleep(1)
    events.poll(1)
    assert requested(events, finished[0]["requestId"]) == 1


def test_a_state_partition_unreadable_at_assignment_holds_only_its_own_sagas(
    settings: Settings, topics: TopicLayout, migrated: sa.Engine, group_id: str,
    builtin: BuiltinParticipant, partition_0: UnreadablePartition,  # noqa: F811
) -> None:
    events = TopicReader(settings, topics.events)
    finished = _on_partition(migrated, settings, 0, 1, prefix="finished")
    with Running(worker_with(settings, group_id, builtin.call)):
        publish(settings, "ProvisionTenantRequest", *finished)
        events.wait_for(lambda r: bool(r.terminal(finished[0]["requestId"])), 30, "a first saga")

    # Its successor cannot read state partition 0.
    partition_0.unreadable.set()
    successor = worker_with(settings, group_id, builtin.call)
    with Running(successor, wait_ready=False) as worker:
        wait_until(lambda: "not restored yet" in worker.readiness()[1], 60,
                   "readiness saying partition 0 is not restored")
        waiting = _on_partition(migrated, settings, 0, 1, prefix="waiting")
        others = [*_on_partition(migrated, settings, 1, 1),
                  *_on_partition(migrated, settings, 2, 1)]
        # The finished saga's command again: with its state restored it is answered, not rerun.
        publish(settings, "ProvisionTenantRequest", *waiting, *others, *finished)
        events.wait_for(lambda r: all(r.terminal(c["requestId"]) for c in others), 30,
                        "the other partitions' sagas")
        time.sleep(2)
        events.poll(1)
        assert not events.by_key.get(waiting[0]["requestId"]), "partition 0 was read unrestored"
        assert worker.readiness()[0] is False
        assert len(partition_0.tries) >= 3, partition_0.tries  # tried again, the worker up

        readable_again(events, worker, partition_0, waiting, finished)
        assert [r.record_name for r in events.terminal(waiting[0]["requestId"])] == [
            "ProvisioningSucceeded"]
    events.close()


def test_a_state_partition_unreadable_after_a_rewind_holds_only_its_own_sagas(
    settings: Settings, topics: TopicLayout, migrated: sa.Engine, group_id: str,
    builtin: BuiltinParticipant, partition_0: UnreadablePartition,  # noqa: F811
) -> None:
    events = TopicReader(settings, topics.events)
    finished = _on_partition(migrated, settings, 0, 1, prefix="finished")
    worker = worker_with(settings, group_id, builtin.call)
    with Running(worker):
        publish(settings, "ProvisionTenantRequest", *finished)
        events.wait_for(lambda r: bool(r.terminal(finished[0]["requestId"])), 30, "a first saga")

        # Another producer takes the worker's transactional id: its next commit is fenced,
        # and it rewinds (new producer, states restored) while partition 0 cannot be read.
        partition_0.unreadable.set()
        fencer = Producer({**settings.kafka_config(), "transactional.id":
                           f"{worker.options.group_id}-{worker.options.instance_id}"})
        fencer.init_transactions(30)
        trigger = _on_partition(migrated, settings, 1, 1, prefix="trigger")
        publish(settings, "ProvisionTenantRequest", *trigger)
        wait_until(lambda: partition_0.tries, 60, "the rewind's restore of partition 0")
        waiting = _on_partition(migrated, settings, 0, 1, prefix="waiting")
        others = _on_partition(migrated, settings, 2, 1)
        publish(settings, "ProvisionTenantRequest", *waiting, *others, *finished)
        events.wait_for(lambda r: all(r.terminal(c["requestId"]) for c in [*trigger, *others]),
                        60, "the other partitions' sagas")
        assert not events.by_key.get(waiting[0]["requestId"]), "partition 0 was read unrestored"
        assert "not restored yet" in worker.readiness()[1]

        readable_again(events, worker, partition_0, waiting, finished)
        for command in [*trigger, *others, *waiting]:
            assert [r.record_name for r in events.terminal(command["requestId"])] == [
                "ProvisioningSucceeded"], command["requestId"]
    events.close()
