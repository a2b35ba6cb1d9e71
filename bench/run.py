"""`provisioning bench`: every figure in one run, on the local services, then a report.

Order: the engine at full load (no-op participants, one worker process) sets the maximum
rate; the same engine at half that rate gives the latency a caller sees under normal load; then
built-in Postgres participants; two consumer-group members two ways: one worker with
`--processes 2` (a supervisor and two members, as the chart runs it) and two separate worker
processes; the raw Kafka ceiling for as many messages as the engine wrote; restore and
failover; and DBOS on the same PostgreSQL twice: five no-op steps (against the no-op engine)
and the built-in participant's registry statements in its steps (against the engine with
built-in participants).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import sqlalchemy as sa

from bench.engine import ROOT, run_engine
from bench.raw import run_raw
from bench.recovery import run_failover, run_restore
from provisioning.database import create_engine, upgrade
from provisioning.settings import Settings

MESSAGES_PER_SAGA = 26  # measured: command, 12 events, ~12 state snapshots, offsets (rounded)


@dataclass(frozen=True)
class Sizes:
    sagas: int
    postgres_sagas: int
    states: int
    failover_sagas: int
    dbos_workflows: int

    @classmethod
    def choose(cls, quick: bool, sagas: int | None, states: int | None,
               dbos: int | None) -> Sizes:
        base = cls(1500, 500, 10_000, 1000, 150) if quick else cls(
            20_000, 2000, 200_000, 5000, 1000)
        return cls(
            sagas=sagas or base.sagas,
            postgres_sagas=min(base.postgres_sagas, sagas or base.postgres_sagas),
            states=states or base.states,
            failover_sagas=base.failover_sagas,
            dbos_workflows=dbos or base.dbos_workflows,
        )


def run_bench(settings: Settings, sizes: Sizes, say: Any = print) -> dict[str, Any]:
    settings = settings.model_copy(update={"topic_partitions": 12})
    db = create_engine(settings, pool_size=4)
    upgrade(db)
    started = time.time()
    results: dict[str, Any] = {"date": datetime.now(UTC).isoformat(timespec="seconds"),
                               "machine": machine_facts(db), "sizes": sizes.__dict__}

    say(f"engine: {sizes.sagas} sagas, no-op participants, 1 worker, full load")
    engine = run_engine(settings, sizes.sagas)
    half = max(1.0, engine["sagas_per_s"] / 2)
    say(f"engine: {sizes.sagas // 2} sagas at 50% load ({half:.0f}/s)")
    engine["at_half_load"] = run_engine(settings, max(1, sizes.sagas // 2), rate=half)
    results["engine"] = engine
    say(f"engine: {sizes.postgres_sagas} sagas, built-in Postgres participants")
    results["engine_postgres"] = run_engine(settings, sizes.postgres_sagas,
                                            participants="postgres", engine=db)
    say(f"engine: {sizes.sagas} sagas, 1 worker with --processes 2")
    results["engine_2_processes"] = run_engine(settings, sizes.sagas, processes=2)
    say(f"engine: {sizes.sagas} sagas, 2 separate worker processes")
    results["engine_2_workers"] = run_engine(settings, sizes.sagas, workers=2)

    messages = sizes.sagas * MESSAGES_PER_SAGA
    say(f"raw: {messages} messages, transactional produce + read_committed consume")
    results["raw"] = run_raw(settings, messages)

    say(f"recovery: restore {sizes.states} states; kill -9 under load (twice)")
    restore = run_restore(settings, sizes.states)
    # Failover under a steady half of the measured maximum rate.
    failover = run_failover(settings, half, same_instance=False)
    same = run_failover(settings, half, same_instance=True)
    results["recovery"] = {
        "restore_states": restore["states"], "restore_seconds": restore["seconds"],
        "restore_states_per_s": restore["states_per_s"],
        "restore_running_share": restore["running_share"],
        "failover_s": failover["failover_s"],
        "failover_same_instance_s": same["failover_s"],
    }

    say(f"dbos: {sizes.dbos_workflows} five-step workflows on the same PostgreSQL, no-op steps")
    results["dbos"] = run_dbos(settings, sizes.dbos_workflows)
    say(f"dbos: {sizes.dbos_workflows} five-step workflows running the registry statements")
    results["dbos_registry"] = run_dbos(settings, sizes.dbos_workflows, mode="registry")
    results["ratios"] = ratios(results)
    results["seconds"] = round(time.time() - started, 1)
    db.dispose()
    return results


def run_dbos(settings: Settings, workflows: int, mode: str = "noop") -> dict[str, Any]:
    registry = sa.make_url(settings.database_url_plain())
    url = registry.set(drivername="postgresql")
    result = subprocess.run(
        [sys.executable, "-m", "bench.peer_dbos", "--mode", mode,
         "--workflows", str(workflows),
         "--database-url", url.render_as_string(hide_password=False),
         "--registry-url", registry.render_as_string(hide_password=False)],
        capture_output=True, text=True, timeout=900, cwd=ROOT)
    if result.returncode != 0:
        raise RuntimeError(f"the DBOS run ({mode}) failed: {result.stderr.strip()[-500:]}")
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    try:
        from importlib.metadata import version

        figures["version"] = version("dbos")
    except Exception:  # noqa: BLE001 - a missing version is not worth failing the run
        figures["version"] = "unknown"
    return figures


def ratios(r: dict[str, Any]) -> dict[str, float]:
    engine_messages = r["engine"]["sagas_per_s"] * MESSAGES_PER_SAGA
    postgres, dbos_registry = r["engine_postgres"], r["dbos_registry"]
    return {
        "engine_vs_dbos": round(r["engine"]["sagas_per_s"] / r["dbos"]["workflows_per_s"], 1),
        # the real work on both sides: the same registry statements in every step
        "engine_postgres_vs_dbos_registry": round(
            postgres["sagas_per_s"] / dbos_registry["workflows_per_s"], 1),
        "engine_postgres_cpu_vs_dbos_registry": round(
            postgres["cpu_s_per_1000_sagas"] / dbos_registry["cpu_s_per_1000_workflows"], 2),
        "engine_postgres_vs_dbos": round(
            postgres["sagas_per_s"] / r["dbos"]["workflows_per_s"], 1),
        "engine_vs_raw_messages": round(engine_messages / r["raw"]["messages_per_s"], 3),
        "two_processes_vs_one": round(
            r["engine_2_processes"]["sagas_per_s"] / r["engine"]["sagas_per_s"], 2),
        "two_workers_vs_one": round(
            r["engine_2_workers"]["sagas_per_s"] / r["engine"]["sagas_per_s"], 2),
    }


def machine_facts(db: sa.Engine) -> dict[str, Any]:
    import confluent_kafka

    with db.connect() as conn:
        postgres = conn.execute(sa.text("SHOW server_version")).scalar_one()
    return {
        "cores": os.cpu_count(), "python": platform.python_version(),
        "platform": platform.platform(), "confluent_kafka": confluent_kafka.version()[0],
        "librdkafka": confluent_kafka.libversion()[0], "kafka": kafka_version(),
        "postgres": postgres,
    }


def kafka_version() -> str:
    """The version of the Kafka jars `provisioning dev up` runs (the local broker's), with a
    Maven property such as `${kafka.version}` resolved from the pom's `<properties>`."""
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    pom = ElementTree.parse(ROOT / "provisioning" / "devservices" / "pom.xml").getroot()
    version = pom.findtext("m:dependencies/m:dependency[m:artifactId='kafka_2.13']/m:version",
                           default="unknown", namespaces=ns).strip()
    if version.startswith("${") and version.endswith("}"):
        version = pom.findtext(f"m:properties/m:{version[2:-1]}", default="unknown",
                               namespaces=ns).strip()
    return version


def write_outputs(results: dict[str, Any], json_path: Path | None,
                  chart_path: Path | None) -> None:
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(results, indent=2) + "\n")
    if chart_path is not None:
        from bench.report import chart

        chart(results, chart_path)
