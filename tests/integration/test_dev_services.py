"""`provisioning dev ...`: the launcher every other command and test relies on."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
from confluent_kafka.admin import AdminClient

from provisioning.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "provisioning.cli", *args],
        capture_output=True, text=True, cwd=ROOT, timeout=120, env=env,
    )


def test_env_prints_exports_that_reach_both_services() -> None:
    result = _run("dev", "env")
    assert result.returncode == 0, result.stderr

    # Evaluate the lines in a real shell, as a user would, and read the values back.
    shell = subprocess.run(
        ["bash", "-c", result.stdout + "\nenv"], capture_output=True, text=True, check=True
    )
    env = dict(line.split("=", 1) for line in shell.stdout.splitlines() if "=" in line)
    bootstrap = env["PROVISIONING_KAFKA_BOOTSTRAP_SERVERS"]
    url = env["PROVISIONING_DATABASE_URL"]
    assert env["PROVISIONING_TOPIC_PREFIX"]

    assert AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).brokers
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_up_is_idempotent_and_status_tells_where() -> None:
    up = _run("dev", "up")
    status = _run("dev", "status")

    assert up.returncode == 0, up.stderr
    assert "kafka     running" in up.stdout
    assert "postgres  running" in up.stdout
    assert "running on 127.0.0.1:" in status.stdout
    assert status.stdout.count("running on") == 2


def test_up_names_a_taken_port_in_one_line(tmp_path: Path, base_settings: Settings) -> None:
    # A second launcher whose Kafka port is the running broker's: it must refuse clearly.
    env = {
        **os.environ,
        "PROVISIONING_DEV_DIR": str(tmp_path / "other"),
        "PROVISIONING_DEV_KAFKA_PORT": base_settings.kafka_bootstrap_servers.rsplit(":", 1)[1],
    }
    result = _run("dev", "up", env=env)

    assert result.returncode == 2
    assert "is taken by another process" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
