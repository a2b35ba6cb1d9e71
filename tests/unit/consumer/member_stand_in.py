"""A stand-in for a worker process under the supervisor's unit tests: it reports through the
real `MemberReporter` as a worker does (status file, scrape-time gauges, orphan check), sets
the metrics it is told to and exits as told. What those tests check is process supervision
(restarts, signals, exit codes, probes, one metrics port); the real worker under the
supervisor, on the real broker and database, is tests/integration/test_worker_processes.py.

    python member_stand_in.py --instance-id I --status-file F --log L [--exit-at-once CODE]
        [--exit-on-term CODE] [--ignore-term] [--not-alive] [--report-after-s S]
        [--active N] [--lag PARTITION=VALUE [--lag-after FILE]] [--requests N]
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from pathlib import Path

from consumer.member_status import MemberReporter
from provisioning import metrics


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--instance-id", required=True)
    parser.add_argument("--status-file", type=Path, required=True)
    parser.add_argument("--log", type=Path, required=True, help="'<instance> <pid>' per start")
    parser.add_argument("--exit-at-once", type=int)
    parser.add_argument("--exit-on-term", type=int, default=0)
    parser.add_argument("--ignore-term", action="store_true")
    parser.add_argument("--not-alive", action="store_true")
    parser.add_argument("--report-after-s", type=float, default=0.0)
    parser.add_argument("--active", type=int, help="tenant sagas in flight (a scrape-time gauge)")
    parser.add_argument("--lag", help="PARTITION=VALUE of the commands topic, set at the start")
    parser.add_argument("--lag-after", type=Path, help="set the lag once this file exists")
    parser.add_argument("--requests", type=int, default=0, help="tenant requests to count")
    args = parser.parse_args()
    with args.log.open("a") as log:
        log.write(f"{args.instance_id} {os.getpid()}\n")
    if args.exit_at_once is not None:
        return args.exit_at_once
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, signal.SIG_IGN if args.ignore_term
                  else lambda *_: stopped.set())
    if args.active is not None:
        metrics.ACTIVE.labels("tenant").set_function(lambda: args.active)
    metrics.REQUESTS.labels("tenant").inc(args.requests)
    time.sleep(args.report_after_s)
    if args.lag:
        while args.lag_after is not None and not args.lag_after.exists():
            time.sleep(0.05)
        partition, value = args.lag.split("=")
        metrics.CONSUMER_LAG.labels("g", "commands", partition).set(float(value))
    reporter = MemberReporter(
        args.status_file, lambda: (True, f"{args.instance_id} ready"),
        lambda: (not args.not_alive, "stuck" if args.not_alive else "ok"),
        on_orphaned=stopped.set, interval_s=0.1).start()
    while not stopped.wait(0.1):
        pass
    reporter.stop()
    return args.exit_on_term


if __name__ == "__main__":
    sys.exit(main())
