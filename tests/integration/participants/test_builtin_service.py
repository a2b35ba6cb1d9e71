"""Service workflow on the real registry: a subscription with its namespace and rate limits, and
refusals for tenants and services that do not qualify."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa
from builtin_flows import Flow, count_rows, service_flow, tenant_flow

from consumer.participants.base import Outcome
from consumer.participants.builtin import BuiltinParticipant
from consumer.participants.builtin.registry import rows_created_by


def test_steps_in_order_subscribe_the_tenant_with_namespace_and_tier_rate_limits(
    participant: BuiltinParticipant, registry_engine: sa.Engine, tenant: Flow
) -> None:
    flow = service_flow(participant, tenant.params["tenantId"], "CartService", "GOLD")
    flow.execute_all()

    subscription_id = flow.params["subscriptionId"]
    assert count_rows(registry_engine, "tenant_service_subscriptions", id=subscription_id,
                      tenant_id=tenant.params["tenantId"], service_name="CartService",
                      sla_tier="GOLD", status="active") == 1
    assert flow.params["serviceNamespace"].startswith("cartservice-")
    assert count_rows(registry_engine, "service_instances", subscription_id=subscription_id) == 1
    assert (flow.params["rateLimitRps"], flow.params["rateLimitBurst"]) == ("200", "400")
    assert count_rows(registry_engine, "rate_limits", subscription_id=subscription_id,
                      requests_per_second=200) == 1


def test_compensation_in_reverse_removes_subscription_namespace_and_limits(
    participant: BuiltinParticipant, registry_engine: sa.Engine, tenant: Flow
) -> None:
    flow = service_flow(participant, tenant.params["tenantId"]).execute_all()

    flow.compensate_all()

    assert all(rows_created_by(registry_engine, flow.key(step)) == {} for step in flow.steps)
    assert count_rows(registry_engine, "tenant_service_subscriptions",
                      id=flow.params["subscriptionId"]) == 0
    # The tenant keeps what its own provisioning gave it.
    assert count_rows(registry_engine, "tenant_service_subscriptions",
                      tenant_id=tenant.params["tenantId"]) == 1


def test_service_names_match_without_regard_to_case(
    participant: BuiltinParticipant, tenant: Flow
) -> None:
    flow = service_flow(participant, tenant.params["tenantId"], "orderservice", "bronze")
    flow.execute_all()
    assert flow.params["serviceNamespace"].startswith("orderservice-")


@pytest.mark.parametrize("tenant_id", [str(uuid.uuid4()), "tenant-7f3a91"])
def test_unknown_tenant_is_a_permanent_failure(
    participant: BuiltinParticipant, tenant_id: str
) -> None:
    outcome = service_flow(participant, tenant_id).execute("validate-tenant")

    assert outcome.outcome is Outcome.PERMANENT_FAILURE
    assert outcome.reason == f"unknown tenant {tenant_id}"


def test_inactive_tenant_is_a_permanent_failure(
    participant: BuiltinParticipant, registry_engine: sa.Engine, tenant: Flow
) -> None:
    tenant_id = tenant.params["tenantId"]
    with registry_engine.begin() as connection:
        connection.execute(sa.text("UPDATE tenants SET status = 'suspended' WHERE id = :id"),
                           {"id": tenant_id})

    outcome = service_flow(participant, tenant_id).execute("validate-tenant")

    assert outcome.outcome is Outcome.PERMANENT_FAILURE
    assert outcome.reason == f"tenant {tenant_id} is suspended, not active"


def test_a_service_outside_the_plan_is_a_permanent_failure(
    participant: BuiltinParticipant, registry_engine: sa.Engine
) -> None:
    free = tenant_flow(participant, registry_engine, plan="FREE").execute_all()
    flow = service_flow(participant, free.params["tenantId"], "CartService")

    assert flow.execute("validate-tenant").outcome is Outcome.SUCCEEDED
    outcome = flow.execute("check-availability")

    assert outcome.outcome is Outcome.PERMANENT_FAILURE
    assert outcome.reason == (
        f"plan FREE of tenant {free.params['tenantId']} does not include CartService"
    )


@pytest.mark.parametrize(
    ("service", "tier", "reason"),
    [
        ("TeleportService", "GOLD", "unknown service TeleportService"),
        ("CartService", "DIAMOND", "unknown SLA tier DIAMOND"),
        ("CoreService", "GOLD", "already subscribes to CoreService"),
    ],
)
def test_unknown_service_or_tier_and_a_second_subscription_are_refused(
    participant: BuiltinParticipant, tenant: Flow, service: str, tier: str, reason: str
) -> None:
    outcome = service_flow(participant, tenant.params["tenantId"], service, tier).execute(
        "check-availability"
    )

    assert outcome.outcome is Outcome.PERMANENT_FAILURE
    assert reason in outcome.reason


def test_a_saga_that_checked_before_another_subscribed_is_refused_at_create_subscription(
    participant: BuiltinParticipant, registry_engine: sa.Engine, tenant: Flow
) -> None:
    first = service_flow(participant, tenant.params["tenantId"])
    second = service_flow(participant, tenant.params["tenantId"])
    for flow in (first, second):
        flow.execute_all(until="check-availability")

    outcomes = [first.execute("create-subscription"), second.execute("create-subscription")]

    assert [o.outcome for o in outcomes] == [Outcome.SUCCEEDED, Outcome.PERMANENT_FAILURE]
    assert "already subscribes to CartService" in outcomes[1].reason
    assert count_rows(registry_engine, "tenant_service_subscriptions",
                      tenant_id=tenant.params["tenantId"], service_name="CartService") == 1
