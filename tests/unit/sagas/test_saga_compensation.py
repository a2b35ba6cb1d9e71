"""A step failing for good undoes the completed steps in reverse order, then the run FAILS."""

from __future__ import annotations

import pytest
from saga_driver import T0, Answer, Script, command, drive, ok, permanent, silence, transient

from sagas import (
    DEFAULT_REGISTRY,
    CompensateStep,
    ExecuteStep,
    OperatorCancel,
    OperatorResume,
    Outcome,
    ProvisioningCompensationFailed,
    ProvisioningCompensationStarted,
    ProvisioningFailed,
    ProvisioningFailedEvent,
    ProvisioningStarted,
    ProvisioningStepCompensated,
    ProvisioningStepCompleted,
    ProvisioningStepFailed,
    Status,
    StepResult,
    decide,
    replay,
)

POSITIONS = [
    (w.type, index) for w in DEFAULT_REGISTRY for index in range(len(w.steps))
]


@pytest.mark.parametrize(("workflow_type", "index"), POSITIONS)
def test_a_permanent_failure_at_any_step_compensates_in_exact_reverse_order(
    workflow_type: str, index: int
) -> None:
    workflow = DEFAULT_REGISTRY.latest(workflow_type)
    failing = workflow.steps[index]
    trace = drive(command(workflow_type), Script({failing.name: permanent("nope")}))

    done = [s for s in workflow.steps[:index]]
    undone = [s for s in reversed(done) if s.compensation is not None]
    after_failure = trace.events[trace.event_names.index("ProvisioningStepFailed") + 1:]
    expected = []
    for step in undone:
        expected += [("ProvisioningCompensationStarted", step.name),
                     ("ProvisioningStepCompensated", step.name)]
    expected += [("ProvisioningFailedEvent", None)]
    assert [(type(e).__name__, getattr(e, "step", None)) for e in after_failure] == expected

    calls = trace.of(CompensateStep)
    assert [(c.step, c.action, c.participant) for c in calls] == [
        (s.name, s.compensation, s.participant) for s in undone
    ]
    assert all(c.idempotency_key == f"req-1:1:{c.step}" for c in calls)
    state = trace.saga
    assert state.status is Status.FAILED
    assert (state.failed_step, state.reason) == (failing.name, "nope")
    assert state.completed_steps == tuple(s.name for s in done)
    assert state.compensated_steps == tuple(s.name for s in undone)
    assert trace.events[-1] == ProvisioningFailedEvent(
        request_id="req-1", sequence=len(trace.events), run=1, workflow_type=workflow_type,
        tenant_id=state.tenant_id, occurred_at=state.finished_at, reason="nope",
        failed_step=failing.name,
    )
    assert trace.replies[-1] == ProvisioningFailed(
        request_id="req-1", run=1, reason="nope", failed_step=failing.name,
        occurred_at=state.finished_at,
    )
    assert replay(trace.events) == state


def test_compensations_run_one_at_a_time() -> None:
    trace = drive(command("tenant"), Script({"create-admin-role": permanent()}))

    for turn in trace.turns:
        assert len([e for e in turn.effects if isinstance(e, CompensateStep)]) <= 1


def test_a_failing_compensation_is_retried_then_recorded_and_skipped() -> None:
    script = Script(
        {"create-admin-role": permanent("role service refused")},
        compensations={"setup-billing": Answer(Outcome.PERMANENT_FAILURE, reason="500")},
    )
    trace = drive(command("tenant"), script)

    failures = trace.events_of(ProvisioningCompensationFailed)
    assert [(e.step, e.attempt) for e in failures] == [("setup-billing", a) for a in (1, 2, 3, 4)]
    assert [e.next_retry_at - e.occurred_at for e in failures[:3]] == [100, 200, 400]
    assert failures[-1].next_retry_at is None
    assert failures[-1].reason == "500 (gave up after 4 attempts)"
    starts = trace.events_of(ProvisioningCompensationStarted)
    assert [(e.step, e.attempt) for e in starts] == [
        ("activate-services", 1), *[("setup-billing", a) for a in (1, 2, 3, 4)],
        ("create-tenant", 1),
    ]
    assert trace.steps_in(ProvisioningStepCompensated) == ["activate-services", "create-tenant"]
    state = trace.saga
    assert state.status is Status.FAILED
    assert state.compensation_failed_steps == ("setup-billing",)
    assert state.compensation_attempts == {"activate-services": 1, "setup-billing": 4,
                                           "create-tenant": 1}
    assert (state.failed_step, state.reason) == ("create-admin-role", "role service refused")
    assert replay(trace.events) == state


def test_a_compensation_that_fails_once_succeeds_on_retry() -> None:
    script = Script({"activate-services": permanent()},
                    compensations={("setup-billing", 1): transient("lock held")})
    trace = drive(command("tenant"), script)

    assert trace.steps_in(ProvisioningStepCompensated) == ["setup-billing", "create-tenant"]
    assert [(e.step, e.attempt) for e in trace.events_of(ProvisioningCompensationFailed)] == [
        ("setup-billing", 1)
    ]
    assert trace.saga.compensation_failed_steps == ()


def test_a_compensation_without_answer_times_out_and_is_retried() -> None:
    script = Script({"activate-services": permanent()},
                    compensations={("create-tenant", 1): silence()})
    trace = drive(command("tenant"), script)

    failed = trace.events_of(ProvisioningCompensationFailed)
    assert [(e.step, e.attempt, e.reason) for e in failed] == [
        ("create-tenant", 1, "no answer within 10000 ms")
    ]
    assert trace.steps_in(ProvisioningStepCompensated) == ["setup-billing", "create-tenant"]


def test_a_failure_before_anything_changed_fails_at_once() -> None:
    trace = drive(command("tenant"), Script({"validate-entity": permanent("not eligible")}))

    assert trace.event_names == ["ProvisioningRequested", "ProvisioningStepStarted",
                                 "ProvisioningStepFailed", "ProvisioningFailedEvent"]
    assert trace.of(CompensateStep) == []
    assert [type(r) for r in trace.replies] == [ProvisioningStarted, ProvisioningFailed]


def test_a_success_without_the_identifying_output_is_undone_and_fails() -> None:
    trace = drive(command("tenant"), Script({"create-tenant": ok(name="acme")}))

    assert trace.steps_in(ProvisioningStepCompleted) == ["validate-entity", "create-tenant"]
    failed = trace.events_of(ProvisioningStepFailed)[-1]
    assert failed.reason == (
        "create-tenant succeeded without the output tenantId that names the result"
    )
    assert trace.steps_in(ProvisioningStepCompensated) == ["create-tenant"]
    assert trace.saga.status is Status.FAILED


def test_an_operator_cancel_compensates_what_completed() -> None:
    started = drive(command("tenant"), Script({"setup-billing": silence()}))
    # Stop just before setup-billing's attempt times out: it is running.
    running = next(t.after for t in started.turns
                   if t.after.current_step == "setup-billing")
    assert running.status is Status.IN_PROGRESS
    trace = drive(OperatorCancel(request_id="req-1", operator="alice", reason="wrong plan"),
                  state=running, at=running.updated_at + 5)

    assert trace.event_names[:3] == ["ProvisioningOperatorAction", "ProvisioningStepFailed",
                                     "ProvisioningCompensationStarted"]
    audit = trace.events[0]
    assert (audit.operator, audit.action, audit.reason) == ("alice", "CANCEL", "wrong plan")
    # The running step may act before it hears of the cancel: it is undone first.
    assert trace.steps_in(ProvisioningStepCompensated) == ["setup-billing", "create-tenant"]
    state = trace.saga
    assert state.status is Status.FAILED
    assert state.reason == "cancelled by alice: wrong plan"
    assert state.failed_step == "setup-billing"
    assert trace.events[-1].reason == "cancelled by alice: wrong plan"

    # The abandoned attempt's answer arrives late: it changes nothing.
    late = StepResult(request_id="req-1", run=1, step="setup-billing", attempt=1,
                      outcome=Outcome.SUCCEEDED)
    assert decide(state, late, state.updated_at + 1) == (state, ())


def test_cancel_does_nothing_once_the_saga_compensates_or_ended() -> None:
    failing = drive(command("tenant"), Script({"setup-billing": permanent()},
                                              compensations={"create-tenant": silence()}))
    compensating = next(t.after for t in failing.turns
                        if t.after.status is Status.COMPENSATING)
    cancel = OperatorCancel(request_id="req-1", operator="bob", reason="stop")

    assert decide(compensating, cancel, T0 + 1) == (compensating, ())
    done = drive(command("tenant")).saga
    assert decide(done, cancel, T0 + 1) == (done, ())


def test_the_failed_step_is_not_called_again_while_compensating() -> None:
    trace = drive(command("tenant"), Script({"setup-billing": permanent()}))

    calls = [c.step for c in trace.of(ExecuteStep)]
    assert calls == ["validate-entity", "create-tenant", "setup-billing"]


def test_an_operator_resume_starts_a_fresh_attempt_of_the_waiting_step() -> None:
    started = drive(command("tenant"), Script({"setup-billing": silence()}))
    waiting = next(t.after for t in started.turns if t.after.current_step == "setup-billing")
    trace = drive(OperatorResume(request_id="req-1", operator="bob", reason="billing is back"),
                  state=waiting, at=waiting.updated_at + 5)

    audit, restarted = trace.events[:2]
    assert (audit.operator, audit.action, audit.reason) == ("bob", "RESUME", "billing is back")
    assert (restarted.step, restarted.attempt) == ("setup-billing", waiting.current_attempt + 1)
    assert trace.saga.status is Status.COMPLETED  # the script answers the fresh attempt
    finished = trace.saga
    assert decide(finished, OperatorResume(request_id="req-1", operator="bob"),
                  finished.updated_at + 1) == (finished, ())
