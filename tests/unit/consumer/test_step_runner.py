"""Steps run on the step threads; their outcomes come back to the loop, never an exception."""

from __future__ import annotations

import threading
import time

from consumer.participants.base import Action, Outcome, StepCall, StepOutcome
from consumer.steps import FinishedStep, StepRunner


def _call(step: str) -> StepCall:
    return StepCall(request_id="r-1", run=1, workflow_type="tenant", tenant_id=None, step=step,
                    action=Action.EXECUTE, attempt=1, idempotency_key=f"r-1:1:{step}",
                    params={}, deadline_at=None)


class Participant:
    def __init__(self) -> None:
        self.release = threading.Event()

    def call(self, call: StepCall) -> StepOutcome:
        if call.step == "raises":
            raise RuntimeError("a participant bug")
        if call.step == "stuck":
            self.release.wait()
        return StepOutcome.succeeded(step=call.step)


def _collect(runner: StepRunner, count: int, timeout_s: float = 5) -> list[FinishedStep]:
    finished: list[FinishedStep] = []
    deadline = time.monotonic() + timeout_s
    while len(finished) < count and time.monotonic() < deadline:
        runner.wait_for_any(0.05)
        finished += runner.finished()
    return finished


def test_every_submitted_step_comes_back_with_its_partition_and_generation() -> None:
    participant = Participant()
    runner = StepRunner(lambda call: participant, concurrency=4)
    for i in range(20):
        runner.submit(i % 3, 7, _call(f"step-{i}"))

    finished = _collect(runner, 20)

    assert sorted(f.call.step for f in finished) == sorted(f"step-{i}" for i in range(20))
    assert all(f.generation == 7 and f.outcome.outcome is Outcome.SUCCEEDED for f in finished)
    assert {f.call.step: f.partition for f in finished}["step-4"] == 1
    assert runner.running == 0
    runner.shutdown()


def test_a_participant_that_raises_is_a_transient_failure_of_its_step() -> None:
    participant = Participant()
    runner = StepRunner(lambda call: participant, concurrency=2)
    runner.submit(0, 1, _call("raises"))
    runner.submit(0, 1, _call("fine"))

    outcomes = {f.call.step: f.outcome for f in _collect(runner, 2)}

    assert outcomes["raises"].outcome is Outcome.TRANSIENT_FAILURE
    assert "RuntimeError" in (outcomes["raises"].reason or "")
    assert outcomes["fine"].outcome is Outcome.SUCCEEDED
    runner.shutdown()


def test_stopping_without_waiting_drops_queued_steps_and_leaves_a_stuck_one_behind() -> None:
    participant = Participant()
    runner = StepRunner(lambda call: participant, concurrency=1)
    runner.submit(0, 1, _call("stuck"))
    time.sleep(0.1)  # the one thread is in the stuck call
    runner.submit(0, 1, _call("queued"))

    started = time.monotonic()
    runner.shutdown(wait=False)
    assert time.monotonic() - started < 1

    participant.release.set()
    finished = _collect(runner, 2, timeout_s=1)
    assert [f.call.step for f in finished] == ["stuck"], "the queued step never started"
