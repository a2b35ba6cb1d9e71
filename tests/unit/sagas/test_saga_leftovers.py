"""Leftovers: the steps whose compensation was given up, which an operator re-attempts or
resolves by hand; a FAILED run with leftovers does not run again until they are cleared."""

from __future__ import annotations

import pytest
from saga_driver import T0, Answer, Script, command, drive, ok, permanent, silence

from sagas import (
    CompensateStep,
    OperatorCancel,
    OperatorRecompensate,
    OperatorResolve,
    OperatorResume,
    OperatorRetry,
    Outcome,
    ProvisioningCompensationFailed,
    ProvisioningFailed,
    ProvisioningFailedEvent,
    ProvisioningRejected,
    ProvisioningRequested,
    SagaState,
    Status,
    decide,
    replay,
)

# create-admin-role is refused, so the tenant saga undoes activate-services, setup-billing and
# create-tenant; billing's undo answers 500 on each of its 4 attempts (3 retries by default).
REFUSAL = "role service refused"
BILLING_DOWN = "500 (gave up after 4 attempts)"
LATER = T0 + 3_600_000  # an hour after the run: when an operator gets to it


def failed_with_leftover() -> tuple[SagaState, list]:
    trace = drive(command("tenant"), Script(
        {"create-admin-role": permanent(REFUSAL)},
        compensations={"setup-billing": Answer(Outcome.PERMANENT_FAILURE, reason="500")}))
    return trace.saga, trace.events


def recompensate(step: str = "setup-billing", reason: str | None = "billing is back"
                 ) -> OperatorRecompensate:
    return OperatorRecompensate(request_id="req-1", operator="ops-grace", step=step,
                                reason=reason)


def resolve(step: str = "setup-billing") -> OperatorResolve:
    return OperatorResolve(request_id="req-1", operator="ops-grace", step=step,
                           reason="billing account closed by hand")


def test_a_compensation_given_up_is_a_leftover_with_its_reason() -> None:
    state, events = failed_with_leftover()

    assert state.status is Status.FAILED
    assert state.uncompensated_steps == {"setup-billing": BILLING_DOWN}
    assert state.compensated_steps == ("activate-services", "create-tenant")
    assert (state.failed_step, state.reason) == ("create-admin-role", REFUSAL)
    assert replay(events) == state


def test_a_re_attempt_undoes_the_leftover_under_the_same_key_and_fails_the_saga_again(
) -> None:
    state, events = failed_with_leftover()
    trace = drive(recompensate(), Script(compensations={"setup-billing": ok()}), state=state,
                  at=LATER)

    assert trace.event_names == ["ProvisioningOperatorAction",
                                 "ProvisioningCompensationStarted",
                                 "ProvisioningStepCompensated"]
    audit = trace.events[0]
    assert (audit.operator, audit.action, audit.step, audit.reason, audit.run) == (
        "ops-grace", "RECOMPENSATE", "setup-billing", "billing is back", 1)
    [call] = trace.of(CompensateStep)
    # A fresh attempt (the fifth), under the step's key: the participant knows what it undoes.
    assert (call.step, call.action, call.attempt, call.idempotency_key) == (
        "setup-billing", "delete-billing-account", 5, "req-1:1:setup-billing")
    assert call.params["tenantId"] == "tenant-7f3a91"
    while_running = trace.turns[0].after
    assert while_running.status is Status.COMPENSATING
    assert while_running.current_step == "setup-billing"
    assert while_running.uncompensated_steps == {"setup-billing": BILLING_DOWN}

    after = trace.saga
    assert after.status is Status.FAILED and after.current_step is None
    assert after.uncompensated_steps == {}
    assert after.compensated_steps == ("activate-services", "create-tenant", "setup-billing")
    # Still the run's failure, and its end: no second terminal event, no second reply.
    assert (after.failed_step, after.reason, after.finished_at) == (
        "create-admin-role", REFUSAL, state.finished_at)
    assert not trace.events_of(ProvisioningFailedEvent) and not trace.replies
    assert replay(events + trace.events) == after


def test_a_re_attempt_that_fails_again_keeps_the_leftover_with_the_new_reason() -> None:
    state, events = failed_with_leftover()
    trace = drive(recompensate(), Script(
        compensations={"setup-billing": Answer(Outcome.PERMANENT_FAILURE,
                                               reason="account locked")}),
        state=state, at=LATER)

    failures = trace.events_of(ProvisioningCompensationFailed)
    assert [(e.attempt, e.reason, e.next_retry_at) for e in failures] == [
        (5, "account locked (gave up after 5 attempts)", None)]
    after = trace.saga
    assert after.status is Status.FAILED
    assert after.uncompensated_steps == {
        "setup-billing": "account locked (gave up after 5 attempts)"}
    assert after.compensation_failed_steps == ("setup-billing",)
    assert after.finished_at == state.finished_at
    assert not trace.events_of(ProvisioningFailedEvent)
    assert replay(events + trace.events) == after


def test_a_re_attempt_without_answer_times_out_and_stays_a_leftover() -> None:
    state, events = failed_with_leftover()
    trace = drive(recompensate(), Script(compensations={"setup-billing": silence()}),
                  state=state, at=LATER)

    after = trace.saga
    assert after.status is Status.FAILED
    # The step's attempt timeout is 10 s (sagas/workflows.py defaults).
    assert after.uncompensated_steps == {
        "setup-billing": "no answer within 10000 ms (gave up after 5 attempts)"}
    assert trace.events[-1].occurred_at == LATER + 10_000
    assert replay(events + trace.events) == after


def test_resume_during_a_re_attempt_starts_another_fresh_attempt() -> None:
    state, _ = failed_with_leftover()
    waiting = drive(recompensate(), Script(compensations={"setup-billing": silence()}),
                    state=state, at=LATER).turns[0].after
    assert waiting.status is Status.COMPENSATING

    after, effects = decide(waiting, OperatorResume(request_id="req-1", operator="ops"),
                            LATER + 5)

    calls = [e for e in effects if isinstance(e, CompensateStep)]
    assert [(c.step, c.attempt) for c in calls] == [("setup-billing", 6)]
    assert after.status is Status.COMPENSATING


def test_resolving_a_leftover_by_hand_clears_it_with_an_audit_event_only() -> None:
    state, events = failed_with_leftover()
    trace = drive(resolve(), state=state, at=LATER)

    assert trace.event_names == ["ProvisioningOperatorAction"]
    audit = trace.events[0]
    assert (audit.operator, audit.action, audit.step, audit.reason) == (
        "ops-grace", "RESOLVE", "setup-billing", "billing account closed by hand")
    assert not trace.of(CompensateStep)
    after = trace.saga
    assert after.status is Status.FAILED and after.uncompensated_steps == {}
    # What happened stays on record: the automatic undo gave up, nobody compensated it.
    assert after.compensation_failed_steps == ("setup-billing",)
    assert "setup-billing" not in after.compensated_steps
    assert (after.reason, after.finished_at) == (REFUSAL, state.finished_at)
    assert replay(events + trace.events) == after


def _in_progress() -> SagaState:
    started = drive(command("tenant"), Script({"setup-billing": silence()}))
    return next(t.after for t in started.turns if t.after.current_step == "setup-billing")


def _compensating_with_leftover() -> SagaState:
    """Still undoing its own steps, with one leftover already given up."""
    trace = drive(command("tenant"), Script(
        {"create-admin-role": permanent()},
        compensations={"setup-billing": Answer(Outcome.PERMANENT_FAILURE, reason="500"),
                       "create-tenant": silence()}))
    return next(t.after for t in trace.turns if t.after.status is Status.COMPENSATING
                and t.after.uncompensated_steps)


def _re_attempt_in_flight() -> SagaState:
    state, _ = failed_with_leftover()
    return drive(recompensate(), Script(compensations={"setup-billing": silence()}),
                 state=state, at=LATER).turns[0].after


@pytest.mark.parametrize("action", [recompensate(), resolve()], ids=["recompensate", "resolve"])
@pytest.mark.parametrize("where", [
    "in_progress", "completed", "compensating", "re_attempt_in_flight", "not_a_leftover",
    "failed_without_leftovers",
])
def test_leftover_actions_are_ignored_unless_the_saga_is_failed_with_that_leftover(
    action: OperatorRecompensate | OperatorResolve, where: str
) -> None:
    state = {
        "in_progress": _in_progress,
        "completed": lambda: drive(command("tenant")).saga,
        "compensating": _compensating_with_leftover,
        "re_attempt_in_flight": _re_attempt_in_flight,
        "not_a_leftover": lambda: failed_with_leftover()[0],
        "failed_without_leftovers": lambda: drive(
            command("tenant"), Script({"create-admin-role": permanent()})).saga,
    }[where]()
    if where == "not_a_leftover":
        action = type(action)(**{**_fields(action), "step": "create-tenant"})

    assert decide(state, action, LATER) == (state, ())


def _fields(action: OperatorRecompensate | OperatorResolve) -> dict:
    return {name: getattr(action, name) for name in action.__slots__}


def test_no_next_run_while_leftovers_remain() -> None:
    state, events = failed_with_leftover()

    assert decide(state, OperatorRetry(request_id="req-1", operator="alice"), LATER) == (
        state, ())
    resent, effects = decide(state, command("tenant"), LATER)
    rejected = [e.event for e in effects if hasattr(e, "event")]
    assert [(type(e), e.code) for e in rejected] == [(ProvisioningRejected, "uncompensated")]
    assert rejected[0].reason == ("not run again: run 1 left setup-billing not compensated; an "
                                  "operator must re-attempt or resolve them first")
    replies = [e.response for e in effects if hasattr(e, "response")]
    assert replies == [ProvisioningFailed(request_id="req-1", run=1, reason=rejected[0].reason,
                                          failed_step=None, occurred_at=LATER)]
    assert resent.status is Status.FAILED and resent.run == 1
    assert resent.uncompensated_steps == state.uncompensated_steps

    cleared = drive(resolve(), state=resent, at=LATER + 1).saga
    next_run = drive(command("tenant"), state=cleared, at=LATER + 2)
    assert next_run.events_of(ProvisioningRequested)[0].run == 2
    assert next_run.saga.status is Status.COMPLETED and next_run.saga.uncompensated_steps == {}
    assert replay(events + [e.event for e in effects if hasattr(e, "event")]
                  + drive(resolve(), state=resent, at=LATER + 1).events
                  + next_run.events) == next_run.saga


def test_a_repeated_answer_or_a_cancel_changes_nothing_after_the_re_attempt() -> None:
    state, _ = failed_with_leftover()
    trace = drive(recompensate(), Script(compensations={"setup-billing": ok()}), state=state,
                  at=LATER)
    after = trace.saga
    answer = trace.turns[-1].input  # the participant's answer to attempt 5, delivered again

    assert decide(after, answer, LATER + 60_000) == (after, ())
    assert decide(after, OperatorCancel(request_id="req-1", operator="o", reason="r"),
                  LATER + 60_000) == (after, ())
