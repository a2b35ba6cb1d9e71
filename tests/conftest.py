"""Session fixtures for the real services every integration test uses.

The services come from `provisioning dev env` (the local launcher that `make test` and CI
start; no Docker engine is needed). A service that does not answer fails the test with a
message saying how to start it: integration tests are never skipped.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from topic_prefixes import give_out

from provisioning.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def _local_env() -> dict[str, str]:
    """Parse the `export K=V` lines that `provisioning dev env` prints."""
    result = subprocess.run(
        [sys.executable, "-m", "provisioning.cli", "dev", "env"],
        capture_output=True, text=True, check=True, cwd=ROOT,
    )
    env = {}
    for line in result.stdout.splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        env[key] = shlex.split(value)[0] if value else ""
    return env


@pytest.fixture(scope="session")
def service_env() -> dict[str, str]:
    return _local_env()


@pytest.fixture(scope="session")
def base_settings(service_env: dict[str, str]) -> Settings:
    return Settings(
        kafka_bootstrap_servers=service_env["PROVISIONING_KAFKA_BOOTSTRAP_SERVERS"],
        database_url=service_env["PROVISIONING_DATABASE_URL"],
        topic_prefix=service_env["PROVISIONING_TOPIC_PREFIX"],
        topic_partitions=3,
    )


@pytest.fixture
def settings(base_settings: Settings) -> Settings:
    """Settings with a topic prefix of this test's own, so tests never see each other's data."""
    prefix = give_out(f"{base_settings.topic_prefix}.t{uuid.uuid4().hex[:10]}")
    return base_settings.model_copy(update={"topic_prefix": prefix})
