"""`provisioning bench --quick` at tiny sizes: it runs end to end on the local services, its
JSON has every figure the README table and the chart are made of (figures, not targets), and
it leaves none of its topics behind (kept, some twenty full runs once took the dev broker past
its open files)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

from confluent_kafka.admin import AdminClient
from harness import ROOT

from provisioning.settings import Settings

REQUIRED = [
    "raw.messages_per_s", "engine.sagas_per_s", "engine.latency_ms.p50",
    "engine.latency_ms.p95", "engine.latency_ms.p99", "engine.at_half_load.latency_ms.p99",
    "engine.cpu_s_per_1000_sagas", "engine.peak_rss_mb", "engine_postgres.sagas_per_s",
    "engine_2_workers.sagas_per_s", "engine_2_processes.sagas_per_s",
    "engine_2_processes.cpu_s_per_1000_sagas", "recovery.restore_states_per_s",
    "recovery.failover_s", "recovery.failover_same_instance_s", "dbos.workflows_per_s",
    "dbos.latency_ms.p99", "dbos_registry.workflows_per_s",
    "dbos_registry.cpu_s_per_1000_workflows", "ratios.engine_vs_dbos",
    "ratios.engine_postgres_vs_dbos_registry", "ratios.two_processes_vs_one",
    "ratios.engine_vs_raw_messages", "machine.cores",
    "machine.librdkafka", "machine.postgres",
]


def _bench_topics(settings: Settings) -> set[str]:
    topics = AdminClient(settings.kafka_config()).list_topics(timeout=10).topics
    return {name for name in topics if name.startswith("bench.")}


def test_bench_quick_writes_every_figure(base_settings: Settings, tmp_path: Path) -> None:
    before = _bench_topics(base_settings)
    out, chart = tmp_path / "bench.json", tmp_path / "bench.png"
    env = {**os.environ,
           "PROVISIONING_KAFKA_BOOTSTRAP_SERVERS": base_settings.kafka_bootstrap_servers,
           "PROVISIONING_DATABASE_URL": base_settings.database_url_plain()}
    result = subprocess.run(
        [sys.executable, "-m", "provisioning.cli", "bench", "--quick", "--sagas", "200",
         "--states", "2000", "--dbos", "30", "--json", str(out), "--chart", str(chart)],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=280)
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(out.read_text())
    for path in REQUIRED:
        value = figures
        for part in path.split("."):
            assert part in value, f"{path} is missing"
            value = value[part]
        if isinstance(value, float):
            assert math.isfinite(value) and value > 0, f"{path} = {value}"
    assert figures["engine"]["completed"] == 200 and figures["engine"]["failed"] == 0
    assert figures["engine_2_processes"]["completed"] == 200
    assert figures["engine_2_processes"]["processes_per_worker"] == 2
    # DBOS really ran the registry statements: every workflow's five steps succeeded
    assert figures["dbos_registry"]["completed"] == 30 and figures["dbos_registry"]["failed"] == 0
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "engine, no-op, full load" in result.stdout
    assert "engine, no-op, 1 worker --processes 2" in result.stdout
    assert "DBOS, registry statements" in result.stdout
    assert _bench_topics(base_settings) <= before, "the bench left topics behind"
