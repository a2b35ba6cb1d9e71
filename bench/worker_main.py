"""A worker process for the benchmarks: the real `Worker`, with the participants chosen here.

    python -m bench.worker_main --participants noop --group G --instance I [--processes N]

`noop` answers every step at once with the outputs later steps need, so the figures are the
engine's own (Kafka transactions, state, events); `postgres` is the built-in registry.
`--processes N` runs N of them under the supervisor of `provisioning worker --processes N`
(`consumer/supervisor.py`), instances `I-0` ... `I-<N-1>`.
"""

from __future__ import annotations

import argparse
import logging
import sys
import uuid
from pathlib import Path

from consumer.main import builtin_participant, settle_collector
from consumer.member_status import report_to_supervisor
from consumer.participants.base import Participant, StepCall, StepOutcome
from consumer.supervisor import MemberSpec, Supervisor
from consumer.worker import Worker, WorkerOptions
from provisioning.ops import start_ops
from provisioning.settings import Settings

# Every output key a workflow's later steps or its result read.
NOOP_OUTPUTS = ("tenantId", "billingAccountId", "subscriptionId", "userId", "resourceId",
                "adminUserId", "membershipId")


class NoopParticipant:
    def call(self, call: StepCall) -> StepOutcome:
        value = str(uuid.uuid5(uuid.NAMESPACE_URL, call.idempotency_key))
        return StepOutcome.succeeded(**dict.fromkeys(NOOP_OUTPUTS, value))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--participants", choices=("noop", "postgres"), default="noop")
    parser.add_argument("--group", required=True)
    parser.add_argument("--instance", required=True)
    parser.add_argument("--step-concurrency", type=int, default=32)
    parser.add_argument("--static-membership", action="store_true")
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--status-file", type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    settings = Settings()
    if args.processes > 1:
        raise SystemExit(Supervisor(args.processes, lambda member: member_command(args, member),
                                    instance_id=args.instance,
                                    metrics_port=settings.metrics_port).run())
    options = WorkerOptions(group_id=args.group, instance_id=args.instance,
                            step_concurrency=args.step_concurrency, max_in_flight=50_000,
                            static_membership=args.static_membership)
    participant: Participant = NoopParticipant() if args.participants == "noop" else \
        builtin_participant(settings, options)  # as the worker makes it
    worker = Worker(settings, lambda call: participant, options)
    worker.install_signal_handlers()
    reporter = report_to_supervisor(args.status_file, worker.readiness, worker.liveness,
                                    on_orphaned=worker.stop)
    # Its transactions and records written, read by the bench (a member: its supervisor's).
    ops = start_ops(settings.metrics_port, worker.readiness, worker.liveness) \
        if args.status_file is None else None
    settle_collector()  # as the worker does
    worker.run()
    if ops is not None:
        ops.stop()
    if reporter is not None:
        reporter.stop()


def member_command(args: argparse.Namespace, member: MemberSpec) -> list[str]:
    return [sys.executable, "-m", "bench.worker_main", "--participants", args.participants,
            "--group", args.group, "--instance", member.instance_id,
            "--step-concurrency", str(args.step_concurrency),
            *(["--static-membership"] if args.static_membership else []),
            "--status-file", str(member.status_file)]


if __name__ == "__main__":
    main()
