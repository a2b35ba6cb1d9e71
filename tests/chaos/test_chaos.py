"""Chaos on real processes: sagas with failing participants while workers die, a worker joins,
the broker restarts and PostgreSQL goes away; and on the replicated, secured cluster, brokers
killed and restarted one at a time. Nothing may be lost, doubled or out of step.

The small run (one kill -9, one broker restart) is part of `make test`; `make chaos` runs all
three and ends with the replicated run's recovery per fault and the summary line of all runs
(see conftest.py).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import sqlalchemy as sa
from chaos_run import Report, run_chaos
from replicated_run import recovery_lines, run_replicated_chaos
from secure_cluster import SecureCluster

from provisioning.settings import Settings
from provisioning.topics import TopicLayout

REPORTS: list[Report] = []
RECOVERIES: list[str] = []  # the replicated run's time to recover, per fault


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
    assert report.stop_hangs == 0, report.notes
    assert report.hostile > 0, report.line()


# Above the run's own waits (240 s for the sagas, 180 s for the hostile ones, 30 s per worker
# to stop): a run that waits in vain fails with its own account of why, not pytest's timeout.
@pytest.mark.timeout(600)
def test_kill_and_broker_restart_small(settings: Settings, topics: TopicLayout,
                                       migrated: sa.Engine, tmp_path: Path) -> None:
    # A fixed seed: the same moments in every `make test`. About 2 minutes.
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


@pytest.mark.chaos
@pytest.mark.timeout(3000)
def test_chaos_replicated_cluster(secure_cluster: SecureCluster, migrated: sa.Engine,
                                  tmp_path: Path) -> None:
    """Three brokers with TLS, SASL and ACLs: the partition leader and the active controller
    killed, then every broker restarted in turn, under a steady stream of sagas."""
    sagas = int(os.environ.get("PROVISIONING_CHAOS_REPLICATED_SAGAS", "1000"))
    seed = os.environ.get("PROVISIONING_CHAOS_SEED")
    report, faults = run_replicated_chaos(secure_cluster, migrated, tmp_path, min_sagas=sagas,
                                          seed=int(seed) if seed else None)
    lines = recovery_lines(faults)
    RECOVERIES.extend(lines)
    print("\n" + "\n".join(lines))
    assert len(faults) == 2 + len(secure_cluster.kafka.nodes), lines
    assert report.sagas >= sagas, report.line()
    check(report)
