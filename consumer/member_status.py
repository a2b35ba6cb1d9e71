"""How a worker process run by a supervisor (`provisioning worker --processes N`) tells it how
it is: a small JSON file per member, rewritten every second.

    {"pid": 4242, "ready": true, "readiness": "owns partitions [0, 3]",
     "alive": true, "liveness": "ok", "at": 1764000000.123}

A file rather than a pipe: the supervisor reads it only when a probe asks, a member that dies
leaves nothing half-written to drain (the file is replaced whole with `os.replace`), and an
operator can `cat` it. `at` makes a member whose reporting thread no longer runs (the process
frozen) visible as stale; `pid` ties the report to the member's current process, so a report
of a predecessor is never taken for its successor's.

The member's reporting thread does two more things on the same beat:
- it copies the gauges computed at scrape time (`provisioning.metrics.SCRAPE_TIME_GAUGES`) into
  prometheus_client's shared files, which are all the supervisor's /metrics reads;
- it stops the worker when the supervisor is gone (the member's parent changed), so a kill -9
  of the supervisor leaves no orphan consumer-group member behind.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from provisioning.ops import Readiness

log = logging.getLogger(__name__)

REPORT_INTERVAL_S = 1.0


@dataclass(frozen=True, slots=True)
class MemberStatus:
    pid: int
    ready: bool
    readiness: str
    alive: bool
    liveness: str
    at: float  # epoch seconds of the report

    def age_s(self, now: float | None = None) -> float:
        return (time.time() if now is None else now) - self.at


def read_status(path: Path) -> MemberStatus | None:
    """The member's last report, or None when it has not written one (or it cannot be read:
    treated as no report, and the next one replaces it within a second)."""
    try:
        data = json.loads(path.read_text())
        return MemberStatus(pid=int(data["pid"]), ready=bool(data["ready"]),
                            readiness=str(data["readiness"]), alive=bool(data["alive"]),
                            liveness=str(data["liveness"]), at=float(data["at"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_status(path: Path, readiness: Readiness, liveness: Readiness) -> None:
    ready, ready_why = _checked(readiness)
    alive, alive_why = _checked(liveness)
    report = {"pid": os.getpid(), "ready": ready, "readiness": ready_why, "alive": alive,
              "liveness": alive_why, "at": time.time()}
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    partial.write_text(json.dumps(report))
    os.replace(partial, path)  # whole or not at all: the reader never sees half a report


def _checked(check: Readiness) -> tuple[bool, str]:
    try:
        return check()
    except Exception as exc:  # noqa: BLE001 - a report must be written, as a probe answers
        return False, f"check failed: {type(exc).__name__}"


def publish_scrape_time_gauges() -> None:
    """Gauges that prometheus_client computes when scraped are not in the shared files that
    multiprocess mode reads: collect them here and store their values."""
    from provisioning.metrics import SCRAPE_TIME_GAUGES

    for gauge in SCRAPE_TIME_GAUGES:
        for family in gauge.collect():
            for sample in family.samples:
                (gauge.labels(**sample.labels) if sample.labels else gauge).set(sample.value)


class MemberReporter:
    """The member's side: a daemon thread reporting every `interval_s` (see the module doc)."""

    def __init__(self, path: Path, readiness: Readiness, liveness: Readiness,
                 on_orphaned: Callable[[], None], interval_s: float = REPORT_INTERVAL_S) -> None:
        self.path = path
        self._readiness = readiness
        self._liveness = liveness
        self._on_orphaned = on_orphaned
        self._interval_s = interval_s
        self._parent = os.getppid()
        self._shared_metrics = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="member-report", daemon=True)

    def start(self) -> MemberReporter:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _loop(self) -> None:
        while not self._stop.is_set():
            if os.getppid() != self._parent:
                log.error("the supervisor is gone; stopping this member",
                          extra={"supervisor_pid": self._parent})
                self._on_orphaned()
                return
            try:
                if self._shared_metrics:
                    publish_scrape_time_gauges()
                write_status(self.path, self._readiness, self._liveness)
            except Exception:  # noqa: BLE001 - reporting must outlive a bad turn (disk full)
                log.exception("could not report to the supervisor",
                              extra={"status_file": str(self.path)})
            self._stop.wait(self._interval_s)


def report_to_supervisor(path: Path | None, readiness: Readiness, liveness: Readiness,
                         on_orphaned: Callable[[], None]) -> MemberReporter | None:
    """Start reporting when the process was given a status file (it runs under a supervisor)."""
    if path is None:
        return None
    return MemberReporter(path, readiness, liveness, on_orphaned).start()
