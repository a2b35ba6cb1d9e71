"""A run finishes on the workflow version it started on, whatever is registered meanwhile."""

from __future__ import annotations

import dataclasses

from saga_driver import T0, Script, command, consequences, drive, permanent

from sagas import (
    DEFAULT_REGISTRY,
    TENANT_V1,
    ExecuteStep,
    ProvisioningRequested,
    Status,
    Step,
    decide,
    replay,
)

# Version 2 drops activate-services and adds an audit step before the admin role.
TENANT_V2 = dataclasses.replace(
    TENANT_V1,
    version=2,
    steps=(
        *TENANT_V1.steps[:3],
        Step("record-audit", "audit", compensation="erase-audit"),
        TENANT_V1.steps[4],
    ),
)
V1_STEPS = [s.name for s in TENANT_V1.steps]
V2_STEPS = [s.name for s in TENANT_V2.steps]


def with_v2():
    registry = DEFAULT_REGISTRY.copy()
    registry.register(TENANT_V2)
    return registry


def test_a_saga_started_on_version_1_finishes_on_version_1() -> None:
    # Started before the deploy: only version 1 exists.
    state, effects = decide(None, command("tenant"), T0)
    assert state.workflow_version == 1
    pending = [c for e in effects for c in consequences(e, T0, Script())]

    # The deploy registers version 2; the saga carries on under the new registry.
    trace = drive(pending, state=state, registry=with_v2())

    assert trace.saga.status is Status.COMPLETED
    assert trace.saga.workflow_version == 1
    assert [c.step for c in trace.of(ExecuteStep)] == V1_STEPS[1:]
    assert trace.saga.completed_steps == tuple(V1_STEPS)


def test_compensation_follows_the_version_the_run_started_on() -> None:
    state, effects = decide(None, command("tenant"), T0)
    pending = [c for e in effects for c in consequences(e, T0, Script())]
    script = Script({"create-admin-role": permanent()})

    trace = drive(pending, script, state=state, registry=with_v2())

    assert trace.saga.compensated_steps == ("activate-services", "setup-billing", "create-tenant")


def test_a_new_saga_starts_on_the_latest_version() -> None:
    trace = drive(command("tenant", request_id="req-2"), registry=with_v2())

    assert trace.events_of(ProvisioningRequested)[0].workflow_version == 2
    assert trace.saga.workflow_version == 2
    assert [c.step for c in trace.of(ExecuteStep)] == V2_STEPS


def test_the_next_run_of_a_failed_saga_takes_the_latest_version() -> None:
    failed = drive(command("tenant"), Script({"setup-billing": permanent()})).saga
    assert failed.workflow_version == 1

    trace = drive(command("tenant"), state=failed, at=T0 + 60_000, registry=with_v2())

    assert (trace.saga.run, trace.saga.workflow_version) == (2, 2)
    assert trace.saga.completed_steps == tuple(V2_STEPS)
    assert replay(trace.events).workflow_version == 2
