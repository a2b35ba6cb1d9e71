"""A worker whose participants fail: the built-in registry behind a fault injector.

    python tests/chaos/chaos_worker.py --group G --instance I --failure-rate 0.2

A fifth of the attempts (chosen by a hash of idempotency key and attempt, so a retry of the
same attempt is decided the same way and the next attempt differently) fail transiently: half
before the participant acts, half after it acted (the answer is "lost"), so the retry must
find the work done under the same idempotency key and not do it twice.

For the hostile neighbour's entities (`hostile_neighbour.py`) the participant answers what
cannot be recorded: a reason with a lone surrogate, or an output of 950 KB after doing the work.
"""

from __future__ import annotations

import argparse
import hashlib
import logging

from hostile_neighbour import HUGE_PREFIX, SURROGATE_PREFIX

from consumer.main import builtin_participant
from consumer.participants.base import StepCall, StepOutcome
from consumer.participants.builtin import BuiltinParticipant
from consumer.routing import Routing, parse_routing
from consumer.worker import Worker, WorkerOptions
from provisioning.logs import configure_logging
from provisioning.settings import Settings
from sagas import DEFAULT_REGISTRY


class FailingParticipant:
    def __init__(self, inner: BuiltinParticipant, rate: float) -> None:
        self._inner = inner
        self._rate = rate

    def call(self, call: StepCall) -> StepOutcome:
        entity = call.params.get("entityId", "")
        if entity.startswith(SURROGATE_PREFIX) and call.step == "create-admin-role":
            return StepOutcome.permanent("no admin role for \ud800 today")
        if entity.startswith(HUGE_PREFIX) and call.step == "activate-services":
            outcome = self._inner.call(call)
            return StepOutcome.succeeded(**outcome.output, notes="x" * 950_000)
        digest = hashlib.sha256(f"{call.idempotency_key}:{call.action}:{call.attempt}".encode())
        draw = int.from_bytes(digest.digest()[:4], "big") / 2**32
        if draw < self._rate / 2:
            return StepOutcome.transient("injected: participant unavailable")
        outcome = self._inner.call(call)
        if draw < self._rate:
            return StepOutcome.transient("injected: answer lost after the work was done")
        return outcome


def patient_routing() -> Routing:
    """Retries and deadlines sized for the faults of a run, where a step can meet a 20 %
    failure rate, a 15 s database outage and a broker restart (about 30 s until every client
    is back) one after the other: what an operator sets in the routing file when outages of
    that length must not fail requests. The defaults (4 attempts 100-400 ms apart, a 60 s
    step deadline) are for a steadier world.

    Steps: 9 attempts, 0.5 s doubling to 8 s apart (about 40 s of waiting), within 180 s.
    Compensations: 13 attempts (about 70 s): giving up on an undo leaves its effect behind.
    """
    retry = {"max_retries": 8, "initial_backoff_ms": 500, "max_backoff_ms": 8000}
    undo = {**retry, "max_retries": 12}
    steps = {f"{w.type}.{s.name}": {"retry": retry, "compensation_retry": undo,
                                    "deadline_s": 180}
             for w in DEFAULT_REGISTRY for s in w.steps}
    return parse_routing({"steps": steps})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--group", required=True)
    parser.add_argument("--instance", required=True)
    parser.add_argument("--failure-rate", type=float, default=0.2)
    parser.add_argument("--max-in-flight", type=int, default=10_000)
    args = parser.parse_args()
    configure_logging("WARNING")
    logging.getLogger("provisioning.saga").setLevel(logging.WARNING)
    # Assignments, revocations and restores (a few lines per rebalance): what a stuck run
    # needs to be understood afterwards.
    logging.getLogger("consumer").setLevel(logging.INFO)
    settings = Settings()
    options = WorkerOptions(group_id=args.group, instance_id=args.instance,
                            step_concurrency=16, max_in_flight=args.max_in_flight)
    participant = FailingParticipant(builtin_participant(settings, options), args.failure_rate)
    worker = Worker(settings, lambda call: participant, options, routing=patient_routing())
    worker.install_signal_handlers()
    worker.run()


if __name__ == "__main__":
    main()
