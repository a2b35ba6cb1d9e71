"""How the worker's loop takes its in-process steps' outcomes (no broker is needed: the
worker's Kafka clients are created, never used):

- on every turn, also while the last transaction's commit is still in flight
  (`Worker._drain_finished`): a slow commit (300-900 ms on a busy broker) must not hold every
  saga's next step, and behind them, by flow control, the commands;
- as soon as one arrives: while steps run, the loop waits for their outcomes, not for the
  whole poll timeout (`Worker._next_batch`; each of a saga's steps waited 2 ms for nothing).
"""

from __future__ import annotations

import time

from consumer.participants.base import Action, StepCall, StepOutcome
from consumer.worker import Worker, WorkerOptions
from provisioning.settings import Settings


class Noop:
    def __init__(self, takes_s: float = 0.0) -> None:
        self.takes_s = takes_s

    def call(self, call: StepCall) -> StepOutcome:
        time.sleep(self.takes_s)
        return StepOutcome.succeeded()


def _worker(participant: Noop) -> Worker:
    return Worker(Settings(kafka_bootstrap_servers="127.0.0.1:9"), lambda call: participant,
                  WorkerOptions(group_id="g", instance_id="i", step_concurrency=2))


def _call(i: int) -> StepCall:
    return StepCall(request_id=f"r-{i}", run=1, workflow_type="tenant", tenant_id=None,
                    step="create-tenant", action=Action.EXECUTE, attempt=1,
                    idempotency_key=f"r-{i}:1:create-tenant", params={})


def test_outcomes_are_taken_while_the_last_commit_is_in_flight() -> None:
    worker = _worker(Noop())
    try:
        handled: list[object] = []
        worker._handle_finished = handled.append  # type: ignore[method-assign]
        # The transaction's clock starts when the last commit starts: that one has now been
        # in flight for 5 s, far beyond the commit interval.
        worker.checkpoint.since = time.monotonic() - 5
        for i in range(10):
            worker.steps.submit(0, 0, _call(i))
        deadline = time.monotonic() + 5
        while len(handled) < 10 and time.monotonic() < deadline:
            worker._drain_finished()
            time.sleep(0.01)
        assert sorted(step.call.request_id for step in handled) == sorted(  # type: ignore[attr-defined]
            f"r-{i}" for i in range(10))
    finally:
        worker.close()


def test_a_steps_outcome_ends_the_loops_wait() -> None:
    worker = _worker(Noop(takes_s=0.05))
    try:
        worker.steps.submit(0, 0, _call(1))
        started = time.monotonic()
        assert worker._next_batch(2.0) == []  # no record: the broker is not there
        waited = time.monotonic() - started
        assert waited < 1.0, f"waited {waited:.2f} s for a step of 0.05 s"
        assert [step.call.request_id for step in worker.steps.finished()] == ["r-1"]
    finally:
        worker.close()
