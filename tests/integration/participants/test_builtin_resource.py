"""Resource workflow on the real registry: a DATABASE is a real schema and role in the cluster,
quotas of the SLA tier hold (also under concurrency), and compensation drops what was made."""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from builtin_flows import Flow, at_once, count_rows, role_exists, schema_owner

from consumer.participants.base import Outcome
from consumer.participants.builtin import BuiltinParticipant
from consumer.participants.builtin.registry import rows_created_by

MakeResource = Callable[..., Flow]


def test_a_database_resource_is_a_real_schema_owned_by_its_own_role(
    registry_engine: sa.Engine, cart_subscription: Flow, resource_flows: MakeResource
) -> None:
    tenant_id = cart_subscription.params["tenantId"]
    flow = resource_flows(tenant_id, "DATABASE", sizeGb="20", name="carts", region="eu-west-1")
    flow.execute_all()

    schema, role = flow.params["databaseSchema"], flow.params["databaseRole"]
    assert schema.startswith(f"tenant_{tenant_id.replace('-', '')[:12]}_carts_")
    assert schema_owner(registry_engine, schema) == role
    assert role_exists(registry_engine, role)
    resource_id = flow.params["resourceId"]
    assert count_rows(registry_engine, "resources", id=resource_id, resource_type="DATABASE",
                      size_units=20, db_schema=schema, db_role=role, status="active") == 1
    assert count_rows(registry_engine, "billing_usage", resource_id=resource_id,
                      metric="DATABASE.sizeGb", quantity=20) == 1
    assert count_rows(registry_engine, "monitoring_configs", resource_id=resource_id) == 1


def test_the_database_role_can_really_use_its_schema(
    registry_engine: sa.Engine, cart_subscription: Flow, resource_flows: MakeResource
) -> None:
    flow = resource_flows(cart_subscription.params["tenantId"], sizeGb="1", name="orders")
    flow.execute_all(until="allocate-resource")
    schema, role = flow.params["databaseSchema"], flow.params["databaseRole"]

    with registry_engine.begin() as connection:
        connection.execute(sa.text(f'SET LOCAL ROLE "{role}"'))
        connection.execute(sa.text(f'CREATE TABLE "{schema}".carts (id int PRIMARY KEY)'))
        connection.execute(sa.text(f'INSERT INTO "{schema}".carts VALUES (1)'))

    flow.compensate_all()  # drops the schema with the table in it
    assert schema_owner(registry_engine, schema) is None


def test_compensation_in_reverse_drops_schema_and_role_and_removes_the_rows(
    registry_engine: sa.Engine, cart_subscription: Flow, resource_flows: MakeResource
) -> None:
    flow = resource_flows(cart_subscription.params["tenantId"], sizeGb="5", name="carts")
    flow.execute_all()
    schema, role = flow.params["databaseSchema"], flow.params["databaseRole"]

    flow.compensate_all()

    assert schema_owner(registry_engine, schema) is None
    assert not role_exists(registry_engine, role)
    assert count_rows(registry_engine, "resources", id=flow.params["resourceId"]) == 0
    assert all(rows_created_by(registry_engine, flow.key(step)) == {} for step in flow.steps)


def test_storage_and_compute_are_registry_allocations_measured_in_their_units(
    registry_engine: sa.Engine, cart_subscription: Flow, resource_flows: MakeResource
) -> None:
    tenant_id = cart_subscription.params["tenantId"]
    storage = resource_flows(tenant_id, "STORAGE", sizeGb="100").execute_all()
    compute = resource_flows(tenant_id, "COMPUTE", vcpus="4").execute_all()

    assert "databaseSchema" not in storage.params
    assert count_rows(registry_engine, "billing_usage", resource_id=storage.params["resourceId"],
                      metric="STORAGE.sizeGb", quantity=100) == 1
    assert count_rows(registry_engine, "billing_usage", resource_id=compute.params["resourceId"],
                      metric="COMPUTE.vcpus", quantity=4) == 1


def test_exceeding_the_tier_quota_is_a_permanent_failure_with_the_figures(
    cart_subscription: Flow, resource_flows: MakeResource
) -> None:
    tenant_id = cart_subscription.params["tenantId"]
    resource_flows(tenant_id, "STORAGE", sizeGb="900").execute_all()  # GOLD allows 1000

    flow = resource_flows(tenant_id, "STORAGE", sizeGb="200")
    flow.execute("validate-subscription")
    outcome = flow.execute("check-quota")

    assert outcome.outcome is Outcome.PERMANENT_FAILURE
    assert outcome.reason == (
        "quota exceeded: 200 sizeGb of STORAGE requested, 900 in use, 1000 allowed for "
        "CartService on SLA tier GOLD"
    )


def test_concurrent_allocations_never_overrun_the_quota_together(
    registry_engine: sa.Engine, cart_subscription: Flow, resource_flows: MakeResource
) -> None:
    tenant_id = cart_subscription.params["tenantId"]
    flows = [resource_flows(tenant_id, "COMPUTE", vcpus="20") for _ in range(2)]  # GOLD: 32
    for flow in flows:
        flow.execute_all(until="check-quota")  # both fit when checked alone

    outcomes = at_once([lambda f=flow: f.execute("allocate-resource") for flow in flows])

    assert sorted(o.outcome for o in outcomes) == [Outcome.PERMANENT_FAILURE, Outcome.SUCCEEDED]
    assert count_rows(registry_engine, "resources", tenant_id=tenant_id,
                      resource_type="COMPUTE") == 1


def test_a_tenant_without_the_subscription_or_a_bad_size_is_refused(
    tenant: Flow, cart_subscription: Flow, resource_flows: MakeResource
) -> None:
    no_subscription = resource_flows(tenant.params["tenantId"], service="OrderService")
    outcome = no_subscription.execute("validate-subscription")
    assert outcome.outcome is Outcome.PERMANENT_FAILURE
    assert outcome.reason == (
        f"tenant {tenant.params['tenantId']} has no active subscription to OrderService"
    )

    bad_size = resource_flows(tenant.params["tenantId"], sizeGb="-3")
    outcome = bad_size.execute("check-quota")
    assert outcome.outcome is Outcome.PERMANENT_FAILURE
    assert outcome.reason == "resourceSpec.sizeGb must be a positive whole number, not '-3'"


def test_a_tenant_with_live_resources_cannot_be_compensated_away(
    participant: BuiltinParticipant, tenant: Flow, cart_subscription: Flow,
    resource_flows: MakeResource,
) -> None:
    resource_flows(tenant.params["tenantId"], sizeGb="1").execute_all()

    outcome = tenant.compensate("create-tenant")

    assert outcome.outcome is Outcome.PERMANENT_FAILURE
    # Either foreign key of the resource may be the one that refuses first.
    assert "still has allocated resources; release them first" in outcome.reason

