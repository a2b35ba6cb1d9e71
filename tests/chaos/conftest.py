"""The chaos suite uses the integration fixtures (the real broker and database)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

INTEGRATION = Path(__file__).resolve().parents[1] / "integration"
sys.path.insert(0, str(INTEGRATION))

_spec = importlib.util.spec_from_file_location("integration_fixtures",
                                               INTEGRATION / "conftest.py")
assert _spec is not None and _spec.loader is not None
_fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_fixtures)

db_engine = _fixtures.db_engine
group_id = _fixtures.group_id
kafka_admin = _fixtures.kafka_admin
layout = _fixtures.layout
migrated = _fixtures.migrated
secure_cluster = _fixtures.secure_cluster
topics = _fixtures.topics


def pytest_sessionfinish(session, exitstatus) -> None:  # noqa: ANN001 - pytest's hook
    """The figures of every run in this session, summed, as one line in
    `.local/chaos/summary.txt` (`make chaos` prints it last), after the replicated run's time
    to recover from each fault."""
    from chaos_run import Report
    from test_chaos import RECOVERIES, REPORTS

    if not REPORTS:
        return
    total = Report(sagas=sum(r.sagas for r in REPORTS))
    for field in ("faults", "lost", "duplicated", "audit_gaps", "projection_mismatches",
                  "retried_steps", "retried_then_completed", "hostile", "worker_exits",
                  "stop_hangs"):
        setattr(total, field, sum(getattr(r, field) for r in REPORTS))
    out = Path(__file__).resolve().parents[2] / ".local" / "chaos"
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.txt").write_text("".join(f"{line}\n" for line in [*RECOVERIES,
                                                                       total.line()]))
