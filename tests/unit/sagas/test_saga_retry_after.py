"""A participant's Retry-After: the next attempt is not before it (nor before the backoff), and
never after the step's deadline; every step call carries the saga's traceparent."""

from __future__ import annotations

import dataclasses

from saga_driver import T0, Answer, Script, command, drive, permanent, transient

from sagas import (
    DEFAULT_REGISTRY,
    TENANT_V1,
    CompensateStep,
    ExecuteStep,
    Outcome,
    ProvisioningFailedEvent,
    ProvisioningStepFailed,
    ProvisioningStepStarted,
    SetTimer,
    Status,
    TimerKind,
    WorkflowRegistry,
)

STEP = "create-admin-role"
TRACE = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def registry_with(**changes: object) -> WorkflowRegistry:
    """The default workflows with create-admin-role's limits changed."""
    steps = tuple(dataclasses.replace(s, **changes) if s.name == STEP else s
                  for s in TENANT_V1.steps)
    others = [w for w in DEFAULT_REGISTRY if w.type != "tenant"]
    return WorkflowRegistry([dataclasses.replace(TENANT_V1, steps=steps), *others])


# The step's policy is the seed's: 100 ms, then 200 ms, ...; its deadline here is 5 s.
REGISTRY = registry_with(deadline_ms=5_000, attempt_timeout_ms=2_000)


def rate_limited(retry_after_ms: int | None, reason: str = "HTTP 429: slow down") -> Answer:
    return Answer(Outcome.TRANSIENT_FAILURE, reason=reason, retry_after_ms=retry_after_ms)


def failures(trace: object) -> list[ProvisioningStepFailed]:
    return [e for e in trace.events_of(ProvisioningStepFailed) if e.step == STEP]  # type: ignore[attr-defined]


def starts(trace: object) -> list[ProvisioningStepStarted]:
    return [e for e in trace.events_of(ProvisioningStepStarted) if e.step == STEP]  # type: ignore[attr-defined]


def test_the_next_attempt_waits_for_a_retry_after_longer_than_the_backoff() -> None:
    trace = drive(command("tenant"), Script({(STEP, 1): rate_limited(1_000)}),
                  registry=REGISTRY)

    (failed,) = failures(trace)
    assert failed.transient and failed.reason == "HTTP 429: slow down"
    assert failed.next_retry_at == failed.occurred_at + 1_000  # not the 100 ms backoff
    (timer,) = [e for e in trace.of(SetTimer) if e.kind is TimerKind.RETRY and e.step == STEP]
    assert timer.fire_at == failed.next_retry_at  # the event and the timer agree
    assert [(s.attempt, s.occurred_at) for s in starts(trace)][1] == (2, failed.next_retry_at)
    assert trace.saga.status is Status.COMPLETED


def test_a_retry_after_shorter_than_the_backoff_changes_nothing() -> None:
    trace = drive(command("tenant"), Script({(STEP, 1): rate_limited(40),
                                             (STEP, 2): rate_limited(0)}), registry=REGISTRY)
    waits = [f.next_retry_at - f.occurred_at for f in failures(trace)]
    assert waits == [100, 200]
    assert trace.saga.status is Status.COMPLETED


def test_a_retry_after_counts_as_an_attempt_against_the_retries() -> None:
    trace = drive(command("tenant"), Script({STEP: rate_limited(500)}), registry=REGISTRY)
    assert [f.next_retry_at is not None for f in failures(trace)] == [True, True, True, False]
    assert [f.next_retry_at - f.occurred_at for f in failures(trace)[:3]] == [500, 500, 500]
    assert failures(trace)[-1].reason == "HTTP 429: slow down (gave up after 4 attempts)"


def test_a_wait_past_the_step_deadline_fails_the_step_for_good_at_once() -> None:
    trace = drive(command("tenant"), Script({(STEP, 1): rate_limited(10_000)}),
                  registry=REGISTRY)

    (failed,) = failures(trace)
    assert (failed.attempt, failed.transient, failed.next_retry_at) == (1, True, None)
    assert failed.reason == ("deadline exceeded before the next attempt (the participant asked "
                             "to wait 10000 ms); last error: HTTP 429: slow down")
    assert len(starts(trace)) == 1
    assert not [e for e in trace.of(SetTimer) if e.kind is TimerKind.RETRY and e.step == STEP]
    # Failed at the answer, not 10 s later; a transient failure may have acted: undone too.
    first = starts(trace)[0]
    assert failed.occurred_at == first.occurred_at + 10
    assert trace.saga.compensated_steps[0] == STEP
    assert isinstance(trace.events[-1], ProvisioningFailedEvent)
    assert trace.saga.status is Status.FAILED


def test_the_deadline_counts_from_the_first_attempt_across_waits() -> None:
    # 10 ms to answer, 3 s asked: attempt 2 starts at 3,010 ms (< 5,000); its answer at
    # 3,020 ms asks 3 s more, past the deadline at 5,000 ms.
    trace = drive(command("tenant"), Script({(STEP, 1): rate_limited(3_000),
                                             (STEP, 2): rate_limited(3_000)}),
                  registry=REGISTRY)
    first, second = starts(trace)
    assert second.occurred_at - first.occurred_at == 3_010
    assert second.step_deadline == first.occurred_at + 5_000
    retried, gave_up = failures(trace)
    assert retried.next_retry_at == second.occurred_at
    assert gave_up.next_retry_at is None
    assert gave_up.reason.startswith("deadline exceeded before the next attempt (the participant "
                                     "asked to wait 3000 ms)")


def test_an_absurd_retry_after_is_cut_to_the_deadline_not_scheduled() -> None:
    trace = drive(command("tenant"), Script({(STEP, 1): rate_limited(10**15)}),
                  registry=REGISTRY)
    (failed,) = failures(trace)
    assert failed.next_retry_at is None and trace.saga.status is Status.FAILED
    assert all(t.fire_at < T0 + 3_600_000 for t in trace.of(SetTimer))


def test_a_retry_after_on_a_permanent_refusal_is_ignored() -> None:
    refusal = dataclasses.replace(permanent("HTTP 404: no such role"), retry_after_ms=1_000)
    trace = drive(command("tenant"), Script({(STEP, 1): refusal}), registry=REGISTRY)
    (failed,) = failures(trace)
    assert (failed.transient, failed.next_retry_at, failed.reason) == (
        False, None, "HTTP 404: no such role")
    assert STEP not in trace.saga.compensated_steps  # a first-attempt "no" left nothing behind


def test_every_step_call_carries_the_saga_traceparent() -> None:
    start = dataclasses.replace(command("tenant"), trace_parent=TRACE)
    script = Script({("activate-services", 1): transient("busy"),
                     "create-admin-role": permanent("role quota reached")})
    trace = drive(start, script, registry=REGISTRY)

    calls = trace.of(ExecuteStep) + trace.of(CompensateStep)
    assert len(trace.of(ExecuteStep)) == 6 and len(trace.of(CompensateStep)) == 3
    assert {c.trace_parent for c in calls} == {TRACE}


def test_a_saga_without_a_traceparent_gives_its_calls_none() -> None:
    trace = drive(command("tenant"), Script({"create-admin-role": permanent("no")}))
    calls = trace.of(ExecuteStep) + trace.of(CompensateStep)
    assert calls and {c.trace_parent for c in calls} == {None}
