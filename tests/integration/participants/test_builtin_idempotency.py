"""The participant contract on the real database: one effect per idempotency key and action,
permanent answers remembered, transient ones not, and `call` never raises."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import replace

import pytest
import sqlalchemy as sa
from builtin_flows import Flow, at_once, count_rows, tenant_flow, unique, user_flow

from consumer.participants.base import Action, Outcome, StepCall, StepOutcome
from consumer.participants.builtin import BuiltinParticipant
from consumer.participants.builtin import participant as participant_module
from consumer.participants.builtin.registry import add_entity, recorded_outcome, rows_created_by
from provisioning.database import create_engine
from provisioning.settings import Settings


def test_the_same_call_twice_returns_the_same_output_and_acts_once(
    participant: BuiltinParticipant, registry_engine: sa.Engine
) -> None:
    flow = tenant_flow(participant, registry_engine).execute_all(until="validate-entity")
    call = flow.step_call("create-tenant")

    first, second = participant.call(call), participant.call(call)

    assert first.outcome is Outcome.SUCCEEDED
    assert second == first
    assert rows_created_by(registry_engine, call.idempotency_key) == {"tenants": 1}
    assert count_rows(registry_engine, "step_executions", idempotency_key=call.idempotency_key) == 1


def test_the_same_key_from_concurrent_threads_acts_once(
    participant: BuiltinParticipant, registry_engine: sa.Engine
) -> None:
    flow = tenant_flow(participant, registry_engine)
    call = flow.step_call("create-tenant")

    outcomes = at_once([lambda: participant.call(call)] * 4)

    assert outcomes[0].outcome is Outcome.SUCCEEDED
    assert all(outcome == outcomes[0] for outcome in outcomes)
    assert rows_created_by(registry_engine, call.idempotency_key) == {"tenants": 1}
    assert count_rows(registry_engine, "step_executions", idempotency_key=call.idempotency_key) == 1


def test_concurrent_sagas_for_one_new_email_share_one_user(
    participant: BuiltinParticipant, registry_engine: sa.Engine, tenant: Flow
) -> None:
    email = f"{unique('kim')}@acme.example"
    flows = [
        user_flow(participant, tenant.params["tenantId"], tenant.params["requestedBy"], email)
        for _ in range(3)
    ]

    outcomes = at_once([lambda f=flow: f.execute("resolve-user") for flow in flows])

    assert {o.output["userId"] for o in outcomes} == {outcomes[0].output["userId"]}
    assert sorted(o.output["userCreated"] for o in outcomes) == ["false", "false", "true"]
    assert count_rows(registry_engine, "users", email=email) == 1


def test_a_permanent_failure_is_remembered_for_its_key_and_a_new_run_starts_afresh(
    participant: BuiltinParticipant, registry_engine: sa.Engine
) -> None:
    flow = tenant_flow(participant, registry_engine, register_entity=False)
    refused = flow.execute("validate-entity")
    add_entity(registry_engine, flow.params["entityId"], "Acme Widgets")

    assert flow.execute("validate-entity") == refused
    assert recorded_outcome(registry_engine, flow.key("validate-entity"), Action.EXECUTE) == refused
    rerun = Flow(participant, "tenant", dict(flow.params), flow.request_id, run=2)
    assert rerun.execute("validate-entity").outcome is Outcome.SUCCEEDED


def test_a_call_that_cannot_finish_before_its_deadline_is_transient_and_leaves_no_trace(
    participant: BuiltinParticipant, registry_engine: sa.Engine
) -> None:
    flow = tenant_flow(participant, registry_engine)
    call = flow.step_call("create-tenant")
    with registry_engine.connect() as holder:
        # Another call with the same key is busy: ours waits for the key's lock past its deadline.
        holder.execute(
            sa.text("SELECT pg_advisory_xact_lock(1, hashtext(:key))"),
            {"key": call.idempotency_key},
        )
        late = participant.call(_with_deadline(call, seconds_from_now=0.3))
        holder.rollback()

    assert late.outcome is Outcome.TRANSIENT_FAILURE
    # The wait for the busy key's lock is cut at the deadline (lock_timeout).
    assert "database unavailable" in late.reason and "lock timeout" in late.reason
    assert recorded_outcome(registry_engine, call.idempotency_key, Action.EXECUTE) is None
    assert participant.call(call).outcome is Outcome.SUCCEEDED


def test_a_call_whose_deadline_already_passed_does_nothing(
    participant: BuiltinParticipant, registry_engine: sa.Engine
) -> None:
    call = tenant_flow(participant, registry_engine).step_call("create-tenant")

    outcome = participant.call(_with_deadline(call, seconds_from_now=-1))

    assert outcome.outcome is Outcome.TRANSIENT_FAILURE
    assert rows_created_by(registry_engine, call.idempotency_key) == {}


def test_calls_beyond_the_concurrency_wait_their_turn_within_their_deadline(
    registry_engine: sa.Engine,
) -> None:
    one_at_a_time = BuiltinParticipant(registry_engine, concurrency=1)
    first = tenant_flow(one_at_a_time, registry_engine).step_call("validate-entity")
    second_flow = tenant_flow(one_at_a_time, registry_engine)
    second = _with_deadline(second_flow.step_call("validate-entity"), seconds_from_now=0.3)
    with registry_engine.begin() as holder:  # the first call waits for its key's lock...
        holder.execute(sa.text("SELECT pg_advisory_xact_lock(1, hashtext(:key))"),
                       {"key": first.idempotency_key})
        running = threading.Thread(target=one_at_a_time.call, args=(first,))
        running.start()
        time.sleep(0.2)
        started = time.monotonic()
        waited = one_at_a_time.call(second)  # ...holding the only permit
        waited_s = time.monotonic() - started
    running.join()

    assert waited == StepOutcome.transient("the call's deadline passed while it waited its turn")
    assert 0.05 <= waited_s < 1.0
    assert second_flow.execute("validate-entity").outcome is Outcome.SUCCEEDED  # permit back


def test_work_that_finishes_after_the_deadline_is_rolled_back(
    participant: BuiltinParticipant, registry_engine: sa.Engine
) -> None:
    readings = iter([0.0, 10.0])  # before the work: 5 s left; after it: 5 s late
    slow = BuiltinParticipant(registry_engine, clock=lambda: next(readings))
    call = replace(tenant_flow(slow, registry_engine).step_call("create-tenant"), deadline_at=5000)

    outcome = slow.call(call)

    assert outcome == StepOutcome.transient("the call's deadline passed before it could commit")
    assert rows_created_by(registry_engine, call.idempotency_key) == {}
    assert recorded_outcome(registry_engine, call.idempotency_key, Action.EXECUTE) is None


def test_compensation_is_idempotent_and_a_repeated_execute_after_it_recreates_nothing(
    participant: BuiltinParticipant, registry_engine: sa.Engine
) -> None:
    flow = tenant_flow(participant, registry_engine).execute_all(until="create-tenant")
    created = flow.params["tenantId"]
    undo = flow.step_call("create-tenant", Action.COMPENSATE)

    assert participant.call(undo).outcome is Outcome.SUCCEEDED
    assert participant.call(undo).outcome is Outcome.SUCCEEDED
    replayed = flow.execute("create-tenant")

    assert replayed.output == {"tenantId": created}  # the recorded answer, not a new tenant
    assert rows_created_by(registry_engine, flow.key("create-tenant")) == {}


def test_an_execute_arriving_after_its_compensation_does_not_act(
    participant: BuiltinParticipant, registry_engine: sa.Engine
) -> None:
    # An abandoned attempt delivered late, after the key was already compensated.
    flow = tenant_flow(participant, registry_engine).execute_all(until="validate-entity")
    assert flow.compensate("create-tenant").outcome is Outcome.SUCCEEDED

    late = flow.execute("create-tenant")

    assert late.outcome is Outcome.PERMANENT_FAILURE
    assert late.reason == "the step was already compensated; not executing it again"
    assert rows_created_by(registry_engine, flow.key("create-tenant")) == {}


def test_compensating_a_step_that_never_ran_succeeds_without_touching_anything(
    participant: BuiltinParticipant, registry_engine: sa.Engine, tenant: Flow
) -> None:
    stranger = Flow(participant, "tenant", dict(tenant.params))

    for step in ("create-admin-role", "activate-services", "setup-billing", "create-tenant"):
        assert stranger.compensate(step).outcome is Outcome.SUCCEEDED

    assert count_rows(registry_engine, "tenants", id=tenant.params["tenantId"]) == 1


def test_an_unreachable_database_is_a_transient_failure_not_an_exception(
    registry_engine: sa.Engine,
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    engine = create_engine(
        f"postgresql+psycopg://provisioning:none@127.0.0.1:{closed_port}/provisioning",
        connect_timeout_s=2,
    )
    unreachable = BuiltinParticipant(engine)
    call = tenant_flow(unreachable, registry_engine).step_call("validate-entity")

    outcome = unreachable.call(call)
    engine.dispose()

    assert outcome.outcome is Outcome.TRANSIENT_FAILURE
    assert outcome.reason.startswith("database unavailable: ")


def test_connections_the_server_dropped_cost_one_transient_failure_not_the_pool(
    base_settings: Settings, registry_engine: sa.Engine,
) -> None:
    # The worker's engine does not check a connection before each use (one round trip per
    # step): a dropped one must fail only the step that finds it, and renew all its siblings.
    engine = create_engine(base_settings, pool_size=2, max_overflow=0, pre_ping=False)
    participant = BuiltinParticipant(engine)
    flow = tenant_flow(participant, registry_engine)
    with engine.connect() as one, engine.connect() as two:  # both pooled connections in use
        pids = [one.scalar(sa.text("SELECT pg_backend_pid()")),
                two.scalar(sa.text("SELECT pg_backend_pid()"))]
    with registry_engine.connect() as admin:
        for pid in pids:
            assert admin.scalar(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})

    finds_it = flow.execute("validate-entity")
    after = [flow.execute("validate-entity"), flow.execute("create-tenant")]
    engine.dispose()

    assert finds_it.outcome is Outcome.TRANSIENT_FAILURE
    assert finds_it.reason.startswith("database unavailable: ")
    assert [outcome.outcome for outcome in after] == [Outcome.SUCCEEDED, Outcome.SUCCEEDED]


def test_unknown_steps_and_missing_parameters_are_permanent(
    participant: BuiltinParticipant, registry_engine: sa.Engine
) -> None:
    flow = tenant_flow(participant, registry_engine)

    unknown = participant.call(flow.step_call("teleport"))
    no_undo = participant.call(flow.step_call("validate-entity", Action.COMPENSATE))
    missing = flow.execute("validate-entity", entityId=" ")

    assert unknown == StepOutcome.permanent("no built-in execute for step teleport of tenant")
    assert no_undo.outcome is Outcome.PERMANENT_FAILURE
    assert missing == StepOutcome.permanent("missing parameter entityId")


def test_a_bug_in_a_step_is_reported_as_transient_with_its_class(
    participant: BuiltinParticipant, registry_engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(ctx: object) -> dict[str, str]:
        raise KeyError("oops")

    step = ("tenant", "validate-entity", Action.EXECUTE)
    monkeypatch.setitem(participant_module.DISPATCH, step, broken)
    call = tenant_flow(participant, registry_engine).step_call("validate-entity")

    outcome = participant.call(call)

    assert outcome.outcome is Outcome.TRANSIENT_FAILURE
    assert outcome.reason.startswith("unexpected KeyError")
    assert recorded_outcome(registry_engine, call.idempotency_key, Action.EXECUTE) is None


def _with_deadline(call: StepCall, seconds_from_now: float) -> StepCall:
    return replace(call, deadline_at=int((time.time() + seconds_from_now) * 1000))
