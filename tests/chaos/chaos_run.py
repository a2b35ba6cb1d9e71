"""Sagas under faults, and the books checked afterwards.

`run_chaos` starts workers (with participants that fail a share of attempts, and a limit on
sagas in flight so that flow control holds commands back under the burst), a projector, and
publishes N tenant sagas; while they run, a hostile neighbour (`hostile_neighbour.py`) keeps
sending oversized commands, forbidden reply topics, forged step replies and sagas whose
participant answers unrecordable text, and the faults given are injected, each once the batch
has got that far: kill -9 of a worker (restarted under a new id), a worker added, the broker
stopped and started, PostgreSQL stopped for a while. Then it waits for every saga's end and
counts what must be zero: sagas lost (no terminal event), duplicated (two terminal events in
one run, or two tenants for one entity), audit gaps (a trail that is not 1..n), projection
rows that differ from the state topic, worker processes that exited by themselves; and the
share of transiently failed steps that completed on a retry.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource
from hostile_neighbour import HostileNeighbour

from producers.commands import CommandPublisher
from provisioning.devservices import LocalServices
from provisioning.devservices.process import stop_pid
from provisioning.settings import Settings

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "integration"))

from harness import ROOT, ServiceProcess, TopicReader, process_env  # noqa: E402
from test_projector import latest_states, snapshot  # noqa: E402
from test_worker import _tenant_command  # noqa: E402

FAULTS = ("kill", "add", "broker", "postgres")
# How long the hostile neighbour's last sagas may take to end once it stopped sending: the
# compensation of an unrecordable success retries for up to about 70 s (chaos_worker.py).
HOSTILE_END_S = 180


@dataclass
class Report:
    sagas: int
    faults: int = 0
    lost: int = 0
    duplicated: int = 0
    audit_gaps: int = 0
    projection_mismatches: int = 0
    retried_steps: int = 0
    retried_then_completed: int = 0
    secrets_in_logs: int = 0  # log files of the run that contain the database password
    hostile: int = 0  # hostile records the neighbour sent
    worker_exits: int = 0  # worker processes that ended without being killed or stopped
    stop_hangs: int = 0  # workers still running 30 s after SIGTERM
    notes: list[str] = field(default_factory=list)

    @property
    def retry_success(self) -> float:
        return self.retried_then_completed / self.retried_steps if self.retried_steps else 1.0

    def line(self) -> str:
        return (f"chaos: sagas={self.sagas} faults={self.faults} lost={self.lost} "
                f"duplicated={self.duplicated} audit_gaps={self.audit_gaps} "
                f"projection_mismatches={self.projection_mismatches} "
                f"retry_success={self.retry_success:.3f} hostile={self.hostile} "
                f"worker_exits={self.worker_exits} stop_hangs={self.stop_hangs}")


@dataclass
class Workers:
    settings: Settings
    log_dir: Path
    max_in_flight: int = 10_000
    group: str = field(default_factory=lambda: f"chaos-{uuid.uuid4().hex[:8]}")
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    killed: set[str] = field(default_factory=set)

    def add(self) -> str:
        instance = f"w{len(self.processes)}-{uuid.uuid4().hex[:4]}"
        log = (self.log_dir / f"chaos-worker-{instance}.log").open("ab")
        self.processes[instance] = subprocess.Popen(
            [sys.executable, str(HERE / "chaos_worker.py"), "--group", self.group,
             "--instance", instance, "--max-in-flight", str(self.max_in_flight)],
            env=process_env(self.settings), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        return instance

    def kill_one(self, rng: random.Random) -> str:
        alive = [i for i, p in self.processes.items() if p.poll() is None]
        victim = rng.choice(alive)
        self.processes[victim].send_signal(signal.SIGKILL)
        self.processes[victim].wait(10)
        self.killed.add(victim)
        return victim

    def exited(self) -> list[str]:
        """Workers that ended by themselves (not killed here, not yet stopped)."""
        return [i for i, p in self.processes.items() if p.poll() is not None
                and i not in self.killed]

    def stop(self) -> list[str]:
        """SIGTERM to every worker; those still running 30 s later are killed and returned,
        each with where its threads stood (py-spy) in `<instance>-stacks.txt` beside its log."""
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        hung = []
        for instance, process in self.processes.items():
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                _dump_stacks(process.pid, self.log_dir / f"{instance}-stacks.txt")
                process.kill()
                hung.append(instance)
        return hung


def _dump_stacks(pid: int, out: Path) -> None:
    spy = Path(sys.executable).parent / "py-spy"
    try:
        dump = subprocess.run([str(spy), "dump", "--native", "--pid", str(pid)],
                              capture_output=True, text=True, timeout=30)
        out.write_text(dump.stdout + dump.stderr)
    except (OSError, subprocess.TimeoutExpired) as exc:
        out.write_text(f"no stacks: {exc}")


def run_chaos(settings: Settings, engine: sa.Engine, log_dir: Path, sagas: int,
              faults: list[str], workers: int = 2, seed: int | None = None,
              timeout_s: float = 900, max_in_flight: int = 100) -> Report:
    """`seed` picks the moments of the faults and the workers killed; None: a new one, printed
    in the notes so that a run can be repeated. `max_in_flight` per worker: below the burst,
    so that workers hold commands back while faults (a worker added among them) happen."""
    seed = random.SystemRandom().randrange(2**32) if seed is None else seed
    rng = random.Random(seed)
    report = Report(sagas=sagas)
    report.notes.append(f"seed {seed}")
    run = uuid.uuid4().hex[:8]
    commands = [_tenant_command(f"chaos-{run}-{i}") for i in range(sagas)]
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO entities (id, external_id, name) VALUES "
                             "(gen_random_uuid(), :e, :e)"),
                     [{"e": c["entityId"]} for c in commands])
    ids = [c["requestId"] for c in commands]
    _accept_oversized_commands(settings)
    pool = Workers(settings, log_dir, max_in_flight=max_in_flight)
    for _ in range(workers):
        pool.add()
    projector = ServiceProcess(settings, log_dir, ("projector", "--group", f"{pool.group}-p"))
    projector.start()
    events = TopicReader(settings, f"{settings.topic_prefix}.provisioning.events")
    services = LocalServices.from_settings(Settings())
    neighbour = HostileNeighbour(settings, engine, ids, _tenant_command)
    try:
        with CommandPublisher(settings) as publisher:
            for command in commands:
                publisher.publish("ProvisionTenantRequest", command)
        neighbour.start()
        # Each fault at a random moment: when that share of the sagas has ended.
        moments = sorted(rng.uniform(0.05, 0.85) for _ in faults)
        schedule = list(zip(moments, faults, strict=True))
        deadline = time.monotonic() + timeout_s
        while sum(1 for i in ids if events.terminal(i)) < sagas:
            assert time.monotonic() < deadline, _stuck(report, "timed out", events, ids,
                                                       log_dir)
            events.poll(0.5)
            done = sum(1 for i in ids if events.terminal(i)) / sagas
            while schedule and done >= schedule[0][0]:
                _, fault = schedule.pop(0)
                waiting = sum(1 for i in ids if not events.by_key.get(i))
                _inject(fault, pool, services, rng, report)
                report.notes[-1] += (f" at {done:.0%} of the sagas ended, {waiting} commands "
                                     "held back in Kafka")
        neighbour.stop()
        # Its last sagas may still be compensating (patient retries): their own budget.
        _await_hostile(report, events, neighbour, time.monotonic() + HOSTILE_END_S, log_dir)
        _settle(events)
        report.worker_exits = len(pool.exited())
        report.notes += [f"{i} exited by itself" for i in pool.exited()]
        _stopped(report, pool)
        _check(report, events, ids, commands, engine, settings)
        _check_logs(report, log_dir, settings)
    finally:
        neighbour.stop()
        pool.stop()
        projector.stop()
        events.close()
    return report


def _stopped(report: Report, pool: Workers) -> None:
    """Stop the workers; one that does not end within 30 s of SIGTERM is a defect (seen: a
    callback that called back into the consumer inside its close)."""
    hung = pool.stop()
    report.stop_hangs = len(hung)
    for instance in hung:
        stacks = (pool.log_dir / f"{instance}-stacks.txt").read_text(errors="replace")
        report.notes.append(f"{instance} did not stop within 30 s of SIGTERM (killed); "
                            f"its main thread: {_main_thread(stacks)}")


def _main_thread(stacks: str) -> str:
    """The innermost frames of the main thread in a py-spy dump, on one line."""
    lines = stacks.splitlines()
    start = next((i for i, line in enumerate(lines) if "MainThread" in line),
                 next((i for i, line in enumerate(lines) if line.startswith("Thread ")), None))
    if start is None:
        return stacks[:300]
    frames = []
    for line in lines[start + 1:]:
        if not line.startswith(" "):
            break
        frames.append(line.strip())
    return " < ".join(frames[:8])


def _accept_oversized_commands(settings: Settings) -> None:
    """The commands topic as one created before the service limited its size (the broker's
    1 MiB default): the hostile neighbour's 1 MB commands then reach the workers."""
    admin = AdminClient(settings.kafka_config())
    resource = ConfigResource(
        ConfigResource.Type.TOPIC, f"{settings.topic_prefix}.provisioning.commands",
        incremental_configs=[ConfigEntry("max.message.bytes", "1048588",
                                         incremental_operation=AlterConfigOpType.SET)])
    admin.incremental_alter_configs([resource])[resource].result(10)
    time.sleep(1)  # the broker applies it from the metadata log a moment later


def _await_hostile(report: Report, events: TopicReader, neighbour: HostileNeighbour,
                   deadline: float, log_dir: Path) -> None:
    """Every saga of the neighbour's unrecordable answers ends, FAILED with its reason."""
    report.hostile = neighbour.sent
    ids = neighbour.participant_sagas
    while not all(events.terminal(i) for i in ids):
        assert time.monotonic() < deadline, _stuck(
            report, "hostile sagas did not end", events, ids, log_dir,
            [f"hostile neighbour: {e}" for e in neighbour.errors[-3:]])
        events.poll(0.5)
    ended = Counter(events.terminal(i)[-1].record_name for i in ids)
    report.notes.append(f"hostile neighbour: {neighbour.sent} records; its {len(ids)} sagas "
                        f"with unrecordable answers ended {dict(ended)}")
    if ended.get("ProvisioningSucceeded"):
        report.notes.append("a saga with an unrecordable answer succeeded")
        report.duplicated += ended["ProvisioningSucceeded"]
    report.notes += [f"hostile neighbour: {e}" for e in neighbour.errors[:5]
                     if "MSG_SIZE_TOO_LARGE" not in e]


def _stuck(report: Report, what: str, events: TopicReader, ids: list[str], log_dir: Path,
           more: list[str] | None = None) -> str:
    """Why a run waited in vain, for the failure message: the sagas that did not end and the
    events each got, where the test's reader stands, and the workers' and projector's last
    warnings (their logs die with the test's temporary folder)."""
    open_ = [i for i in ids if not events.terminal(i)]
    seen = [f"{i}: {[r.record_name for r in events.by_key.get(i, [])][-4:]} "
            f"(partition {events.by_key[i][-1].partition if events.by_key.get(i) else '?'})"
            for i in open_[:5]]
    lines = [f"{report.line()} ({what}: {len(open_)} of {len(ids)} not ended)", *seen,
             events.describe(), *(more or [])]
    for log in sorted(log_dir.glob("*.log")):
        loud = [line[:300] for line in log.read_text(errors="replace").splitlines()
                if '"level": "warning"' in line or '"level": "error"' in line]
        lines += [f"{log.name}: {line}" for line in loud[-4:]]
    return "\n".join(lines)


def _inject(fault: str, pool: Workers, services: LocalServices, rng: random.Random,
            report: Report) -> None:
    report.faults += 1
    if fault == "kill":
        victim = pool.kill_one(rng)
        pool.add()
        report.notes.append(f"killed {victim}, started a successor")
    elif fault == "add":
        report.notes.append(f"added {pool.add()}")
    elif fault == "broker":
        pid = services.kafka.running_pid()
        if pid is not None:
            stop_pid(pid)
        time.sleep(3)
        services.kafka.start()
        report.notes.append("broker stopped 3 s")
    elif fault == "postgres":
        services.postgres.stop()
        time.sleep(15)
        services.postgres.start()
        report.notes.append("PostgreSQL stopped 15 s")
    else:
        raise ValueError(f"unknown fault {fault}; faults are {', '.join(FAULTS)}")


def _settle(events: TopicReader) -> None:
    for _ in range(6):
        events.poll(0.5)


def _check(report: Report, events: TopicReader, ids: list[str], commands: list[dict],
           engine: sa.Engine, settings: Settings) -> None:
    for request_id in ids:
        trail = events.by_key.get(request_id, [])
        terminals = defaultdict(int)
        for record in trail:
            if record.record_name in ("ProvisioningSucceeded", "ProvisioningFailedEvent"):
                terminals[record.value["run"]] += 1
        if not terminals:
            report.lost += 1
            report.notes.append(f"{request_id}: no terminal event")
        doubled = sum(n - 1 for n in terminals.values() if n > 1)
        if doubled:
            report.duplicated += doubled
            report.notes.append(f"{request_id}: {doubled + 1} terminal events in one run")
        sequences = [r.value["sequence"] for r in trail]
        if sequences != list(range(1, len(sequences) + 1)):
            report.audit_gaps += 1
            report.notes.append(f"{request_id}: audit trail {sequences}")
        failed_steps: set[tuple[int, str]] = set()
        for record in trail:
            key = (record.value.get("run"), record.value.get("step"))
            if record.record_name == "ProvisioningStepFailed" and record.value["transient"]:
                failed_steps.add(key)
            elif record.record_name == "ProvisioningStepCompleted" and key in failed_steps:
                report.retried_then_completed += 1
                failed_steps.discard(key)
                report.retried_steps += 1
        report.retried_steps += len(failed_steps)
    outcome = {i: events.terminal(i)[-1].record_name if events.terminal(i) else None
               for i in ids}
    with engine.connect() as conn:
        tenants = dict(conn.execute(sa.text(
            "SELECT e.external_id, count(t.id) FROM entities e "
            "LEFT JOIN tenants t ON t.entity_id = e.id WHERE e.external_id = ANY(:ids) "
            "GROUP BY e.external_id"), {"ids": [c["entityId"] for c in commands]}).all())
    for command in commands:
        count = tenants.get(command["entityId"], 0)
        expected = 1 if outcome[command["requestId"]] == "ProvisioningSucceeded" else 0
        if count != expected:
            report.notes.append(f"{command['requestId']}: {count} tenant rows after "
                                f"{outcome[command['requestId']]}")
        if count > expected:
            report.duplicated += 1
        elif count < expected:
            report.lost += 1
    report.notes.append(f"transient failures: {report.retried_steps} steps, "
                        f"{report.retried_then_completed} completed on a retry")
    _note_failures(report, events, ids)
    _check_projection(report, ids, engine, settings)


def _note_failures(report: Report, events: TopicReader, ids: list[str]) -> None:
    """How many sagas failed, and why (the reasons' first words)."""
    reasons: Counter[str] = Counter()
    for request_id in ids:
        for record in events.terminal(request_id):
            if record.record_name == "ProvisioningFailedEvent":
                reasons[" ".join(record.value["reason"].split()[:4])] += 1
    if reasons:
        report.notes.append(f"failed sagas: {sum(reasons.values())} "
                            f"({', '.join(f'{r}: {n}' for r, n in reasons.most_common(5))})")


def _check_logs(report: Report, log_dir: Path, settings: Settings) -> None:
    """Errors logged while the database or broker was away must not carry the password."""
    password = sa.make_url(settings.database_url_plain()).password
    assert password, "the run's database URL has no password to look for"
    for log in sorted(log_dir.glob("*.log")):
        if password.encode() in log.read_bytes():
            report.secrets_in_logs += 1
            report.notes.append(f"{log.name}: contains the database password")


def _check_projection(report: Report, ids: list[str], engine: sa.Engine,
                      settings: Settings) -> None:
    states = latest_states(settings, f"{settings.topic_prefix}.provisioning.state")
    deadline = time.monotonic() + 60
    while True:
        rows, _ = snapshot(engine, ids)
        by_id = {str(r["request_id"]): r for r in rows}
        mismatches = sum(1 for i in ids if i not in by_id or i not in states
                         or (by_id[i]["status"], by_id[i]["last_sequence"]) !=
                         (states[i]["status"], states[i]["sequence"]))
        if mismatches == 0 or time.monotonic() > deadline:
            report.projection_mismatches = mismatches
            return
        time.sleep(1)

