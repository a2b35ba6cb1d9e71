"""The projector on the real broker and database: idempotent under redelivery, equal to the
state topic, and losing nothing to a kill -9 or a database outage."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from confluent_kafka import Consumer, Producer, TopicPartition
from harness import ServiceProcess, TopicReader, WorkerProcess, wait_until
from tcp_proxy import TcpProxy
from test_worker import _tenant_command

from consumer.participants.builtin.registry import add_entity
from producers.commands import CommandPublisher
from projection import store
from projection.models import events as events_table
from projection.models import requests as requests_table
from projection.projector import Projector, ProjectorOptions
from provisioning.database import create_engine
from provisioning.settings import Settings
from provisioning.topics import TopicLayout
from schemas import codec
from schemas.examples import EXAMPLES

HAPPY_STEPS = ("validate-entity", "create-tenant", "setup-billing", "activate-services",
               "create-admin-role")


def saga_trail(request_id: str, *, fail: bool = False) -> list[tuple[str, dict]]:
    """A tenant saga's events as the worker writes them (valid records, gapless sequence)."""
    t0 = int(time.time() * 1000)
    trail: list[tuple[str, dict]] = []

    def add(name: str, **fields: object) -> None:
        value = {**EXAMPLES[name], "requestId": request_id, "sequence": len(trail) + 1,
                 "occurredAt": t0 + len(trail), **fields}
        trail.append((name, value))

    add("ProvisioningRequested")
    steps = HAPPY_STEPS[:2] if fail else HAPPY_STEPS
    for step in steps:
        add("ProvisioningStepStarted", step=step)
        add("ProvisioningStepCompleted", step=step)
    if fail:
        add("ProvisioningFailedEvent", failedStep="setup-billing", reason="card declined")
    else:
        add("ProvisioningSucceeded", resourceId=f"tenant-{request_id[:8]}")
    return trail


def produce(settings: Settings, topic: str, trails: list[list[tuple[str, dict]]]) -> None:
    producer = Producer({**settings.kafka_config(), "partitioner": "murmur2_random"})
    for trail in trails:
        for name, value in trail:
            producer.produce(topic, key=value["requestId"].encode(),
                             value=codec.encode(name, value), headers=codec.headers_for(name))
    assert producer.flush(30) == 0


def snapshot(engine: sa.Engine, ids: list[str]) -> tuple[list[dict], int]:
    with engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(
            sa.select(requests_table).where(requests_table.c.request_id.in_(ids))
            .order_by(requests_table.c.request_id))]
        audit = conn.scalar(sa.select(sa.func.count()).select_from(events_table)
                            .where(events_table.c.request_id.in_(ids)))
    return rows, audit


def finished_count(engine: sa.Engine, ids: list[str]) -> int:
    with engine.connect() as conn:
        return conn.scalar(sa.select(sa.func.count()).select_from(requests_table).where(
            requests_table.c.request_id.in_(ids),
            requests_table.c.status.in_(("COMPLETED", "FAILED"))))


def project_until(projector: Projector, done: callable, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        assert time.monotonic() < deadline, "the projection did not catch up"
        projector.turn()


@pytest.fixture
def projector_factory(settings: Settings, migrated: sa.Engine) -> Iterator[callable]:
    made: list[Projector] = []

    def make(group: str, engine: sa.Engine = migrated, **options: object) -> Projector:
        projector = Projector(settings, engine, ProjectorOptions(group=group, **options))
        projector.subscribe()
        made.append(projector)
        return projector

    yield make
    for projector in made:
        projector.close()


def test_redelivered_events_change_no_row_and_add_no_audit_row(
    settings: Settings, topics: TopicLayout, migrated: sa.Engine, projector_factory: callable,
    group_id: str,
) -> None:
    ids = [str(uuid.uuid4()) for _ in range(20)]
    trails = [saga_trail(i, fail=n % 5 == 0) for n, i in enumerate(ids)]
    produce(settings, topics.events, trails)

    first = projector_factory(group_id)
    project_until(first, lambda: finished_count(migrated, ids) == len(ids))
    rows, audit = snapshot(migrated, ids)
    assert audit == sum(len(t) for t in trails)
    assert {r["status"] for r in rows} == {"COMPLETED", "FAILED"}
    assert all(r["last_sequence"] == len(t) for r, t in
               zip(rows, [trails[ids.index(str(r["request_id"]))] for r in rows], strict=True))

    # Everything again: a second group from the start is what a lost offset commit looks like.
    again = projector_factory(f"{group_id}-again")
    seen = 0
    while seen < audit:
        result = again.turn()
        seen += result.events if result else 0
    assert snapshot(migrated, ids) == (rows, audit)

    # And straight into the store: nothing applied, nothing audited.
    replay = [store.Event(name, value) for trail in trails for name, value in trail]
    result = store.apply_batch(migrated, replay)
    assert (result.applied, result.audited, result.finished) == (0, 0, ())


def test_the_projection_equals_the_state_topic(
    settings: Settings, topics: TopicLayout, migrated: sa.Engine, tmp_path: Path, group_id: str,
) -> None:
    run = uuid.uuid4().hex[:8]
    commands = []
    for i in range(30):
        entity = f"proj-{run}-{i}"
        if i % 6 != 0:  # every sixth entity is unknown: validate-entity fails it
            add_entity(migrated, entity, entity)
        commands.append(_tenant_command(entity))
    ids = [c["requestId"] for c in commands]
    worker = WorkerProcess(settings, tmp_path, group_id).start()
    projector = ServiceProcess(settings, tmp_path, ("projector", "--group", f"{group_id}-p")
                               ).start()
    try:
        with CommandPublisher(settings) as publisher:
            for command in commands:
                publisher.publish("ProvisionTenantRequest", command)
        wait_until(lambda: finished_count(migrated, ids) == len(ids), 90, "all 30 projected")
    finally:
        projector_exit = projector.stop()
        worker.stop()
    assert projector_exit == 0, projector.log_text()[-2000:]

    states = latest_states(settings, topics.state)
    rows, _ = snapshot(migrated, ids)
    assert len(rows) == 30 and sum(r["status"] == "FAILED" for r in rows) == 5
    for row in rows:
        state = states[str(row["request_id"])]
        assert (row["status"], row["run"], row["last_sequence"], row["tenant_id"],
                list(row["completed_steps"]), row["failed_step"], row["reason"],
                row["resource_id"], row["workflow_type"]) == (
            state["status"], state["run"], state["sequence"], state["tenantId"],
            list(state["completedSteps"]), state["failedStep"], state["reason"],
            state["resourceId"], state["workflowType"]), row["request_id"]


def latest_states(settings: Settings, topic: str) -> dict[str, dict]:
    consumer = Consumer({**settings.kafka_config(), "group.id": "unused",
                         "isolation.level": "read_committed", "enable.auto.commit": False})
    partitions = [TopicPartition(topic, p, 0) for p in range(settings.topic_partitions)]
    ends = {p.partition: consumer.get_watermark_offsets(p, timeout=10)[1] for p in partitions}
    consumer.assign(partitions)
    states: dict[str, dict] = {}

    def behind() -> bool:
        # position(), not the last offset seen: transaction markers take offsets too.
        return any(tp.offset < ends[tp.partition] for tp in consumer.position(partitions))

    deadline = time.monotonic() + 60
    while behind():
        assert time.monotonic() < deadline, "the state topic could not be read to its end"
        for message in consumer.consume(500, timeout=0.5):
            if not message.error() and message.value() is not None:
                states[message.key().decode()] = codec.decode(message.value()).value
    consumer.close()
    return states


def test_killing_the_projector_mid_batch_loses_nothing(
    settings: Settings, topics: TopicLayout, migrated: sa.Engine, tmp_path: Path, group_id: str,
) -> None:
    run = uuid.uuid4().hex[:8]
    commands = []
    for i in range(150):
        add_entity(migrated, f"projkill-{run}-{i}", "entity")
        commands.append(_tenant_command(f"projkill-{run}-{i}"))
    ids = [c["requestId"] for c in commands]
    worker = WorkerProcess(settings, tmp_path, group_id).start()
    args = ("projector", "--group", f"{group_id}-p", "--batch-size", "40")
    first = ServiceProcess(settings, tmp_path, args).start()
    second = ServiceProcess(settings, tmp_path, args)
    try:
        with CommandPublisher(settings) as publisher:
            for command in commands:
                publisher.publish("ProvisionTenantRequest", command)
        wait_until(lambda: finished_count(migrated, ids) >= 30, 120, "30 requests projected")
        first.kill()
        at_kill = finished_count(migrated, ids)
        second.start()
        wait_until(lambda: finished_count(migrated, ids) == len(ids), 180, "all 150 projected")
        assert second.stop() == 0, second.log_text()[-2000:]
    finally:
        first.kill()
        second.kill()
        worker.stop()
    print(f"\nprojector killed with {at_kill}/150 requests projected")

    trail = TopicReader(settings, topics.events)
    trail.wait_for(lambda r: all(r.terminal(i) for i in ids), 30, "the whole topic read")
    with migrated.connect() as conn:
        audit = conn.execute(sa.select(events_table.c.request_id, events_table.c.sequence)
                             .where(events_table.c.request_id.in_(ids))).all()
    by_request: dict[str, list[int]] = {}
    for request_id, sequence in audit:
        by_request.setdefault(str(request_id), []).append(sequence)
    for request_id in ids:
        expected = [r.value["sequence"] for r in trail.by_key[request_id]]
        assert sorted(by_request[request_id]) == expected, request_id
    trail.close()


def test_a_database_outage_is_retried_and_skips_no_event(
    settings: Settings, topics: TopicLayout, migrated: sa.Engine, projector_factory: callable,
    group_id: str,
) -> None:
    url = sa.make_url(settings.database_url_plain())
    proxy = TcpProxy(url.port)
    engine = create_engine(url.set(port=proxy.port).render_as_string(hide_password=False),
                           pool_size=2, max_overflow=0)
    projector = projector_factory(group_id, engine, db_retry_s=1.5, batch_size=20)
    before = [str(uuid.uuid4()) for _ in range(10)]
    during = [str(uuid.uuid4()) for _ in range(30)]
    try:
        produce(settings, topics.events, [saga_trail(i) for i in before])
        project_until(projector, lambda: finished_count(migrated, before) == 10)

        proxy.cut()
        produce(settings, topics.events, [saga_trail(i) for i in during])
        outage_ends = time.monotonic() + 4  # longer than db_retry_s: retries, then rewinds
        while time.monotonic() < outage_ends:
            projector.turn()
        assert finished_count(migrated, during) == 0
        proxy.restore()
        project_until(projector, lambda: finished_count(migrated, during) == 30, 60)
    finally:
        proxy.close()
        engine.dispose()
    rows, audit = snapshot(migrated, during)
    assert audit == 30 * len(saga_trail(during[0]))
    assert all(r["status"] == "COMPLETED" and r["last_sequence"] == 12 for r in rows)


def test_operator_views_show_failures_durations_and_stuck_requests(
    migrated: sa.Engine,
) -> None:
    stuck, failed = str(uuid.uuid4()), str(uuid.uuid4())
    workflow = f"viewtest-{uuid.uuid4().hex[:6]}"  # a workflow name only this test uses
    now = datetime.now(UTC)
    common = {"workflow_type": workflow, "requested_by": "ada", "run": 1,
              "payload_hash": "h", "params": {}, "completed_steps": [],
              "compensated_steps": [], "attempts": 1, "current_step": None,
              "failed_step": None, "reason": None, "finished_at": None}
    with migrated.begin() as conn:
        conn.execute(sa.insert(requests_table), [
            {**common, "request_id": stuck, "status": "IN_PROGRESS", "last_sequence": 2,
             "current_step": "allocate", "created_at": now - timedelta(hours=1),
             "updated_at": now - timedelta(hours=1)},
            {**common, "request_id": failed, "status": "FAILED", "last_sequence": 5,
             "failed_step": "check-quota", "reason": "quota exceeded",
             "created_at": now - timedelta(seconds=3), "updated_at": now,
             "finished_at": now},
        ])
    with migrated.begin() as conn:
        conn.execute(sa.text("SET LOCAL provisioning.stuck_after = '30 minutes'"))
        stuck_rows = conn.execute(sa.text(
            "SELECT request_id, current_step FROM provisioning_stuck_requests "
            "WHERE workflow_type = :w"), {"w": workflow}).all()
        failures = conn.execute(sa.text(
            "SELECT failed_step, reason, requests FROM provisioning_recent_failures "
            "WHERE workflow_type = :w"), {"w": workflow}).all()
        durations = conn.execute(sa.text(
            "SELECT status, requests, p50_seconds FROM provisioning_durations "
            "WHERE workflow_type = :w"), {"w": workflow}).all()
        conn.execute(sa.text("SET LOCAL provisioning.stuck_after = '2 hours'"))
        none_stuck = conn.execute(sa.text(
            "SELECT count(*) FROM provisioning_stuck_requests WHERE workflow_type = :w"),
            {"w": workflow}).scalar()
    assert [(str(r[0]), r[1]) for r in stuck_rows] == [(stuck, "allocate")]
    assert failures == [("check-quota", "quota exceeded", 1)]
    assert len(durations) == 1 and durations[0][:2] == ("FAILED", 1)
    assert 2.5 < durations[0][2] < 60
    assert none_stuck == 0
