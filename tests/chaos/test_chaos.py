"""Chaos on real processes: sagas with failing participants while workers die, a worker joins,
the broker restarts and PostgreSQL goes away. Nothing may be lost, doubled or out of step.

The small run (one kill -9, one broker restart) is part of `make test`; `make chaos` runs both
and ends with the summary line of all runs (see conftest.py).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import sqlalchemy as sa
from chaos_run import Report, run_chaos

from provisioning.settings import Settings
from provisioning.topics import TopicLayout

REPORTS: list[Report] = []


def check(report: Report) -> None:
    REPORTS.append(report)
    print("\n" + report.line())
    for note in report.notes[:30]:
        print(f"  {note}")
    if len(report.notes) > 30:
        print(f"  ... and {len(report.notes) - 30} more")
    assert (report.lost, report.duplicated, report.audit_gaps,
            report.projection_mismatches) == (0, 0, 0, 0), report.line()
    assert report.retry_success > 0.95, report.line()
    assert report.secrets_in_logs == 0, report.notes
    assert report.worker_exits == 0, report.notes
    assert report.hostile > 0, report.line()


def test_kill_and_broker_restart_small(settings: Settings, topics: TopicLayout,
                                       migrated: sa.Engine, tmp_path: Path) -> None:
    # A fixed seed: the same moments in every `make test`.
    check(run_chaos(settings, migrated, tmp_path, sagas=80, faults=["kill", "broker"],
                    seed=7, timeout_s=240, max_in_flight=20))


@pytest.mark.chaos
@pytest.mark.timeout(1800)
def test_chaos_under_load(settings: Settings, topics: TopicLayout, migrated: sa.Engine,
                          tmp_path: Path) -> None:
    sagas = int(os.environ.get("PROVISIONING_CHAOS_SAGAS", "2000"))
    seed = os.environ.get("PROVISIONING_CHAOS_SEED")  # repeat a run: its seed is in the notes
    check(run_chaos(settings, migrated, tmp_path, sagas=sagas, workers=3,
                    faults=["kill", "kill", "add", "kill", "broker", "postgres", "kill"],
                    seed=int(seed) if seed else None, timeout_s=1500))
