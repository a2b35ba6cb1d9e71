"""The seed's idempotency by requestId: duplicates answer, conflicts are rejected, a FAILED
request runs again."""

from __future__ import annotations

import dataclasses

from saga_driver import PARAMS, RESOURCE_IDS, T0, Script, command, drive, permanent, transient

from sagas import (
    ExecuteStep,
    OperatorRetry,
    PersistState,
    ProvisioningCompleted,
    ProvisioningFailed,
    ProvisioningRejected,
    ProvisioningRequested,
    ProvisioningStarted,
    ProvisioningStepStarted,
    Reply,
    Status,
    decide,
    replay,
)


def completed():
    return drive(command("tenant")).saga


def failed(**overrides):
    return drive(command("tenant", **overrides),
                 Script({"setup-billing": permanent("card refused")})).saga


def in_progress():
    state, _ = decide(None, command("tenant"), T0)
    return state


def test_a_duplicate_of_a_completed_request_answers_completed_and_runs_nothing() -> None:
    state = completed()
    again, effects = decide(state, command("tenant", reply_to="other.replies"), T0 + 60_000)

    assert again is state
    assert effects == (Reply(reply_to="other.replies", response=ProvisioningCompleted(
        request_id="req-1", run=1, resource_id=RESOURCE_IDS["tenant"], occurred_at=T0 + 60_000,
    )),)


def test_a_duplicate_of_a_running_request_answers_started_and_runs_nothing() -> None:
    state = in_progress()
    again, effects = decide(state, command("tenant"), T0 + 3)

    assert again is state
    assert effects == (Reply(reply_to="replies", response=ProvisioningStarted(
        request_id="req-1", run=1, occurred_at=T0 + 3)),)


def test_a_duplicate_while_compensating_answers_started() -> None:
    trace = drive(command("tenant"), Script({"setup-billing": permanent()}))
    compensating = next(t.after for t in trace.turns if t.after.status is Status.COMPENSATING)
    again, effects = decide(compensating, command("tenant"), T0 + 3)

    assert again is compensating
    assert [type(e.response) for e in effects] == [ProvisioningStarted]


def test_a_duplicate_without_reply_to_has_no_effect_at_all() -> None:
    for state in (completed(), in_progress()):
        assert decide(state, command("tenant", reply_to=None), T0 + 5) == (state, ())


def test_the_same_requestid_with_another_payload_is_rejected_as_a_conflict() -> None:
    for state in (in_progress(), completed(), failed()):
        other = command("tenant", params={**PARAMS["tenant"], "subscriptionPlan": "FREE"})
        after, effects = decide(state, other, T0 + 90_000)

        rejected = [e.event for e in effects if hasattr(e, "event")]
        assert rejected == [ProvisioningRejected(
            request_id="req-1", sequence=state.sequence + 1, run=state.run,
            workflow_type="tenant", tenant_id=state.tenant_id, occurred_at=T0 + 90_000,
            reason=rejected[0].reason, code="conflict",
        )]
        assert "conflict" in rejected[0].reason
        replies = [e.response for e in effects if isinstance(e, Reply)]
        assert len(replies) == 1 and isinstance(replies[0], ProvisioningFailed)
        assert "conflict" in replies[0].reason and replies[0].failed_step is None
        assert not any(isinstance(e, ExecuteStep) for e in effects)
        # Only the sequence number moved on; the snapshot is persisted for that.
        assert after == dataclasses.replace(state, sequence=state.sequence + 1)
        assert isinstance(effects[-1], PersistState) and effects[-1].state == after


def test_another_workflow_type_under_the_same_requestid_is_a_conflict() -> None:
    after, effects = decide(completed(), command("service"), T0 + 1)

    assert [e.event.code for e in effects if hasattr(e, "event")] == ["conflict"]
    assert after.status is Status.COMPLETED


def test_replay_handles_a_rejection_in_the_trail() -> None:
    trace = drive(command("tenant"))
    other = command("tenant", params={**PARAMS["tenant"], "entityId": "entity-other"})
    after, effects = decide(trace.saga, other, T0 + 90_000)
    events = trace.events + [e.event for e in effects if hasattr(e, "event")]

    assert replay(events) == after


def test_a_resend_after_failed_starts_the_next_run() -> None:
    state = failed()
    trace = drive(command("tenant"), state=state, at=T0 + 120_000)

    requested = trace.events[0]
    assert isinstance(requested, ProvisioningRequested)
    assert (requested.run, requested.sequence) == (2, state.sequence + 1)
    assert {e.run for e in trace.events} == {2}
    assert [e.sequence for e in trace.events] == list(
        range(state.sequence + 1, state.sequence + 1 + len(trace.events))
    )
    assert {c.idempotency_key.rsplit(":", 1)[0] for c in trace.of(ExecuteStep)} == {"req-1:2"}
    final = trace.saga
    assert final.status is Status.COMPLETED and final.run == 2
    assert final.failed_step is None and final.reason is None
    assert final.attempts == {s: 1 for s in final.completed_steps}
    assert final.compensated_steps == ()
    assert final.started_at == T0 + 120_000
    assert [type(r) for r in trace.replies] == [ProvisioningStarted, ProvisioningCompleted]
    assert trace.replies[0].run == 2


def test_a_new_run_starts_clean() -> None:
    state = failed()
    assert state.completed_steps and state.compensated_steps and state.outputs

    after, _ = decide(state, command("tenant"), T0 + 120_000)
    assert after.run == 2
    assert after.completed_steps == after.compensated_steps == ()
    assert after.outputs == {} and after.attempts == {"validate-entity": 1}
    assert after.tenant_id is None  # the failed run's tenant was deleted; the new one is new
    assert after.finished_at is None


def test_every_run_has_exactly_one_terminal_event() -> None:
    first = drive(command("tenant"), Script({"create-tenant": permanent()}))
    second = drive(command("tenant"), state=first.saga, at=T0 + 120_000)
    events = first.events + second.events

    terminal = [(e.run, type(e).__name__) for e in events
                if type(e).__name__ in ("ProvisioningSucceeded", "ProvisioningFailedEvent")]
    assert terminal == [(1, "ProvisioningFailedEvent"), (2, "ProvisioningSucceeded")]
    assert replay(events) == second.saga


def test_an_operator_retry_of_a_failed_request_starts_the_next_run() -> None:
    state = failed()
    trace = drive(OperatorRetry(request_id="req-1", operator="alice"), state=state,
                  at=T0 + 300_000)

    audit, requested = trace.events[:2]
    assert (audit.operator, audit.action, audit.run) == ("alice", "RETRY", 1)
    assert (requested.run, requested.requested_by) == (2, "alice")
    assert requested.params == state.params and requested.payload_hash == state.payload_hash
    assert requested.reply_to == "replies"
    assert trace.saga.status is Status.COMPLETED
    assert replay(drive(command("tenant"), Script({"setup-billing": permanent("card refused")}))
                  .events + trace.events) == trace.saga


def test_an_operator_retry_records_the_operators_reason() -> None:
    trace = drive(OperatorRetry(request_id="req-1", operator="alice", reason="card replaced"),
                  state=failed(), at=T0 + 300_000)
    assert (trace.events[0].action, trace.events[0].reason) == ("RETRY", "card replaced")


def test_an_operator_retry_of_anything_but_failed_does_nothing() -> None:
    retry = OperatorRetry(request_id="req-1", operator="alice")
    for state in (in_progress(), completed()):
        assert decide(state, retry, T0 + 1) == (state, ())
    assert decide(None, retry, T0) == (None, ())


def test_an_operator_retry_of_a_failed_service_keeps_the_commands_tenant() -> None:
    state = drive(command("service"), Script({"init-resources": permanent()})).saga
    after, _ = decide(state, OperatorRetry(request_id="req-1", operator="ops"), T0 + 1)

    assert after.tenant_id == "tenant-7f3a91"


def test_an_invalid_command_is_rejected_and_never_becomes_a_saga() -> None:
    params = {k: v for k, v in PARAMS["tenant"].items() if k != "entityId"}
    after, effects = decide(None, command("tenant", params=params), T0)

    assert after is None
    events = [e.event for e in effects if hasattr(e, "event")]
    assert [(e.code, e.sequence, e.run) for e in events] == [("invalid", 0, 0)]
    assert events[0].reason == "invalid command: missing parameters: entityId"
    replies = [e.response for e in effects if isinstance(e, Reply)]
    assert [type(r) for r in replies] == [ProvisioningFailed]
    assert not any(isinstance(e, ExecuteStep | PersistState) for e in effects)


def test_an_unknown_workflow_type_is_rejected() -> None:
    cmd = dataclasses.replace(command("tenant"), workflow_type="cart")
    after, effects = decide(None, cmd, T0)

    assert after is None
    assert "unknown workflow type 'cart'" in effects[0].event.reason


def test_inputs_of_another_request_never_touch_this_saga() -> None:
    for state in (in_progress(), failed()):
        assert decide(state, OperatorRetry(request_id="req-2", operator="al"), T0) == (state, ())
        assert decide(state, command("tenant", request_id="req-2"), T0) == (state, ())


def test_a_payload_hash_ignores_the_order_of_parameters() -> None:
    reordered = dict(reversed(list(PARAMS["tenant"].items())))
    state = in_progress()
    again, effects = decide(state, command("tenant", params=reordered), T0 + 1)

    assert again is state and [type(e.response) for e in effects] == [ProvisioningStarted]


def test_a_duplicate_during_a_retry_wait_does_not_start_an_attempt() -> None:
    trace = drive(command("tenant"), Script({("create-tenant", 1): transient()}))
    waiting = next(t.after for t in trace.turns if t.after.waiting_for_retry)
    again, effects = decide(waiting, command("tenant"), waiting.updated_at + 1)

    assert again is waiting
    assert not any(isinstance(e, ExecuteStep) for e in effects)
    assert ProvisioningStepStarted not in {type(getattr(e, "event", None)) for e in effects}


# --- after the idempotency window: a saga the worker forgot -----------------------------------


def test_a_forgotten_request_sent_again_with_what_the_sender_knows_continues_after_it() -> None:
    """The API resends a FAILED request whose saga the worker forgot (tombstoned after its
    window) with the last run and sequence it knows from the projection: run 3 and events from
    28 on, so no idempotency key or audit sequence of runs 1 and 2 is used again."""
    resend = dataclasses.replace(command("tenant"), known_run=2, known_sequence=27)
    trace = drive(resend, Script())

    requested = trace.events[0]
    assert (type(requested).__name__, requested.run, requested.sequence) == (
        "ProvisioningRequested", 3, 28)
    assert [e.sequence for e in trace.events] == list(range(28, 28 + len(trace.events)))
    assert {e.idempotency_key.split(":")[1] for e in trace.of(ExecuteStep)} == {"3"}
    assert trace.saga.status is Status.COMPLETED and trace.saga.run == 3


def test_what_the_sender_knows_is_ignored_while_the_worker_holds_the_saga() -> None:
    failed = drive(command("tenant"), Script({"setup-billing": permanent()})).saga
    resend = dataclasses.replace(command("tenant"), known_run=7, known_sequence=70)
    trace = drive(resend, Script(), state=failed, at=failed.updated_at + 1)

    assert (trace.events[0].run, trace.events[0].sequence) == (2, failed.sequence + 1)
