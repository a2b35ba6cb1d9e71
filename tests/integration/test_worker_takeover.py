"""Two workers in one group; one is killed: the other takes over its partitions and finishes."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import sqlalchemy as sa
from harness import TopicReader, WorkerProcess, all_terminal
from test_worker import _tenant_command

from consumer.participants.builtin.registry import add_entity
from producers.commands import CommandPublisher
from provisioning.database import upgrade
from provisioning.settings import Settings
from provisioning.topics import TopicLayout

SAGAS = 200


def test_survivor_finishes_the_killed_workers_sagas(
    settings: Settings, topics: TopicLayout, db_engine: sa.Engine, tmp_path: Path,
    group_id: str,
) -> None:
    upgrade(db_engine)
    run = uuid.uuid4().hex[:8]
    commands = []
    for i in range(SAGAS):
        entity = f"takeover-{run}-{i}"
        add_entity(db_engine, entity, entity)
        commands.append(_tenant_command(entity))
    ids = [c["requestId"] for c in commands]
    first = WorkerProcess(settings, tmp_path, group_id, instance_id=f"a-{run}").start()
    second = WorkerProcess(settings, tmp_path, group_id, instance_id=f"b-{run}").start()
    events = TopicReader(settings, topics.events)
    time.sleep(5)  # both members joined and own partitions
    with CommandPublisher(settings) as publisher:
        for command in commands:
            publisher.publish("ProvisionTenantRequest", command)
    events.wait_for(lambda r: sum(1 for i in ids if r.terminal(i)) >= SAGAS // 10, 120,
                    "the first sagas")

    first.kill()
    events.wait_for(all_terminal(ids), 180, "every saga finished by the survivor")
    events.poll(1)

    assert second.alive()
    assert "partitions assigned" in second.log_text()
    for request_id in ids:
        assert len(events.terminal(request_id)) == 1
        trail = events.by_key[request_id]
        assert [r.value["sequence"] for r in trail] == list(range(1, len(trail) + 1))
    assert second.stop() == 0
    events.close()


def test_two_workers_with_one_transactional_id_leave_one_running_and_every_saga_once(
    settings: Settings, topics: TopicLayout, db_engine: sa.Engine, tmp_path: Path,
    group_id: str,
) -> None:
    """A fencing alone renews the producer (a broker failover does that to a transaction that
    outlives its timeout); fenced again and again, a worker knows another process has its
    transactional id, and stops."""
    upgrade(db_engine)
    run = uuid.uuid4().hex[:8]
    twins = [WorkerProcess(settings, tmp_path, group_id, instance_id=f"twin-{run}")
             for _ in range(2)]
    for twin, name in zip(twins, ("one", "two"), strict=True):
        twin.name = name  # a log file each, though one instance id
        twin.start()
    events = TopicReader(settings, topics.events)

    # The twins fence each other only while both have work: an idle producer is never told.
    # So sagas keep coming, a wave every two seconds, until one of them has stopped.
    ids: list[str] = []
    deadline = time.monotonic() + 180
    with CommandPublisher(settings) as publisher:
        while all(t.alive() for t in twins) and time.monotonic() < deadline:
            for _ in range(10):
                entity = f"twin-{run}-{len(ids)}"
                add_entity(db_engine, entity, entity)
                command = _tenant_command(entity)
                publisher.publish("ProvisionTenantRequest", command)
                ids.append(command["requestId"])
            publisher.flush()
            time.sleep(2)
    events.wait_for(all_terminal(ids), 180, "every saga finished")
    events.poll(1)

    stopped = [t for t in twins if not t.alive()]
    assert len(stopped) == 1, [t.log_text()[-2000:] for t in twins]
    assert "another process uses this transactional id" in stopped[0].log_text()
    for request_id in ids:
        assert len(events.terminal(request_id)) == 1
    running = next(t for t in twins if t.alive())
    assert running.stop() == 0
    events.close()
