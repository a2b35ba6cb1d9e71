"""The worker in-process on the real broker and database: its watchdog, and what happens to a
saga whose records cannot be written. (In-process, so a test can do behind the worker's back
what a bug would do, and set limits the command line does not offer.)"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace

import pytest
import sqlalchemy as sa
from confluent_kafka import TopicPartition
from harness import TopicReader, wait_until
from prometheus_client import REGISTRY
from test_blast_radius import _on_partition, other_tenants, publish

from consumer.participants.base import StepCall, StepOutcome
from consumer.participants.builtin import BuiltinParticipant
from consumer.worker import Worker, WorkerOptions
from provisioning.database import create_engine
from provisioning.settings import Settings
from provisioning.topics import TopicLayout


@pytest.fixture
def builtin(settings: Settings, migrated: sa.Engine) -> Iterator[BuiltinParticipant]:
    engine = create_engine(settings, pool_size=8, max_overflow=0)
    yield BuiltinParticipant(engine)
    engine.dispose()


class Running:
    def __init__(self, worker: Worker, wait_ready: bool = True) -> None:
        self.worker = worker
        self.wait_ready = wait_ready
        self.thread = threading.Thread(target=worker.run, name="worker-under-test")

    def __enter__(self) -> Worker:
        self.thread.start()
        if self.wait_ready:
            wait_until(lambda: self.worker.ready, 60, "the worker's first assignment")
        return self.worker

    def __exit__(self, *exc: object) -> None:
        self.worker.stop()
        self.thread.join(30)
        assert not self.thread.is_alive(), "the worker did not stop"


def worker_with(settings: Settings, group_id: str, participant: Callable[[StepCall], StepOutcome],
                **options: object) -> Worker:
    class Route:
        def call(self, call: StepCall) -> StepOutcome:
            return participant(call)

    route = Route()
    defaults = WorkerOptions(group_id=group_id, instance_id=f"w{uuid.uuid4().hex[:6]}",
                             stall_after_s=2.0, watchdog_interval_s=0.5)
    return Worker(settings, lambda call: route, replace(defaults, **options))


def stalls(topic: str) -> float:
    return REGISTRY.get_sample_value("provisioning_partition_stalls_total", {"topic": topic}) or 0


def test_the_watchdog_flags_a_partition_left_paused_but_not_one_held_back(
    settings: Settings, topics: TopicLayout, migrated: sa.Engine, group_id: str,
    builtin: BuiltinParticipant,
) -> None:
    def slow_for_some(call: StepCall) -> StepOutcome:
        if call.params.get("entityId", "").startswith("slow-"):
            time.sleep(4)
        return builtin.call(call)

    events = TopicReader(settings, topics.events)
    before = stalls(topics.commands)
    with Running(worker_with(settings, group_id, slow_for_some, max_in_flight=1)) as worker:
        # Held back on purpose: one slow saga fills the worker, the rest wait in Kafka for
        # longer than the stall time. That is flow control, not a stall.
        waiting = [*other_tenants(migrated, 1, prefix="slow"), *other_tenants(migrated, 3)]
        publish(settings, "ProvisionTenantRequest", *waiting)
        events.wait_for(lambda r: bool(r.terminal(waiting[0]["requestId"])), 30, "the slow one")
        assert worker.readiness()[0], worker.readiness()
        events.wait_for(lambda r: all(r.terminal(c["requestId"]) for c in waiting), 30,
                        "the ones held back")
        assert stalls(topics.commands) == before

        # A partition paused by mistake (what librdkafka's pause across a re-assignment did).
        partition = TopicPartition(topics.commands, 0)
        worker.consumer.pause([partition])
        stuck = _on_partition(migrated, settings, 0, 1)
        publish(settings, "ProvisionTenantRequest", *stuck)
        wait_until(lambda: not worker.readiness()[0], 10, "readiness false")
        ready, why = worker.readiness()
        assert f"{topics.commands}[0] (1 unread)" in why, why
        assert stalls(topics.commands) == before + 1

        worker.consumer.resume([partition])
        events.wait_for(lambda r: bool(r.terminal(stuck[0]["requestId"])), 30, "the stuck one")
        wait_until(lambda: worker.readiness()[0], 10, "readiness back")
    events.close()


def test_the_lag_of_each_assigned_partition_is_its_unread_records(
    settings: Settings, topics: TopicLayout, migrated: sa.Engine, group_id: str,
    builtin: BuiltinParticipant,
) -> None:
    """`provisioning_consumer_lag` (the ConsumerLag alert's input) for the worker: records
    waiting in each partition it owns. Its offsets commit inside transactions, which
    librdkafka's statistics never see; the watchdog's readings do."""
    def lag(partition: int) -> float | None:
        return REGISTRY.get_sample_value("provisioning_consumer_lag", {
            "group": group_id, "topic": topics.commands, "partition": str(partition)})

    gate = threading.Event()

    def gated(call: StepCall) -> StepOutcome:
        if call.params.get("entityId", "").startswith("slow-"):
            gate.wait(30)
        return builtin.call(call)

    events = TopicReader(settings, topics.events)
    with Running(worker_with(settings, group_id, gated, max_in_flight=1)):
        wait_until(lambda: all(lag(p) == 0 for p in range(settings.topic_partitions)), 10,
                   "a lag of 0 for every command partition of an idle worker")
        # One saga fills the worker; three more wait behind it in partition 0.
        slow = _on_partition(migrated, settings, 0, 1, prefix="slow")
        waiting = _on_partition(migrated, settings, 0, 3)
        publish(settings, "ProvisionTenantRequest", *slow)
        events.wait_for(lambda r: bool(r.by_key.get(slow[0]["requestId"])), 30, "the slow one")
        publish(settings, "ProvisionTenantRequest", *waiting)
        wait_until(lambda: lag(0) == 3, 10, "a lag of 3 in partition 0")
        assert lag(1) == lag(2) == 0
        gate.set()
        events.wait_for(lambda r: all(r.terminal(c["requestId"]) for c in [*slow, *waiting]),
                        30, "every saga")
        wait_until(lambda: lag(0) == 0, 10, "the lag of partition 0 back to 0")
    events.close()


def test_a_saga_whose_records_are_too_large_fails_alone_and_compensates(
    settings: Settings, topics: TopicLayout, migrated: sa.Engine, group_id: str,
    builtin: BuiltinParticipant,
) -> None:
    """Each output is within what a participant may answer, but together they make an event
    over the worker's record limit: the step fails for good (its work undone too), the
    transaction and every other saga go on."""

    def bloated(call: StepCall) -> StepOutcome:
        outcome = builtin.call(call)
        if call.step == "activate-services" and call.params["entityId"].startswith("bloated-"):
            padding = {f"note{i}": "n" * 150 for i in range(30)}
            return StepOutcome.succeeded(**outcome.output, **padding)
        return outcome

    events = TopicReader(settings, topics.events)
    with Running(worker_with(settings, group_id, bloated, max_record_bytes=4000)):
        [big] = other_tenants(migrated, 1, prefix="bloated")
        others = other_tenants(migrated, 3)
        publish(settings, "ProvisionTenantRequest", big, *others)
        ids = [c["requestId"] for c in (big, *others)]
        events.wait_for(lambda r: all(r.terminal(i) for i in ids), 60, "every saga's end")

    ended = {i: events.terminal(i)[0] for i in ids}
    assert {ended[c["requestId"]].record_name for c in others} == {"ProvisioningSucceeded"}
    failed = ended[big["requestId"]]
    assert failed.record_name == "ProvisioningFailedEvent"
    assert failed.value["failedStep"] == "activate-services"
    assert "over the limit of 4000" in failed.value["reason"], failed.value["reason"]
    undone = [r.value["step"] for r in events.by_key[big["requestId"]]
              if r.record_name == "ProvisioningStepCompensated"]
    assert undone == ["activate-services", "setup-billing", "create-tenant"]
    with migrated.connect() as conn:
        subscriptions = conn.execute(sa.text(
            "SELECT count(*) FROM tenant_service_subscriptions WHERE created_by_key = :k"),
            {"k": f"{big['requestId']}:1:activate-services"}).scalar_one()
    assert subscriptions == 0
    events.close()
