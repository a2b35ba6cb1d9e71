"""`provisioning worker --processes 2` on the real broker and database: two consumer-group
members under one supervisor run sagas to completion, one metrics port counts both members'
sagas, readiness waits for every member, a member killed with kill -9 comes back under its own
instance id and finishes the sagas of its partitions, and SIGTERM stops everything with exit
code 0. `--processes 1` stays one process, as before."""

from __future__ import annotations

import os
import re
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from harness import TopicReader, WorkerProcess, all_terminal, free_port, wait_until
from prometheus_client.parser import text_string_to_metric_families
from test_worker import _tenant_command

from consumer.participants.builtin.registry import add_entity
from producers.commands import CommandPublisher
from provisioning.settings import Settings
from provisioning.topics import TopicLayout

HAPPY = {"ProvisioningRequested", "ProvisioningStepStarted", "ProvisioningStepCompleted",
         "ProvisioningSucceeded"}


class Supervised:
    """A `provisioning worker --processes 2` with its metrics port, and its members' pids."""

    def __init__(self, worker: WorkerProcess, port: int) -> None:
        self.worker = worker
        self.url = f"http://127.0.0.1:{port}"

    def get(self, path: str) -> tuple[int | None, str]:
        try:
            response = httpx.get(self.url + path, timeout=5)
        except httpx.TransportError:
            return None, ""
        return response.status_code, response.text

    def ready(self) -> str | None:
        status, body = self.get("/readyz")
        return body if status == 200 else None

    def not_ready(self) -> str | None:
        status, body = self.get("/readyz")
        return body if status == 503 else None

    def members(self) -> dict[str, int]:
        """Instance id -> pid of each member process running now (from /proc)."""
        assert self.worker.process is not None
        pid = self.worker.process.pid
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except FileNotFoundError:
            return {}
        found = {}
        for child in children:
            try:
                argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
            except FileNotFoundError:
                continue
            instance = argv[argv.index(b"--instance-id") + 1].decode()
            found[instance] = int(child)
        return found

    def metric(self, name: str, **labels: str) -> float | None:
        _, text = self.get("/metrics")
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and sample.labels == labels:
                    return sample.value
        return None


def owners(readiness: str) -> dict[int, list[int]]:
    """Member index -> the partitions it owns, from the set's readiness text."""
    return {int(member): [int(p) for p in partitions.split(",") if p.strip()]
            for member, partitions in re.findall(r"process (\d+): owns partitions \[([\d, ]*)\]",
                                                 readiness)}


@pytest.fixture
def supervised(settings: Settings, topics: TopicLayout, migrated: sa.Engine, tmp_path: Path,
               group_id: str) -> Iterator[Supervised]:
    port = free_port()
    worker = WorkerProcess(settings, tmp_path, group_id, processes=2,
                           extra_args=("--metrics-port", str(port))).start()
    yield Supervised(worker, port)
    worker.stop(60)


def tenant_commands(engine: sa.Engine, count: int) -> list[dict]:
    run = uuid.uuid4().hex[:8]
    entities = [f"procs-{run}-{i}" for i in range(count)]
    for entity in entities:
        add_entity(engine, entity, entity)
    return [_tenant_command(entity) for entity in entities]


def publish(settings: Settings, commands: list[dict]) -> None:
    with CommandPublisher(settings) as publisher:
        for command in commands:
            publisher.publish("ProvisionTenantRequest", command)


def assert_each_succeeded_once(events: TopicReader, ids: list[str]) -> None:
    for request_id in ids:
        trail = events.by_key[request_id]
        terminal = events.terminal(request_id)
        assert [r.record_name for r in terminal] == ["ProvisioningSucceeded"], request_id
        names = {r.record_name for r in trail}
        # a step cut short by the kill may be retried (transient), nothing else
        assert names <= HAPPY | {"ProvisioningStepFailed"}, names
        assert all(r.value["transient"] for r in trail
                   if r.record_name == "ProvisioningStepFailed")


def test_two_processes_run_sagas_serve_one_port_and_stop_with_exit_zero(
    supervised: Supervised, settings: Settings, topics: TopicLayout, migrated: sa.Engine,
) -> None:
    # Ready only once both members are: the first 200 already names both.
    readiness = wait_until(supervised.ready, 120, "the set's readiness")
    assert sorted(owners(readiness)) == [0, 1], readiness

    # Each member reports once a second, so right after the second one joins the first may
    # still list a partition it has just handed over; within a few reports they settle.
    def settled() -> dict[int, list[int]] | None:
        owned = owners(supervised.ready() or "")
        claimed = sorted(p for ps in owned.values() for p in ps)
        return owned if sorted(owned) == [0, 1] and claimed == [0, 1, 2] else None

    owned = wait_until(settled, 30, "each partition owned by exactly one member")
    members = supervised.members()
    assert sorted(members) == [f"{supervised.worker.instance_id}-0",
                               f"{supervised.worker.instance_id}-1"]

    commands = tenant_commands(migrated, 30)
    ids = [c["requestId"] for c in commands]
    events = TopicReader(settings, topics.events)
    publish(settings, commands)
    events.wait_for(all_terminal(ids), 180, "every saga's terminal event")
    assert_each_succeeded_once(events, ids)
    partitions = {events.by_key[i][0].partition for i in ids}
    for member, its_partitions in owned.items():  # both members ran some of them
        assert partitions & set(its_partitions), (member, owned, partitions)

    # One port counts the sagas of both members (each counted only its own partitions').
    assert supervised.metric("provisioning_requests_total", workflow_type="tenant") == 30
    assert supervised.metric("provisioning_outcomes_total", workflow_type="tenant",
                             outcome="succeeded") == 30
    # Scrape-time gauges reach the port too, summed over the members (no pid label).
    wait_until(lambda: supervised.metric("provisioning_active_workflows",
                                         workflow_type="tenant") == 0, 10, "no active sagas")
    assert supervised.get("/healthz") == (200, "ok\n")
    events.close()

    assert supervised.worker.stop(60) == 0, supervised.worker.log_text()[-3000:]
    for pid in members.values():
        assert not Path(f"/proc/{pid}").exists(), f"member {pid} outlived its supervisor"
    log = supervised.worker.log_text()
    assert log.count('"message": "worker process stopped"') == 2
    assert '"exit": "exit code 0"' in log


def test_a_member_killed_with_kill_9_comes_back_under_its_instance_id_and_finishes_its_sagas(
    supervised: Supervised, settings: Settings, topics: TopicLayout, migrated: sa.Engine,
) -> None:
    readiness = wait_until(supervised.ready, 120, "the set's readiness")
    victim = f"{supervised.worker.instance_id}-0"
    victim_partitions = owners(readiness)[0]
    first_pid = supervised.members()[victim]

    commands = tenant_commands(migrated, 60)
    ids = [c["requestId"] for c in commands]
    events = TopicReader(settings, topics.events)
    publish(settings, commands)
    events.wait_for(lambda r: sum(1 for i in ids if r.terminal(i)) >= 5, 120, "a few sagas")
    os.kill(first_pid, signal.SIGKILL)
    killed_at = time.monotonic()
    unfinished = [i for i in ids if not events.terminal(i)]

    # The set is not ready while a member is down, and says which.
    down = wait_until(supervised.not_ready, 30, "readiness false after the kill")
    assert "process 0:" in down
    successor = wait_until(lambda: supervised.members().get(victim, first_pid) != first_pid
                           and supervised.members()[victim], 60, "member 0 restarted")
    wait_until(supervised.ready, 120, "the set ready again")
    events.wait_for(all_terminal(ids), 240, "every saga's terminal event")
    print(f"\nkill -9 of {victim} with {len(unfinished)}/60 sagas unfinished; all done "
          f"{time.monotonic() - killed_at:.1f} s after the kill")

    assert_each_succeeded_once(events, ids)
    on_victim = [i for i in ids if events.by_key[i][0].partition in victim_partitions]
    assert on_victim, "no saga landed on the killed member's partitions"
    assert successor != first_pid
    assert supervised.metric("provisioning_worker_member_restarts_total", member="0") == 1
    assert supervised.metric("provisioning_requests_total", workflow_type="tenant") >= 60
    events.close()
    assert supervised.worker.stop(60) == 0, supervised.worker.log_text()[-3000:]
    assert '"exit": "killed by SIGKILL"' in supervised.worker.log_text()


def test_one_process_is_a_plain_worker_without_a_supervisor(
    settings: Settings, topics: TopicLayout, tmp_path: Path, group_id: str,
) -> None:
    port = free_port()
    worker = WorkerProcess(settings, tmp_path, group_id, processes=1,
                           extra_args=("--metrics-port", str(port))).start()
    supervised = Supervised(worker, port)
    readiness = wait_until(supervised.ready, 120, "the worker's readiness")
    assert readiness.startswith("owns partitions"), readiness  # its own, not a set's
    assert supervised.members() == {}  # no member processes: it is the worker
    assert worker.stop() == 0, worker.log_text()[-3000:]
