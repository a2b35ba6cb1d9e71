"""A worker whose participants fail: the built-in registry behind a fault injector.

    python tests/chaos/chaos_worker.py --group G --instance I --failure-rate 0.2

A fifth of the attempts (chosen by a hash of idempotency key and attempt, so a retry of the
same attempt is decided the same way and the next attempt differently) fail transiently: half
before the participant acts, half after it acted (the answer is "lost"), so the retry must
find the work done under the same idempotency key and not do it twice.
"""

from __future__ import annotations

import argparse
import hashlib
import logging

from consumer.participants.base import StepCall, StepOutcome
from consumer.participants.builtin import BuiltinParticipant
from consumer.routing import Routing, parse_routing
from consumer.worker import Worker, WorkerOptions
from provisioning.database import create_engine
from provisioning.logs import configure_logging
from provisioning.settings import Settings
from sagas import DEFAULT_REGISTRY


class FailingParticipant:
    def __init__(self, inner: BuiltinParticipant, rate: float) -> None:
        self._inner = inner
        self._rate = rate

    def call(self, call: StepCall) -> StepOutcome:
        digest = hashlib.sha256(f"{call.idempotency_key}:{call.action}:{call.attempt}".encode())
        draw = int.from_bytes(digest.digest()[:4], "big") / 2**32
        if draw < self._rate / 2:
            return StepOutcome.transient("injected: participant unavailable")
        outcome = self._inner.call(call)
        if draw < self._rate:
            return StepOutcome.transient("injected: answer lost after the work was done")
        return outcome


def patient_routing() -> Routing:
    """Retries sized for an environment where the broker or the database can be away for
    seconds (the default 100-400 ms backoff is spent before a broker restart is over): what an
    operator sets in the routing file for every step."""
    retry = {"max_retries": 6, "initial_backoff_ms": 500, "multiplier": 2.0,
             "max_backoff_ms": 8000}
    steps = {f"{w.type}.{s.name}": {"retry": retry, "compensation_retry": retry}
             for w in DEFAULT_REGISTRY for s in w.steps}
    return parse_routing({"steps": steps})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--group", required=True)
    parser.add_argument("--instance", required=True)
    parser.add_argument("--failure-rate", type=float, default=0.2)
    args = parser.parse_args()
    configure_logging("WARNING")
    logging.getLogger("provisioning.saga").setLevel(logging.WARNING)
    settings = Settings()
    builtin = BuiltinParticipant(create_engine(settings, pool_size=16, max_overflow=0))
    participant = FailingParticipant(builtin, args.failure_rate)
    worker = Worker(settings, lambda call: participant,
                    WorkerOptions(group_id=args.group, instance_id=args.instance,
                                  step_concurrency=16), routing=patient_routing())
    worker.install_signal_handlers()
    worker.run()


if __name__ == "__main__":
    main()
