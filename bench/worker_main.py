"""A worker process for the benchmarks: the real `Worker`, with the participants chosen here.

    python -m bench.worker_main --participants noop --group G --instance I

`noop` answers every step at once with the outputs later steps need, so the figures are the
engine's own (Kafka transactions, state, events); `postgres` is the built-in registry.
"""

from __future__ import annotations

import argparse
import logging
import uuid

from consumer.participants.base import StepCall, StepOutcome
from consumer.worker import Worker, WorkerOptions
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
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    settings = Settings()
    if args.participants == "noop":
        participant = NoopParticipant()
    else:
        from consumer.participants.builtin import BuiltinParticipant
        from provisioning.database import create_engine

        participant = BuiltinParticipant(create_engine(
            settings, pool_size=args.step_concurrency, max_overflow=0))
    options = WorkerOptions(group_id=args.group, instance_id=args.instance,
                            step_concurrency=args.step_concurrency, max_in_flight=50_000,
                            static_membership=args.static_membership)
    worker = Worker(settings, lambda call: participant, options)
    worker.install_signal_handlers()
    worker.run()


if __name__ == "__main__":
    main()
