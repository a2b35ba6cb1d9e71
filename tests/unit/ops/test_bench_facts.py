"""What `provisioning bench` records about the machine, and what the README quotes of it."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_the_kafka_version_recorded_is_a_version_not_the_poms_placeholder() -> None:
    from bench.run import kafka_version

    # The local broker runs the pom's `kafka_2.13`, named through `${kafka.version}`.
    assert re.fullmatch(r"\d+\.\d+\.\d+", kafka_version())


def test_the_readme_quotes_the_last_runs_kafka_version() -> None:
    machine = json.loads((ROOT / "docs" / "bench" / "bench-latest.json").read_text())["machine"]
    readme = (ROOT / "README.md").read_text()

    assert f"Kafka {machine['kafka']}," in readme
    assert "${" not in machine["kafka"]
