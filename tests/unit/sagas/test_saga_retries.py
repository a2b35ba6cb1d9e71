"""Transient failures are retried on timers; attempts time out; steps have a deadline."""

from __future__ import annotations

import dataclasses

from saga_driver import T0, Answer, Script, command, drive, ok, permanent, silence, transient

from sagas import (
    DEFAULT_REGISTRY,
    TENANT_V1,
    EmitEvent,
    ExecuteStep,
    Outcome,
    ProvisioningFailedEvent,
    ProvisioningStepFailed,
    ProvisioningStepStarted,
    RetryPolicy,
    Status,
    StepResult,
    TimerFired,
    TimerKind,
    WorkflowRegistry,
    decide,
    replay,
)


def registry_with(step: str, **changes: object) -> WorkflowRegistry:
    """The default workflows, with one tenant step's policy or limits changed (as version 1)."""
    steps = tuple(
        dataclasses.replace(s, **changes) if s.name == step else s for s in TENANT_V1.steps
    )
    others = [w for w in DEFAULT_REGISTRY if w.type != "tenant"]
    return WorkflowRegistry([dataclasses.replace(TENANT_V1, steps=steps), *others])


def test_a_transient_failure_is_retried_after_the_backoff_and_succeeds() -> None:
    trace = drive(command("tenant"), Script({("create-tenant", 1): transient("db busy")}))

    failed = trace.events_of(ProvisioningStepFailed)
    assert len(failed) == 1
    assert (failed[0].step, failed[0].attempt, failed[0].transient) == ("create-tenant", 1, True)
    assert failed[0].reason == "db busy"
    assert failed[0].next_retry_at == failed[0].occurred_at + 100
    started = [(e.step, e.attempt, e.occurred_at) for e in trace.events_of(ProvisioningStepStarted)]
    assert ("create-tenant", 2, failed[0].next_retry_at) in started
    assert trace.saga.status is Status.COMPLETED
    assert trace.saga.attempts["create-tenant"] == 2
    keys = {c.idempotency_key for c in trace.of(ExecuteStep) if c.step == "create-tenant"}
    assert keys == {"req-1:1:create-tenant"}  # every attempt carries the same key


def test_the_backoff_doubles_from_100_ms() -> None:
    script = Script({("setup-billing", a): transient() for a in (1, 2, 3)})
    trace = drive(command("tenant"), script)

    waits = [e.next_retry_at - e.occurred_at for e in trace.events_of(ProvisioningStepFailed)]
    assert waits == [100, 200, 400]
    assert trace.saga.status is Status.COMPLETED
    assert trace.saga.attempts["setup-billing"] == 4


def test_spent_retries_fail_the_step_for_good_and_compensate() -> None:
    trace = drive(command("tenant"), Script({"setup-billing": transient("billing down")}))

    failed = trace.events_of(ProvisioningStepFailed)
    assert [(e.attempt, e.transient) for e in failed] == [(1, True), (2, True), (3, True),
                                                          (4, True)]
    assert [e.next_retry_at is None for e in failed] == [False, False, False, True]
    assert failed[-1].reason == "billing down (gave up after 4 attempts)"
    assert isinstance(trace.events[-1], ProvisioningFailedEvent)
    assert trace.events[-1].failed_step == "setup-billing"
    assert trace.saga.status is Status.FAILED
    assert trace.saga.failed_step == "setup-billing"
    assert trace.saga.reason == "billing down (gave up after 4 attempts)"
    # The failed step first: an attempt whose answer was lost may have acted.
    assert trace.saga.compensated_steps == ("setup-billing", "create-tenant")


def test_a_first_attempt_refused_for_good_is_not_compensated() -> None:
    trace = drive(command("tenant"), Script({("setup-billing", 1): permanent("no such plan")}))

    assert trace.saga.status is Status.FAILED
    assert trace.saga.compensated_steps == ("create-tenant",)


def test_a_refusal_after_lost_answers_compensates_the_step_too() -> None:
    trace = drive(command("tenant"), Script({("setup-billing", 1): transient("timeout"),
                                             ("setup-billing", 2): permanent("no such plan")}))

    assert trace.saga.compensated_steps == ("setup-billing", "create-tenant")


def test_the_retry_count_is_configurable_per_step() -> None:
    registry = registry_with("setup-billing", retry=RetryPolicy(max_retries=1))
    trace = drive(command("tenant"), Script({"setup-billing": transient()}), registry=registry)

    assert [e.attempt for e in trace.events_of(ProvisioningStepFailed)] == [1, 2]
    assert trace.saga.status is Status.FAILED


def test_an_attempt_without_answer_times_out_and_is_retried() -> None:
    trace = drive(command("tenant"), Script({("setup-billing", 1): silence()}))

    failed = trace.events_of(ProvisioningStepFailed)
    assert len(failed) == 1
    assert (failed[0].step, failed[0].attempt, failed[0].transient) == ("setup-billing", 1, True)
    assert failed[0].reason == "no answer within 10000 ms"
    started = trace.events_of(ProvisioningStepStarted)
    first = next(e for e in started if e.step == "setup-billing")
    assert failed[0].occurred_at == first.deadline_at == first.occurred_at + 10_000
    assert trace.saga.status is Status.COMPLETED


def test_a_late_answer_after_the_timeout_is_ignored() -> None:
    late = Answer(Outcome.PERMANENT_FAILURE, reason="too late to matter", after_ms=15_000)
    trace = drive(command("tenant"), Script({("setup-billing", 1): late}))

    late_turns = [t for t in trace.turns
                  if isinstance(t.input, StepResult) and t.input.reason == "too late to matter"]
    assert len(late_turns) == 1
    assert late_turns[0].effects == () and late_turns[0].after is late_turns[0].before
    assert trace.saga.status is Status.COMPLETED


def test_a_duplicated_answer_changes_nothing() -> None:
    twice = Answer(Outcome.SUCCEEDED, {"tenantId": "tenant-7f3a91"}, deliveries=2)
    trace = drive(command("tenant"), Script({"create-tenant": twice}))

    results = [t for t in trace.turns
               if isinstance(t.input, StepResult) and t.input.step == "create-tenant"]
    assert len(results) == 2
    assert results[1].effects == () and results[1].after is results[1].before
    assert trace.saga.status is Status.COMPLETED
    assert trace.event_names.count("ProvisioningStepCompleted") == 5


def test_timers_of_finished_attempts_are_ignored() -> None:
    trace = drive(command("service"))

    timer_turns = [t for t in trace.turns if isinstance(t.input, TimerFired)]
    assert {t.input.kind for t in timer_turns} == {TimerKind.ATTEMPT_TIMEOUT,
                                                   TimerKind.STEP_DEADLINE}
    assert all(t.effects == () and t.after is t.before for t in timer_turns)


def test_the_step_deadline_fails_the_step_for_good() -> None:
    registry = registry_with("setup-billing", deadline_ms=25_000)
    trace = drive(command("tenant"), Script({"setup-billing": silence()}), registry=registry)

    failed = trace.events_of(ProvisioningStepFailed)
    assert [e.transient for e in failed] == [True, True, False]
    assert failed[-1].reason == "deadline exceeded"
    first = next(e for e in trace.events_of(ProvisioningStepStarted) if e.step == "setup-billing")
    assert failed[-1].occurred_at == first.step_deadline == first.occurred_at + 25_000
    assert trace.events_of(ProvisioningFailedEvent)[0].reason == "deadline exceeded"
    assert trace.saga.compensated_steps == ("setup-billing", "create-tenant")


def test_no_attempt_is_waited_for_beyond_the_step_deadline() -> None:
    registry = registry_with("setup-billing", deadline_ms=25_000)
    trace = drive(command("tenant"), Script({"setup-billing": silence()}), registry=registry)

    for started in trace.events_of(ProvisioningStepStarted):
        if started.step == "setup-billing":
            assert started.deadline_at <= started.step_deadline


def test_a_retry_that_would_start_after_the_deadline_is_not_scheduled() -> None:
    registry = registry_with(
        "setup-billing", deadline_ms=3_000, retry=RetryPolicy(initial_backoff_ms=5_000)
    )
    trace = drive(command("tenant"), Script({"setup-billing": transient("slow")}),
                  registry=registry)

    failed = trace.events_of(ProvisioningStepFailed)
    assert len(failed) == 1 and failed[0].next_retry_at is None
    assert failed[0].reason == "deadline exceeded before the next attempt; last error: slow"
    assert trace.saga.status is Status.FAILED


def test_a_permanent_failure_is_never_retried() -> None:
    trace = drive(command("tenant"), Script({"setup-billing": permanent("card refused")}))

    failed = trace.events_of(ProvisioningStepFailed)
    assert [(e.attempt, e.transient, e.next_retry_at) for e in failed] == [(1, False, None)]
    assert trace.saga.reason == "card refused"


def test_a_retry_timer_fired_twice_starts_one_attempt() -> None:
    trace = drive(command("tenant"), Script({("create-tenant", 1): transient()}))
    retry_turn = next(t for t in trace.turns
                      if isinstance(t.input, TimerFired) and t.input.kind is TimerKind.RETRY)

    again, effects = decide(retry_turn.after, retry_turn.input, retry_turn.now + 1)
    assert effects == () and again is retry_turn.after


def test_an_answer_for_another_run_or_saga_is_ignored() -> None:
    state, _ = decide(None, command("tenant"), T0)
    current = StepResult(request_id="req-1", run=1, step="validate-entity", attempt=1,
                         outcome=Outcome.SUCCEEDED)
    for stale in (
        dataclasses.replace(current, run=2),
        dataclasses.replace(current, request_id="req-2"),
        dataclasses.replace(current, attempt=2),
        dataclasses.replace(current, step="create-tenant"),
    ):
        assert decide(state, stale, T0 + 5) == (state, ())
    assert decide(state, current, T0 + 5)[0].completed_steps == ("validate-entity",)


def test_replay_reproduces_a_state_with_retries_and_timeouts() -> None:
    script = Script({("create-tenant", 1): transient(), ("setup-billing", 1): silence(),
                     ("setup-billing", 2): ok()})
    trace = drive(command("tenant"), script)

    events_so_far = []
    for turn in trace.turns:
        events_so_far += [e.event for e in turn.effects if isinstance(e, EmitEvent)]
        assert replay(events_so_far) == turn.after
