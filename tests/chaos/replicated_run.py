"""Chaos on a replicated, secured cluster: brokers die under load, and the books must balance.

`run_replicated_chaos` runs on the tests' three-node cluster (TLS, SASL/SCRAM, ACLs;
`tests/secure_cluster.py`), every process under its own principal: workers (with
participants failing a fifth of their attempts, as in every chaos run), a projector, a
publisher feeding tenant sagas at a steady rate, and the hostile neighbour (as the operator, so
that its forgeries reach the worker as on an open cluster). While sagas flow, one fault at a
time, each followed by a calm spell:

1. kill -9 of the broker that leads the most partitions of the commands and state topics;
   restarted after a while, then every replica in sync again;
2. kill -9 of the node that is the active controller (the KRaft quorum's leader); likewise;
3. a rolling restart: each broker stopped (SIGTERM) and started in turn, the next one only
   once every partition has all its replicas in sync again.

For each fault it measures how long sagas stopped completing: the longest pause between two
completions (terminal events, as a read_committed reader sees them) from the fault's start to
the next fault, and when the first one came. The publisher stops once the faults are over and
at least `min_sagas` were sent; then the same books are checked as in every run (lost,
duplicated, audit gaps, projection mismatches, worker exits).
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa
from chaos_run import (
    Report,
    Workers,
    _accept_oversized_commands,
    _await_hostile,
    _check,
    _check_logs,
    _settle,
    _stopped,
)
from harness import ServiceProcess, TopicReader
from hostile_neighbour import HostileNeighbour
from secure_cluster import SecureCluster
from test_worker import _tenant_command

from producers.commands import CommandPublisher
from provisioning.devservices.kafka_health import leaders, wait_in_sync
from provisioning.topics import TopicLayout


@dataclass
class Fault:
    name: str
    started: float  # time.monotonic()
    note: str = ""
    first_completion_s: float | None = None  # after the start
    longest_pause_s: float | None = None  # from the start to the next fault


@dataclass
class Completions:
    """When each saga's end became visible to a read_committed reader."""

    times: list[float] = field(default_factory=list)
    seen: int = 0

    def observe(self, events: TopicReader) -> None:
        now = time.monotonic()
        for record in events.records[self.seen:]:
            if record.record_name in ("ProvisioningSucceeded", "ProvisioningFailedEvent"):
                self.times.append(now)
        self.seen = len(events.records)


def run_replicated_chaos(cluster: SecureCluster, engine: sa.Engine, log_dir: Path,
                         min_sagas: int = 1000, workers: int = 3, seed: int | None = None,
                         timeout_s: float = 2400, rate_per_s: float = 6.0,
                         calm_s: float = 30.0, down_s: float = 20.0) -> tuple[Report,
                                                                               list[Fault]]:
    seed = random.SystemRandom().randrange(2**32) if seed is None else seed
    run = uuid.uuid4().hex[:8]
    prefix, group = f"chaos{run}", f"chaos-{run}"
    cluster.prepare(prefix, "--group", f"worker={group}", "--group", f"projector={group}-p")
    operator = cluster.settings("operator", prefix)
    _accept_oversized_commands(operator)
    report = Report(sagas=0)
    report.notes.append(f"seed {seed} (the order of the rolling restart; faults are fixed)")
    pool = Workers(cluster.settings("worker", prefix), log_dir, max_in_flight=100, group=group)
    for _ in range(workers):
        pool.add()
    projector = ServiceProcess(cluster.settings("projector", prefix), log_dir,
                               ("projector", "--group", f"{group}-p")).start()
    events = TopicReader(operator, TopicLayout(prefix).events)
    completions = Completions()
    feeder = Feeder(cluster, engine, prefix, rate_per_s)
    neighbour = HostileNeighbour(operator, engine, feeder.ids, _tenant_command)
    faults: list[Fault] = []
    injector = threading.Thread(target=_inject_faults, name="faults", daemon=True, args=(
        cluster, prefix, faults, random.Random(seed), calm_s, down_s, report))
    deadline = time.monotonic() + timeout_s
    try:
        feeder.start()
        _wait(lambda: len(feeder.ids) >= 20, deadline, events, completions, report)
        neighbour.start()
        injector.start()
        _wait(lambda: not injector.is_alive() and len(feeder.ids) >= min_sagas, deadline,
              events, completions, report, feeder=feeder)
        feeder.stop()
        ids = list(feeder.ids)
        report.sagas = len(ids)
        _wait(lambda: all(events.terminal(i) for i in ids), deadline, events, completions,
              report)
        neighbour.stop()
        _await_hostile(report, events, neighbour, deadline, log_dir)
        _settle(events)
        report.worker_exits = len(pool.exited())
        report.notes += [f"{i} exited by itself" for i in pool.exited()]
        _stopped(report, pool)
        _check(report, events, ids, feeder.commands, engine, operator)
        _check_logs(report, log_dir, operator)
        _check_scram_passwords(report, log_dir, cluster)
        _measure(faults, completions.times, time.monotonic())
    finally:
        feeder.stop()
        neighbour.stop()
        pool.stop()
        projector.stop()
        events.close()
        cluster.kafka.start()  # whatever a failed run left stopped
    return report, faults


class Feeder:
    """Publishes tenant sagas as the publisher principal at a steady rate, until stopped."""

    def __init__(self, cluster: SecureCluster, engine: sa.Engine, prefix: str,
                 rate_per_s: float) -> None:
        self._settings = cluster.settings("publisher", prefix)
        self._engine = engine
        self._interval_s = 1 / rate_per_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="feeder", daemon=True)
        self.ids: list[str] = []
        self.commands: list[dict] = []
        self.errors: list[str] = []

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(60)

    def _run(self) -> None:
        run = uuid.uuid4().hex[:6]
        with CommandPublisher(self._settings) as publisher:
            batch = 0
            while not self._stop.wait(self._interval_s * 10):
                commands = [_tenant_command(f"chaos-{run}-{batch}-{i}") for i in range(10)]
                batch += 1
                with self._engine.begin() as conn:
                    conn.execute(sa.text("INSERT INTO entities (id, external_id, name) VALUES "
                                         "(gen_random_uuid(), :e, :e)"),
                                 [{"e": c["entityId"]} for c in commands])
                for command in commands:
                    publisher.publish("ProvisionTenantRequest", command)
                try:
                    # Delivered (acks=all) before the saga is counted; within librdkafka's
                    # message timeout (300 s) each one is delivered or reported failed.
                    publisher.flush(310)
                except Exception as exc:  # noqa: BLE001 - noted; the caller was told
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                self.commands += commands
                self.ids += [c["requestId"] for c in commands]


def _wait(done: Callable[[], bool], deadline: float, events: TopicReader,
          completions: Completions, report: Report, feeder: Feeder | None = None) -> None:
    while not done():
        assert time.monotonic() < deadline, f"{report.line()} (timed out)\n{events.describe()}"
        events.poll(0.5)
        completions.observe(events)
        if feeder is not None and feeder.errors:
            report.notes.append(f"publisher: {feeder.errors[-1]}")
            feeder.errors.clear()


def _inject_faults(cluster: SecureCluster, prefix: str, faults: list[Fault],
                   rng: random.Random, calm_s: float, down_s: float, report: Report) -> None:
    kafka, admin, layout = cluster.kafka, cluster.admin(), TopicLayout(prefix)
    time.sleep(calm_s)

    def down_and_back(name: str, node: int, note: str) -> None:
        fault = Fault(name, time.monotonic(), note)
        faults.append(fault)
        kafka.kill_node(node)
        time.sleep(down_s)
        kafka.start_node(node)
        back = time.monotonic() - fault.started
        in_sync = wait_in_sync(admin)
        fault.note += (f"; killed, started again after {down_s:.0f} s, serving after "
                       f"{back:.0f} s, every replica in sync {in_sync:.0f} s later")
        report.faults += 1
        time.sleep(calm_s)

    counts = leaders(admin, [layout.commands, layout.state])
    node, led = counts.most_common(1)[0]
    down_and_back("kill -9 of the leader of the most command and state partitions", node,
                  f"node {node} led {led} of {sum(counts.values())} command and state "
                  "partitions")
    controller = kafka.active_controller()
    assert controller is not None, "no active controller found"
    down_and_back("kill -9 of the active controller", controller,
                  f"node {controller} led the controller quorum")
    order = [n.node_id for n in kafka.nodes]
    rng.shuffle(order)
    for node in order:
        fault = Fault(f"rolling restart, node {node}", time.monotonic())
        faults.append(fault)
        kafka.stop_node(node)
        kafka.start_node(node)
        back = time.monotonic() - fault.started
        in_sync = wait_in_sync(admin)
        fault.note = (f"stopped (SIGTERM) and serving again after {back:.0f} s, every replica "
                      f"in sync {in_sync:.0f} s later")
        report.faults += 1
        time.sleep(calm_s / 2)


def _measure(faults: list[Fault], completions: list[float], end: float) -> None:
    """Each fault's window runs to the next fault's start; the last one's to the last
    completion (after it, no saga was left to complete)."""
    last = completions[-1] if completions else end
    for index, fault in enumerate(faults):
        until = faults[index + 1].started if index + 1 < len(faults) else last
        inside = [t for t in completions if fault.started <= t < until]
        if inside:
            fault.first_completion_s = inside[0] - fault.started
        marks = [fault.started, *inside, until]
        fault.longest_pause_s = max(b - a for a, b in zip(marks, marks[1:], strict=False))


def _check_scram_passwords(report: Report, log_dir: Path, cluster: SecureCluster) -> None:
    secrets = [cluster.env(r)["PROVISIONING_KAFKA_SASL_PASSWORD"]
               for r in ("publisher", "worker", "projector", "api", "participant", "operator")]
    for log in sorted(log_dir.glob("*.log")):
        text = log.read_bytes()
        if any(secret.encode() in text for secret in secrets):
            report.secrets_in_logs += 1
            report.notes.append(f"{log.name}: contains a SCRAM password")


def recovery_lines(faults: list[Fault]) -> list[str]:
    lines = []
    for fault in faults:
        first = ("none" if fault.first_completion_s is None
                 else f"{fault.first_completion_s:.1f} s")
        pause = "n/a" if fault.longest_pause_s is None else f"{fault.longest_pause_s:.1f} s"
        lines.append(f"recovery: {fault.name}: sagas completed again after {pause} "
                     f"(the longest pause in completions from the fault to the next; the "
                     f"first completion came after {first}); {fault.note}")
    return lines
