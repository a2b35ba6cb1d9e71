"""kill -9 of a worker in the middle of a batch: nothing lost, nothing doubled, gapless trails."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import sqlalchemy as sa
from harness import TopicReader, WorkerProcess, all_terminal, wait_until
from test_worker import _tenant_command

from consumer.participants.builtin.registry import add_entity
from producers.commands import CommandPublisher
from provisioning.database import upgrade
from provisioning.settings import Settings
from provisioning.topics import TopicLayout

SAGAS = 500
HAPPY = {"ProvisioningRequested", "ProvisioningStepStarted", "ProvisioningStepCompleted",
         "ProvisioningSucceeded"}


def test_kill_dash_nine_mid_batch_then_restart(
    settings: Settings, topics: TopicLayout, db_engine: sa.Engine, tmp_path: Path,
    group_id: str,
) -> None:
    upgrade(db_engine)
    run = uuid.uuid4().hex[:8]
    entities = [f"crash-{run}-{i}" for i in range(SAGAS)]
    for entity in entities:
        add_entity(db_engine, entity, entity)
    commands = [_tenant_command(entity) for entity in entities]
    ids = [c["requestId"] for c in commands]
    events = TopicReader(settings, topics.events)

    first = WorkerProcess(settings, tmp_path, group_id, instance_id=f"a-{run}").start()
    with CommandPublisher(settings) as publisher:
        for command in commands:
            publisher.publish("ProvisionTenantRequest", command)
    events.wait_for(
        lambda r: sum(1 for i in ids if r.terminal(i)) >= SAGAS // 5, 120, "a fifth of the batch"
    )
    first.kill()
    done_at_kill = sum(1 for i in ids if events.terminal(i))

    second = WorkerProcess(settings, tmp_path, group_id, instance_id=f"b-{run}").start()
    started = time.monotonic()
    events.wait_for(all_terminal(ids), 240, "every saga's terminal event")
    recovery_s = time.monotonic() - started
    time.sleep(2)
    events.poll(1)
    assert second.stop() == 0, second.log_text()[-3000:]

    print(f"\nkill -9 after {done_at_kill}/{SAGAS} sagas; the rest finished "
          f"{recovery_s:.1f} s after the restart")
    retried = 0
    for request_id in ids:
        trail = events.by_key[request_id]
        assert len(events.terminal(request_id)) == 1, f"{request_id}: {len(trail)} events"
        assert events.terminal(request_id)[0].record_name == "ProvisioningSucceeded"
        sequences = [r.value["sequence"] for r in trail]
        assert sequences == list(range(1, len(trail) + 1)), f"{request_id}: {sequences}"
        names = [r.record_name for r in trail]
        assert names[0] == "ProvisioningRequested" and names.count("ProvisioningRequested") == 1
        # Beyond the happy path only transient retries may appear (steps that timed out under
        # load or were cut short by the kill), never a failure or a compensation.
        assert set(names) <= HAPPY | {"ProvisioningStepFailed"}, names
        assert all(r.value["transient"] for r in trail if r.record_name == "ProvisioningStepFailed")
        retried += names.count("ProvisioningStepFailed")
    print(f"transient step retries over the batch: {retried}")
    with db_engine.connect() as conn:
        tenants, accounts = conn.execute(sa.text(
            "SELECT count(DISTINCT t.id), count(b.id) FROM entities e "
            "JOIN tenants t ON t.entity_id = e.id "
            "LEFT JOIN billing_accounts b ON b.tenant_id = t.id "
            "WHERE e.external_id LIKE :prefix"), {"prefix": f"crash-{run}-%"}).one()
    assert (tenants, accounts) == (SAGAS, SAGAS)
    events.close()


def test_kill_dash_nine_after_eager_steps_ran_but_before_their_commit(
    settings: Settings, topics: TopicLayout, db_engine: sa.Engine, tmp_path: Path,
    group_id: str,
) -> None:
    """The window eager local steps open (consumer/checkpoint.py): the built-in participant
    has done every step of the sagas in PostgreSQL, none of it is committed in Kafka, and the
    worker dies. Its successor restores the sagas from before, runs the steps again under the
    same idempotency keys, and each saga ends once, with one tenant, its work not repeated."""
    upgrade(db_engine)
    run = uuid.uuid4().hex[:8]
    commands = [_tenant_command(f"eager-{run}-{i}") for i in range(20)]
    for command in commands:
        add_entity(db_engine, command["entityId"], command["entityId"])
    ids = [c["requestId"] for c in commands]
    events = TopicReader(settings, topics.events)
    # Transactions held open for 30 s: everything the first worker does stays uncommitted.
    first = WorkerProcess(settings, tmp_path, group_id, instance_id=f"a-{run}", extra_args=(
        "--commit-interval-ms", "30000", "--min-commit-interval-ms", "30000")).start()
    with CommandPublisher(settings) as publisher:
        for command in commands:
            publisher.publish("ProvisionTenantRequest", command)

    def admins() -> int:  # the last step's work, done in PostgreSQL
        with db_engine.connect() as conn:
            return conn.execute(sa.text(
                "SELECT count(*) FROM step_executions WHERE step = 'create-admin-role' "
                "AND request_id = ANY(:ids)"), {"ids": ids}).scalar_one()

    wait_until(lambda: admins() == len(ids), 25, "every saga's last step done in PostgreSQL")
    events.poll(1)
    assert not any(events.by_key.get(i) for i in ids), "nothing was to be committed yet"
    first.kill()

    second = WorkerProcess(settings, tmp_path, group_id, instance_id=f"b-{run}").start()
    events.wait_for(all_terminal(ids), 120, "every saga's end after the restart")
    time.sleep(1)
    events.poll(1)
    assert second.stop() == 0, second.log_text()[-3000:]

    for request_id in ids:
        trail = events.by_key[request_id]
        assert [r.record_name for r in events.terminal(request_id)] == ["ProvisioningSucceeded"]
        assert [r.value["sequence"] for r in trail] == list(range(1, len(trail) + 1))
    with db_engine.connect() as conn:
        tenants = conn.execute(sa.text(
            "SELECT count(DISTINCT t.id) FROM entities e JOIN tenants t ON t.entity_id = e.id "
            "WHERE e.external_id LIKE :prefix"), {"prefix": f"eager-{run}-%"}).scalar_one()
        executions = conn.execute(sa.text(
            "SELECT count(*), count(DISTINCT idempotency_key) FROM step_executions "
            "WHERE request_id = ANY(:ids)"), {"ids": ids}).one()
    assert tenants == len(ids)
    assert executions[0] == executions[1] == 5 * len(ids), "each step done once, by its key"
    events.close()
