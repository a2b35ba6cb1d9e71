"""The engine under load: N tenant sagas (five steps each) through real worker processes.

Commands are published as fast as the producer goes (full load) or at a fixed rate; the run
ends when every saga's `ProvisioningSucceeded` has been read (read_committed) from the events
topic. Latency is command produced -> success consumed, per saga. CPU and peak RSS come from
/proc of the worker processes (of a supervisor and its members when a worker runs several).
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from confluent_kafka import (
    Consumer,
    ConsumerGroupState,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient
from prometheus_client.parser import text_string_to_metric_families

from producers.commands import command_producer_config
from provisioning.kafka_access import worth_retrying
from provisioning.ops import free_port
from provisioning.settings import Settings
from provisioning.topics import TopicLayout, create_topics
from schemas import codec

ROOT = Path(__file__).resolve().parents[1]
# librdkafka's informational lines (a purged queue when a client goes) are not figures
QUIET = logging.getLogger("bench.kafka")
QUIET.setLevel(logging.WARNING)
log = logging.getLogger(__name__)
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# What each saga costs in the worker's commits and writes (consumer/worker.py counts them).
WRITTEN = ("provisioning_transactions_total", "provisioning_records_written_total",
           "provisioning_record_bytes_written_total")


@dataclass
class Workers:
    settings: Settings
    participants: str
    count: int  # separate worker processes
    static_membership: bool = False
    processes_per_worker: int = 1  # > 1: each worker is a supervisor with that many members
    group: str = field(default_factory=lambda: f"bench-{uuid.uuid4().hex[:8]}")
    processes: list[subprocess.Popen] = field(default_factory=list)
    metrics_ports: list[int] = field(default_factory=list)

    def start(self) -> Workers:
        for i in range(self.count):
            self.processes.append(self.spawn(f"w{i}"))
        return self

    @property
    def log_dir(self) -> Path:
        return ROOT / self.settings.dev_dir / "bench" / "logs"

    def spawn(self, instance: str) -> subprocess.Popen:
        port = free_port()
        self.metrics_ports.append(port)
        env = {**os.environ, **environment(self.settings), "PROVISIONING_METRICS_PORT": str(port)}
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with (self.log_dir / f"{self.group}-{instance}.log").open("ab") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "bench.worker_main", "--participants", self.participants,
                 "--group", self.group, "--instance", instance,
                 "--processes", str(self.processes_per_worker),
                 *(["--static-membership"] if self.static_membership else [])],
                env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)

    def describe(self) -> str:
        """Where the workers log, and which have exited (for an error message)."""
        codes = [p.returncode for p in self.processes if p.poll() is not None]
        return f"logs in {self.log_dir}/{self.group}-*.log; exited: {codes or 'none'}"

    def written(self) -> dict[str, float]:
        """The workers' transactions, records and bytes written so far (their /metrics)."""
        totals = dict.fromkeys(WRITTEN, 0.0)
        for port in self.metrics_ports:
            try:
                text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics",
                                              timeout=5).read().decode()
            except OSError:
                continue
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    if sample.name in totals:
                        totals[sample.name] += sample.value
        return totals

    def usage(self) -> tuple[float, float]:
        """CPU seconds used by the live worker processes and their members (a supervisor's
        exited members included: their time is in its children's), and the largest peak RSS
        (MiB) of one of them."""
        cpu, rss = 0.0, 0.0
        for process in self.processes:
            for pid, children_too in [(process.pid, True),
                                      *((child, False) for child in _children(process.pid))]:
                try:
                    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                    used = fields[11:15] if children_too else fields[11:13]
                    cpu += sum(int(ticks) for ticks in used) / CLOCK_TICKS
                    status = Path(f"/proc/{pid}/status").read_text()
                    peak = next(int(line.split()[1]) for line in status.splitlines()
                                if line.startswith("VmHWM:"))
                    rss = max(rss, peak / 1024)
                except (FileNotFoundError, ProcessLookupError, StopIteration):
                    continue
        return cpu, rss

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except FileNotFoundError:
        return []
    return [int(child) for child in text.split()]


def environment(settings: Settings) -> dict[str, str]:
    return {
        "PROVISIONING_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "PROVISIONING_DATABASE_URL": settings.database_url_plain(),
        "PROVISIONING_TOPIC_PREFIX": settings.topic_prefix,
        "PROVISIONING_TOPIC_PARTITIONS": str(settings.topic_partitions),
    }


@contextlib.contextmanager
def run_topics(base: Settings, name: str) -> Iterator[Settings]:
    """Topics of this run only, so runs never read each other's records, deleted when it
    ends: a full bench makes some 1,000 partitions, and kept, twenty-odd runs took the dev
    broker past its 20,000 open files ("Too many open files"; every run failed after it)."""
    prefix = f"bench.{name}.{uuid.uuid4().hex[:8]}"
    settings = base.model_copy(update={"topic_prefix": prefix})
    admin = AdminClient(settings.kafka_config(), logger=QUIET)
    specs = TopicLayout(prefix).specs(settings.topic_partitions)
    create_topics(admin, specs)
    try:
        yield settings
    finally:
        delete_topics(admin, [spec.name for spec in specs])


def delete_topics(admin: AdminClient, names: list[str]) -> None:
    """Delete a run's topics; one that cannot be deleted is reported, the figures stand."""
    for name, future in admin.delete_topics(names, operation_timeout=30).items():
        try:
            future.result(60)
        except KafkaException as exc:
            log.warning("bench topic %s not deleted: %s", name, exc)


def tenant_commands(n: int, run: str) -> list[dict[str, Any]]:
    now = int(time.time() * 1000)
    return [{
        "requestId": str(uuid.uuid4()), "requestedBy": f"bench-{run}",
        "replyTo": None, "requestedAt": now, "entityId": f"bench-{run}-{i}",
        "tenantName": None, "subscriptionPlan": "STARTER",
        "billingInfo": {"accountName": "Bench", "billingEmail": "bench@example.com",
                        "currency": "EUR", "paymentMethod": None},
    } for i in range(n)]


def register_entities(engine: sa.Engine, commands: list[dict[str, Any]]) -> None:
    rows = [{"id": uuid.uuid4(), "external_id": c["entityId"], "name": c["entityId"]}
            for c in commands]
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO entities (id, external_id, name) "
                             "VALUES (:id, :external_id, :name) ON CONFLICT DO NOTHING"), rows)


class SuccessReader:
    """Reads the events topic read_committed and notes when each saga's success arrives."""

    def __init__(self, settings: Settings, track_occurred: bool = False) -> None:
        self.track_occurred = track_occurred
        topic = TopicLayout(settings.topic_prefix).events
        self.consumer = Consumer({
            **settings.kafka_config(), "group.id": f"bench-reader-{uuid.uuid4().hex[:6]}",
            "isolation.level": "read_committed", "enable.auto.commit": False,
            "fetch.wait.max.ms": 10,
        })
        self.consumer.assign([TopicPartition(topic, p, 0)
                              for p in range(settings.topic_partitions)])
        self.done: dict[str, float] = {}
        self.occurred: dict[str, int] = {}  # when each success was decided (its occurredAt)
        self.failed: set[str] = set()
        self.events = 0

    def poll(self, timeout_s: float = 0.05) -> None:
        first = self.consumer.poll(timeout_s)  # returns at the first record, unlike consume()
        if first is None:
            return
        for message in [first, *self.consumer.consume(5000, 0)]:
            if message.error() or message.value() is None:
                continue
            self.events += 1
            name = dict(message.headers() or []).get("event-type", b"").decode()
            if name == "ProvisioningSucceeded":
                key = message.key().decode()
                self.done.setdefault(key, time.time())
                if self.track_occurred:
                    self.occurred.setdefault(key, codec.decode(message.value()).value["occurredAt"])
            elif name == "ProvisioningFailedEvent":
                self.failed.add(message.key().decode())

    def close(self) -> None:
        self.consumer.close()


def command_producer(settings: Settings) -> Producer:
    return Producer({**command_producer_config(settings), "linger.ms": 5})


def publish(settings: Settings, commands: list[dict[str, Any]], rate: float | None,
            reader: SuccessReader, producer: Producer | None = None) -> dict[str, float]:
    """Produce the commands (at `rate` per second, or flat out); when each was sent. Pass the
    producer of the warm-up: a new one's first records wait for its connection and producer
    id (measured: up to 0.5 s), which a caller's long-lived producer has long had."""
    producer = producer or command_producer(settings)
    topic = TopicLayout(settings.topic_prefix).commands
    sent: dict[str, float] = {}
    started = time.time()
    for i, command in enumerate(commands):
        if rate:
            wait = started + i / rate - time.time()
            if wait > 0:
                reader.poll(min(wait, 0.05))
                while time.time() < started + i / rate:
                    time.sleep(0.0005)
        sent[command["requestId"]] = time.time()
        producer.produce(topic, key=command["requestId"].encode(),
                         value=codec.encode("ProvisionTenantRequest", command),
                         headers=codec.headers_for("ProvisionTenantRequest"))
        producer.poll(0)
        if i % 2000 == 0:
            reader.poll(0)
    producer.flush(60)
    return sent


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50": float("nan"), "p95": float("nan"), "p99": float("nan")}
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)

    return {"p50": at(0.50), "p95": at(0.95), "p99": at(0.99)}


def warm_up(settings: Settings, reader: SuccessReader, engine: sa.Engine | None,
            pool: Workers, timeout_s: float = 60, producer: Producer | None = None,
            rate: float | None = None, seconds: float = 3.0) -> None:
    """Every member in the group with its partitions, and one saga end to end, so that no
    member joins (a rebalance) and no partition is restored while timing runs. For a run at
    an offered `rate`, then `seconds` of sagas at that rate, not timed: a worker and topics
    that have just started commit slowly for a second or two (measured at 450/s: the flush of
    a commit 290-520 ms instead of 17, the p99 of the first two seconds' sagas 0.8-2.2 s, of
    each later second's at most 0.4 s), which is not what a caller of a service in operation
    sees."""
    wait_for_members(settings, pool, timeout_s)
    _run_untimed(settings, reader, engine, pool, timeout_s, producer, 1, None)
    if rate:
        _run_untimed(settings, reader, engine, pool, timeout_s, producer,
                     max(1, round(rate * seconds)), rate)


def _run_untimed(settings: Settings, reader: SuccessReader, engine: sa.Engine | None,
                 pool: Workers, timeout_s: float, producer: Producer | None, n: int,
                 rate: float | None) -> None:
    commands = tenant_commands(n, f"warm{uuid.uuid4().hex[:6]}")
    if engine is not None:
        register_entities(engine, commands)
    publish(settings, commands, rate, reader, producer)
    deadline = time.time() + timeout_s
    ids = [c["requestId"] for c in commands]
    while not all(i in reader.done or i in reader.failed for i in ids):
        if time.time() > deadline:
            raise RuntimeError(f"the workers did not finish {n} warm-up sagas within "
                               f"{timeout_s:.0f} s ({pool.describe()})")
        reader.poll(0.1)
    failed = reader.failed.intersection(ids)
    if failed:
        raise RuntimeError(f"{len(failed)} of {n} warm-up sagas failed ({pool.describe()})")


_COORDINATOR_NOT_READY = frozenset({
    KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError.COORDINATOR_NOT_AVAILABLE})


def wait_for_members(settings: Settings, pool: Workers, timeout_s: float) -> None:
    admin = AdminClient(settings.kafka_config(), logger=QUIET)
    expected = pool.count * pool.processes_per_worker
    deadline = time.time() + timeout_s
    seen = "nothing yet"
    while True:
        try:
            group = admin.describe_consumer_groups([pool.group])[pool.group].result(10)
        except KafkaException as exc:
            # A broker started a moment ago has no coordinator for the group yet
            # (NOT_COORDINATOR, COORDINATOR_LOAD_IN_PROGRESS): ask again.
            error = exc.args[0]
            if not (worth_retrying(error) or error.code() in _COORDINATOR_NOT_READY):
                raise
            seen = error.str() or error.name()
        except TimeoutError:  # no answer within 10 s: a coordinator still loading its log
            seen = "no answer from the group coordinator"
        else:
            members = [m for m in group.members if m.assignment.topic_partitions]
            if group.state is ConsumerGroupState.STABLE and len(members) == expected:
                return
            seen = f"{len(members)} with partitions, state {group.state.name}"
        if time.time() > deadline:
            raise RuntimeError(f"{expected} workers did not settle into the group within "
                               f"{timeout_s:.0f} s ({seen}; {pool.describe()})")
        time.sleep(0.2)


def run_engine(base: Settings, n: int, *, workers: int = 1, processes: int = 1,
               participants: str = "noop", rate: float | None = None,
               engine: sa.Engine | None = None, timeout_s: float = 600) -> dict[str, Any]:
    """`workers` separate worker processes, each running `processes` consumer-group members
    (more than one: under the supervisor of `provisioning worker --processes`)."""
    with run_topics(base, f"{participants}{workers}x{processes}") as settings:
        return _run_engine(settings, n, workers, processes, participants, rate, engine,
                           timeout_s)


def _run_engine(settings: Settings, n: int, workers: int, processes: int, participants: str,
                rate: float | None, engine: sa.Engine | None,
                timeout_s: float) -> dict[str, Any]:
    pool = Workers(settings, participants, workers, processes_per_worker=processes).start()
    reader = SuccessReader(settings)
    producer = command_producer(settings)
    try:
        db = engine if participants == "postgres" else None
        # At a rate: 3 s of it first (as many sagas as timed at most, for the quick run).
        warm_up(settings, reader, db, pool, producer=producer, rate=rate,
                seconds=min(3.0, n / rate) if rate else 0.0)
        commands = tenant_commands(n, uuid.uuid4().hex[:8])
        if db is not None:
            register_entities(db, commands)
        cpu_before, _ = pool.usage()
        written_before = pool.written()
        events_before = reader.events
        started = time.time()
        sent = publish(settings, commands, rate, reader, producer)
        deadline = started + timeout_s
        ids = list(sent)
        while sum(1 for i in ids if i in reader.done or i in reader.failed) < len(ids):
            if time.time() > deadline:
                break
            reader.poll()
        finished = max((reader.done.get(i, 0.0) for i in ids), default=time.time())
        elapsed = max(1e-6, finished - started)
        cpu_after, rss = pool.usage()
        written = {k: v - written_before[k] for k, v in pool.written().items()}
        latencies = [(reader.done[i] - sent[i]) * 1000 for i in ids if i in reader.done]
        completed = len(latencies)
        per_saga = max(1, completed)
        return {
            "sagas": n, "completed": completed, "failed": len(reader.failed & set(ids)),
            "workers": workers, "processes_per_worker": processes,
            "participants": participants,
            "offered_rate": rate, "seconds": round(elapsed, 2),
            "sagas_per_s": round(completed / elapsed, 1),
            "events_per_s": round((reader.events - events_before) / elapsed, 1),
            "cpu_s_per_1000_sagas": round((cpu_after - cpu_before) / max(1, completed) * 1000,
                                          2),
            "peak_rss_mb": round(rss, 1),
            "latency_ms": percentiles(latencies),
            # Thousandths: at full load a transaction holds the work of a hundred sagas.
            "transactions_per_saga": round(written[WRITTEN[0]] / per_saga, 4),
            "records_per_saga": round(written[WRITTEN[1]] / per_saga, 2),
            "bytes_per_record": round(written[WRITTEN[2]] / max(1, written[WRITTEN[1]]), 1),
        }
    finally:
        reader.close()
        pool.stop()
