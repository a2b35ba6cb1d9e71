"""replay(events) rebuilds a state; resume(state) continues a saga restored after a restart."""

from __future__ import annotations

import dataclasses

import pytest
from saga_driver import T0, Script, command, consequences, drive, permanent, silence, transient

from sagas import (
    CompensateStep,
    ExecuteStep,
    OperatorResume,
    ProvisioningRejected,
    ProvisioningStepStarted,
    ReplayError,
    SetTimer,
    Status,
    TimerKind,
    decide,
    replay,
    resume,
)

BUMPY = Script(
    {("create-tenant", 1): transient(), ("setup-billing", 1): silence(),
     "create-admin-role": permanent("no admin role today")},
    compensations={("setup-billing", 1): transient(), ("create-tenant", 1): silence()},
)


def test_replay_of_nothing_is_no_saga() -> None:
    assert replay([]) is None


def test_replay_skips_events_it_has_already_applied() -> None:
    trace = drive(command("tenant"), BUMPY)
    doubled = [e for event in trace.events for e in (event, event)]

    assert replay(doubled) == trace.saga


def test_replay_refuses_a_trail_with_a_gap() -> None:
    events = drive(command("tenant")).events
    with pytest.raises(ReplayError, match="events 3..3 are missing"):
        replay(events[:2] + events[3:])


def test_replay_refuses_events_of_another_saga() -> None:
    events = drive(command("tenant")).events
    other = drive(command("tenant", request_id="req-2")).events
    with pytest.raises(ReplayError, match="req-2"):
        replay(events + other[1:])


def test_replay_refuses_a_trail_that_does_not_start_with_a_request() -> None:
    events = drive(command("tenant")).events
    with pytest.raises(ReplayError, match="before any ProvisioningRequested"):
        replay(events[1:])


def test_replay_of_an_invalid_command_is_no_saga() -> None:
    rejected = ProvisioningRejected(request_id="req-1", sequence=0, run=0, workflow_type="tenant",
                                    occurred_at=T0, reason="invalid command: x", code="invalid")
    assert replay([rejected]) is None
    assert replay([rejected, *drive(command("tenant")).events]).status is Status.COMPLETED


def test_resume_issues_the_attempt_in_flight_again_with_its_timers() -> None:
    trace = drive(command("tenant"), Script({"setup-billing": silence()}))
    state = next(t.after for t in trace.turns if t.after.current_step == "setup-billing")

    effects = resume(state, state.updated_at + 1)

    call = next(e for e in effects if isinstance(e, ExecuteStep))
    assert (call.step, call.attempt, call.idempotency_key) == ("setup-billing", 1,
                                                               "req-1:1:setup-billing")
    assert call.deadline_at == state.attempt_deadline
    timers = {(e.kind, e.fire_at) for e in effects if isinstance(e, SetTimer)}
    assert timers == {(TimerKind.ATTEMPT_TIMEOUT, state.attempt_deadline),
                      (TimerKind.STEP_DEADLINE, state.step_deadline)}


def test_resume_does_not_reissue_an_attempt_whose_time_is_up() -> None:
    state, _ = _first_state_where(lambda s: s.current_step == "setup-billing")

    effects = resume(state, state.attempt_deadline + 1)

    assert not any(isinstance(e, ExecuteStep) for e in effects)
    assert SetTimer(request_id="req-1", run=1, kind=TimerKind.ATTEMPT_TIMEOUT,
                    step="setup-billing", attempt=1, fire_at=state.attempt_deadline) in effects


def test_resume_of_a_saga_waiting_for_a_retry_sets_the_retry_timer() -> None:
    state, _ = _first_state_where(lambda s: s.waiting_for_retry)

    effects = resume(state, state.updated_at + 1)

    assert [(e.kind, e.step, e.attempt, e.fire_at) for e in effects] == [
        (TimerKind.STEP_DEADLINE, "create-tenant", 1, state.step_deadline),
        (TimerKind.RETRY, "create-tenant", 1, state.next_retry_at),
    ]


def test_resume_of_a_compensation_in_flight_calls_it_again() -> None:
    state, _ = _first_state_where(lambda s: s.status is Status.COMPENSATING
                                  and s.attempt_in_flight)

    effects = resume(state, state.updated_at + 1)

    call = next(e for e in effects if isinstance(e, CompensateStep))
    assert (call.step, call.action, call.attempt) == ("activate-services",
                                                      "deactivate-services", 1)
    assert [e.kind for e in effects if isinstance(e, SetTimer)] == [
        TimerKind.COMPENSATION_TIMEOUT
    ]


def test_resume_of_a_compensation_waiting_for_a_retry_sets_its_timer() -> None:
    state, _ = _first_state_where(lambda s: s.status is Status.COMPENSATING
                                  and s.waiting_for_retry)

    effects = resume(state, state.updated_at + 1)

    assert [(e.kind, e.step, e.attempt) for e in effects] == [
        (TimerKind.COMPENSATION_RETRY, "setup-billing", 1)
    ]


def test_resume_of_a_finished_saga_does_nothing() -> None:
    assert resume(drive(command("tenant")).saga, T0) == ()
    assert resume(drive(command("tenant"), BUMPY).saga, T0) == ()


def test_resume_copes_with_a_snapshot_without_attempt_deadline() -> None:
    state, _ = _first_state_where(lambda s: s.current_step == "setup-billing")
    old = dataclasses.replace(state, attempt_deadline=None)

    effects = resume(old, 5_000)

    assert any(isinstance(e, ExecuteStep) for e in effects)
    timeout = next(e for e in effects
                   if isinstance(e, SetTimer) and e.kind is TimerKind.ATTEMPT_TIMEOUT)
    assert timeout.fire_at == 5_000 + 10_000


def test_a_saga_restored_after_any_turn_finishes_as_if_nothing_happened() -> None:
    whole = drive(command("tenant"), BUMPY)

    for index, turn in enumerate(whole.turns):
        if turn.after is None or turn.after.is_terminal:
            continue
        now = turn.now + 1
        restarted = [c for e in resume(turn.after, now) for c in consequences(e, now, BUMPY)]
        rest = drive(restarted, BUMPY, state=turn.after)
        before = [e for t in whole.turns[: index + 1] for e in _events(t)]

        assert rest.saga.status is whole.saga.status, f"after turn {index}"
        assert rest.saga.compensated_steps == whole.saga.compensated_steps
        assert replay(before + rest.events) == rest.saga
        starts = [(e.step, e.attempt) for e in before + rest.events
                  if isinstance(e, ProvisioningStepStarted)]
        assert len(starts) == len(set(starts)), "an attempt was started twice"


def _first_state_where(predicate):
    for turn in drive(command("tenant"), BUMPY).turns:
        if turn.after is not None and predicate(turn.after):
            return turn.after, turn
    raise AssertionError("no such state in the run")


def _events(turn):
    return [e.event for e in turn.effects if hasattr(e, "event")]


def test_resume_during_compensation_never_runs_a_step_forward_again() -> None:
    """Restored while undoing (after a restart) or resumed by an operator: the saga goes on
    with the compensation it waits on, a fresh attempt under the same key; the step it is
    undoing, or any other, is never executed again."""
    state, _ = _first_state_where(lambda s: s.status is Status.COMPENSATING
                                  and s.attempt_in_flight)
    restored = resume(state, state.updated_at + 1)
    after, effects = decide(state, OperatorResume(request_id=state.request_id,
                                                  operator="olga", reason="stuck"),
                            state.updated_at + 1)

    for found in (restored, effects):
        assert not [e for e in found if isinstance(e, ExecuteStep)]
    [undo] = [e for e in effects if isinstance(e, CompensateStep)]
    assert (undo.step, undo.attempt) == (state.current_step, state.current_attempt + 1)
    assert undo.idempotency_key == f"{state.request_id}:{state.run}:{state.current_step}"
    assert after is not None and after.status is Status.COMPENSATING
