"""Tenant workflow on the real registry: rows appear, compensations remove them, and an entity
that may not become a tenant is refused for good."""

from __future__ import annotations

import sqlalchemy as sa
from builtin_flows import Flow, count_rows, tenant_flow

from consumer.participants.base import Outcome
from consumer.participants.builtin import BuiltinParticipant
from consumer.participants.builtin.registry import entity_status, rows_created_by, set_entity_status


def test_steps_in_order_create_an_active_tenant_with_billing_services_and_admin(
    participant: BuiltinParticipant, registry_engine: sa.Engine
) -> None:
    flow = tenant_flow(participant, registry_engine, plan="BUSINESS").execute_all()

    tenant_id = flow.params["tenantId"]
    assert entity_status(registry_engine, flow.params["entityId"]) == "tenant"
    assert count_rows(registry_engine, "tenants", id=tenant_id, status="active") == 1
    assert count_rows(registry_engine, "billing_accounts", id=flow.params["billingAccountId"],
                      tenant_id=tenant_id, currency="EUR") == 1
    assert flow.params["activatedServices"] == "CoreService"
    assert count_rows(registry_engine, "tenant_service_subscriptions", tenant_id=tenant_id,
                      service_name="CoreService", sla_tier="SILVER", status="active") == 1
    assert rows_created_by(registry_engine, flow.key("activate-services")) == {
        "tenant_service_subscriptions": 1, "rate_limits": 1,
    }
    assert count_rows(registry_engine, "memberships", tenant_id=tenant_id,
                      user_id=flow.params["adminUserId"], role_name="tenant-admin") == 1
    assert count_rows(registry_engine, "users", id=flow.params["adminUserId"],
                      external_id=flow.params["requestedBy"]) == 1


def test_compensation_in_reverse_removes_everything_and_the_entity_is_eligible_again(
    participant: BuiltinParticipant, registry_engine: sa.Engine
) -> None:
    flow = tenant_flow(participant, registry_engine).execute_all()
    keys = [flow.key(step) for step in flow.steps]

    flow.compensate_all()

    assert all(rows_created_by(registry_engine, key) == {} for key in keys)
    assert count_rows(registry_engine, "tenants", id=flow.params["tenantId"]) == 0
    assert count_rows(registry_engine, "users", id=flow.params["adminUserId"]) == 0
    assert entity_status(registry_engine, flow.params["entityId"]) == "eligible"


def test_the_entity_can_become_a_tenant_again_after_a_compensated_run(
    participant: BuiltinParticipant, registry_engine: sa.Engine
) -> None:
    first = tenant_flow(participant, registry_engine).execute_all(until="setup-billing")
    first.compensate_all()

    second = Flow(participant, "tenant", dict(first.params), first.request_id, run=2)
    second.execute_all()

    assert entity_status(registry_engine, first.params["entityId"]) == "tenant"


def test_an_admin_who_is_already_a_user_is_reused_and_kept_on_compensation(
    participant: BuiltinParticipant, registry_engine: sa.Engine, tenant: Flow
) -> None:
    admin = tenant.params["requestedBy"]
    second = tenant_flow(participant, registry_engine, requested_by=admin).execute_all()
    assert second.params["adminUserId"] == tenant.params["adminUserId"]

    second.compensate_all()

    assert count_rows(registry_engine, "users", external_id=admin) == 1
    assert count_rows(registry_engine, "memberships", user_id=tenant.params["adminUserId"]) == 1


def test_unknown_entity_is_a_permanent_failure(
    participant: BuiltinParticipant, registry_engine: sa.Engine
) -> None:
    flow = tenant_flow(participant, registry_engine, register_entity=False)

    outcome = flow.execute("validate-entity")

    assert outcome.outcome is Outcome.PERMANENT_FAILURE
    assert outcome.reason == f"unknown entity {flow.params['entityId']}"


def test_ineligible_entity_is_a_permanent_failure(
    participant: BuiltinParticipant, registry_engine: sa.Engine
) -> None:
    flow = tenant_flow(participant, registry_engine)
    set_entity_status(registry_engine, flow.params["entityId"], "ineligible")

    outcome = flow.execute("validate-entity")

    assert outcome.outcome is Outcome.PERMANENT_FAILURE
    assert "not eligible" in outcome.reason and "ineligible" in outcome.reason


def test_an_entity_that_is_already_a_tenant_is_refused_at_create_tenant(
    participant: BuiltinParticipant, registry_engine: sa.Engine, tenant: Flow
) -> None:
    # A second saga for the same entity, validated before the first one created the tenant.
    other = Flow(participant, "tenant", {**tenant.params})
    del other.params["tenantId"]

    outcome = other.execute("create-tenant")

    assert outcome.outcome is Outcome.PERMANENT_FAILURE
    assert outcome.reason == f"entity {tenant.params['entityId']} is already a tenant"
    assert count_rows(registry_engine, "tenants", entity_id=_entity_uuid(
        registry_engine, tenant.params["entityId"])) == 1


def test_unknown_plan_and_bad_currency_are_permanent_failures(
    participant: BuiltinParticipant, registry_engine: sa.Engine
) -> None:
    flow = tenant_flow(participant, registry_engine, plan="PLATINUM-PLUS")
    unknown_plan = flow.execute("validate-entity")
    assert unknown_plan.outcome is Outcome.PERMANENT_FAILURE
    assert unknown_plan.reason == "unknown subscription plan PLATINUM-PLUS"

    flow = tenant_flow(participant, registry_engine).execute_all(until="create-tenant")
    bad_currency = flow.execute("setup-billing", **{"billingInfo.currency": "EURO"})
    assert bad_currency.outcome is Outcome.PERMANENT_FAILURE
    assert "three-letter currency code" in bad_currency.reason
    assert rows_created_by(registry_engine, flow.key("setup-billing")) == {}


def _entity_uuid(engine: sa.Engine, external_id: str) -> str:
    with engine.connect() as connection:
        return connection.scalar(
            sa.text("SELECT id FROM entities WHERE external_id = :id"), {"id": external_id}
        )
