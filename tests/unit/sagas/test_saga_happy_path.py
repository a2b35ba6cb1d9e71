"""Every workflow runs its steps in order and ends with one ProvisioningSucceeded."""

from __future__ import annotations

import pytest
from saga_driver import PARAMS, RESOURCE_IDS, T0, Script, command, drive, ok

from sagas import (
    DEFAULT_REGISTRY,
    ExecuteStep,
    ProvisioningCompleted,
    ProvisioningRequested,
    ProvisioningStarted,
    ProvisioningStepCompleted,
    ProvisioningStepStarted,
    ProvisioningSucceeded,
    Reply,
    Status,
    payload_hash,
    replay,
)

STEPS = {
    "tenant": ["validate-entity", "create-tenant", "setup-billing", "activate-services",
               "create-admin-role"],
    "service": ["validate-tenant", "check-availability", "create-subscription",
                "init-resources", "set-rate-limits"],
    "user": ["validate-permission", "resolve-user", "add-to-tenant", "send-invitation",
             "init-preferences"],
    "resource": ["validate-subscription", "check-quota", "allocate-resource", "update-billing",
                 "configure-monitoring"],
}
WORKFLOWS = list(STEPS)
# What the scripted participants output by default: the identifying step's id, nothing else.
ID_OUTPUTS = {"tenant": {"tenantId": "tenant-7f3a91"}, "service": {"subscriptionId": "sub-1"},
              "user": {"userId": "user-1"}, "resource": {"resourceId": "res-1"}}


@pytest.mark.parametrize("workflow_type", WORKFLOWS)
def test_happy_path_emits_the_exact_event_sequence(workflow_type: str) -> None:
    trace = drive(command(workflow_type))

    expected = [("ProvisioningRequested", None)]
    for step in STEPS[workflow_type]:
        expected += [("ProvisioningStepStarted", step), ("ProvisioningStepCompleted", step)]
    expected += [("ProvisioningSucceeded", None)]
    assert [(type(e).__name__, getattr(e, "step", None)) for e in trace.events] == expected
    assert [e.sequence for e in trace.events] == list(range(1, len(expected) + 1))
    assert {e.run for e in trace.events} == {1}
    assert all(e.attempt == 1 for e in trace.events_of(ProvisioningStepStarted))


@pytest.mark.parametrize("workflow_type", WORKFLOWS)
def test_happy_path_ends_completed_with_the_resource_id(workflow_type: str) -> None:
    trace = drive(command(workflow_type))
    state = trace.saga

    assert state.status is Status.COMPLETED
    assert state.resource_id == RESOURCE_IDS[workflow_type]
    assert trace.events[-1] == ProvisioningSucceeded(
        request_id="req-1", sequence=12, run=1, workflow_type=workflow_type,
        tenant_id=state.tenant_id, occurred_at=state.finished_at,
        resource_id=RESOURCE_IDS[workflow_type], outputs=ID_OUTPUTS[workflow_type],
    )
    assert state.completed_steps == tuple(STEPS[workflow_type])
    assert state.compensated_steps == ()
    assert state.current_step is None and state.next_retry_at is None
    assert state.finished_at is not None and state.finished_at > state.started_at == T0
    assert replay(trace.events) == state


def test_success_carries_the_outputs_of_every_step_of_the_run() -> None:
    # A subscriber learns what was provisioned from ProvisioningSucceeded alone.
    script = Script({
        "create-tenant": ok(tenantId="t-9"),
        "setup-billing": ok(billingAccountId="b-1"),
        "activate-services": ok(activatedServices="CoreService"),
        "create-admin-role": ok(adminUserId="u-7", tenantId="t-9"),
    })

    succeeded = drive(command("tenant"), script).events[-1]

    assert isinstance(succeeded, ProvisioningSucceeded)
    assert succeeded.outputs == {"tenantId": "t-9", "billingAccountId": "b-1",
                                 "activatedServices": "CoreService", "adminUserId": "u-7"}


@pytest.mark.parametrize("workflow_type", WORKFLOWS)
def test_the_requester_gets_started_then_completed(workflow_type: str) -> None:
    trace = drive(command(workflow_type, reply_to="svc.replies"))

    assert [type(r) for r in trace.replies] == [ProvisioningStarted, ProvisioningCompleted]
    assert trace.replies[-1].resource_id == RESOURCE_IDS[workflow_type]
    assert {r.reply_to for r in trace.of(Reply)} == {"svc.replies"}
    assert all(r.request_id == "req-1" and r.run == 1 for r in trace.replies)


def test_no_reply_without_reply_to() -> None:
    trace = drive(command("user", reply_to=None))

    assert trace.saga.status is Status.COMPLETED
    assert trace.replies == []


def test_requested_event_records_the_command_and_the_workflow_version() -> None:
    cmd = command("service", requested_by="svc-cart")
    trace = drive(cmd)
    requested = trace.events_of(ProvisioningRequested)[0]

    assert requested.workflow_version == DEFAULT_REGISTRY.latest("service").version
    assert requested.requested_by == "svc-cart"
    assert requested.params == PARAMS["service"]
    assert requested.reply_to == "replies"
    assert requested.tenant_id == "tenant-7f3a91"
    assert requested.payload_hash == payload_hash("service", PARAMS["service"])
    assert trace.saga.workflow_version == requested.workflow_version


def test_steps_are_called_with_params_and_earlier_outputs_under_one_key_per_step() -> None:
    trace = drive(command("tenant"))
    calls = {c.step: c for c in trace.of(ExecuteStep)}

    assert calls["validate-entity"].params == PARAMS["tenant"]
    assert calls["setup-billing"].params == {**PARAMS["tenant"], "tenantId": "tenant-7f3a91"}
    for step, call in calls.items():
        assert call.idempotency_key == f"req-1:1:{step}"
        assert call.participant == DEFAULT_REGISTRY.get("tenant", 1).step(step).participant
        assert call.attempt == 1
        assert call.deadline_at is not None


def test_a_tenant_provisioning_learns_its_tenant_from_create_tenant() -> None:
    trace = drive(command("tenant"))
    tenants = [(type(e).__name__, getattr(e, "step", None), e.tenant_id) for e in trace.events]

    assert tenants[:4] == [
        ("ProvisioningRequested", None, None),
        ("ProvisioningStepStarted", "validate-entity", None),
        ("ProvisioningStepCompleted", "validate-entity", None),
        ("ProvisioningStepStarted", "create-tenant", None),
    ]
    created = trace.events_of(ProvisioningStepCompleted)[1]
    assert (created.step, created.tenant_id) == ("create-tenant", "tenant-7f3a91")
    assert all(e.tenant_id == "tenant-7f3a91" for e in trace.events[4:])
    assert trace.saga.tenant_id == "tenant-7f3a91"
    assert trace.saga.outputs == {"tenantId": "tenant-7f3a91"}
