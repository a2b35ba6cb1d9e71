"""Tenant workflow: an eligible entity becomes an active tenant with billing, its plan's default
services and an administrator (the requester)."""

from __future__ import annotations

import uuid

import sqlalchemy as sa

from consumer.participants.base import Action
from consumer.participants.builtin.context import (
    StepContext,
    StepFunction,
    StepOutput,
    StepRejected,
)
from consumer.participants.builtin.lookups import (
    CREATE_MEMBERSHIP,
    CREATE_RATE_LIMIT,
    CREATE_SUBSCRIPTION,
    Row,
    active_tenant,
    delete_created,
    delete_unused_user,
    ensure_user,
)
from consumer.participants.builtin.models import (
    BillingAccount,
    Entity,
    Membership,
    Subscription,
    Tenant,
)
from consumer.participants.builtin.reference import PlanInfo
from consumer.participants.builtin.sql import Sql, compiled, insert

ADMIN_ROLE = "tenant-admin"


def validate_entity(ctx: StepContext) -> StepOutput:
    _eligible_entity(ctx, _ENTITY)
    _plan(ctx)
    return {}


def create_tenant(ctx: StepContext) -> StepOutput:
    # Row lock: two sagas promoting the same entity take turns; the second finds it a tenant.
    entity = _eligible_entity(ctx, _ENTITY_FOR_UPDATE)
    tenant_id = uuid.uuid4()
    ctx.db.execute(_CREATE_TENANT, {
        "id": tenant_id, "entity_id": entity.id, "name": ctx.optional("tenantName") or entity.name,
        "plan_code": _plan(ctx).code, "created_by_key": ctx.key,
    })
    ctx.db.execute(_PROMOTE_ENTITY, {"entity": entity.id})
    return {"tenantId": str(tenant_id)}


def delete_tenant(ctx: StepContext) -> StepOutput:
    # The tenant's own rows go by cascade; live resources refuse (FK).
    entity_id = ctx.db.scalar(_DELETE_TENANT, {"key": ctx.key})
    if entity_id is not None:
        ctx.db.execute(_RESTORE_ENTITY, {"entity": entity_id})
    return {}


def setup_billing(ctx: StepContext) -> StepOutput:
    tenant = active_tenant(ctx)
    account_id = uuid.uuid4()
    ctx.db.execute(_CREATE_BILLING_ACCOUNT, {
        "id": account_id, "tenant_id": tenant.id,
        "account_name": ctx.param("billingInfo.accountName"),
        "billing_email": ctx.param("billingInfo.billingEmail"),
        "currency": ctx.param("billingInfo.currency").upper(),
        "payment_method": ctx.optional("billingInfo.paymentMethod"), "created_by_key": ctx.key,
    })
    return {"billingAccountId": str(account_id)}


def delete_billing_account(ctx: StepContext) -> StepOutput:
    delete_created(ctx, BillingAccount)
    return {}


def activate_services(ctx: StepContext) -> StepOutput:
    """Subscribe the tenant to its plan's default services, at the plan's tier and its limits."""
    tenant = active_tenant(ctx)
    plan = ctx.reference.plan(ctx.db, tenant.plan_code)
    tier = ctx.reference.tier(ctx.db, plan.default_sla_tier) if plan else None
    if plan is None or tier is None:
        raise StepRejected(f"plan {tenant.plan_code} or its SLA tier is no longer defined")
    services = ctx.reference.default_services(ctx.db, plan.code)
    if services:  # one statement for all subscriptions, one for their rate limits
        subscriptions = [{"id": uuid.uuid4(), "tenant_id": tenant.id, "service_name": service,
                          "sla_tier": tier.code, "created_by_key": ctx.key}
                         for service in services]
        ctx.db.execute_many(CREATE_SUBSCRIPTION, subscriptions)
        ctx.db.execute_many(CREATE_RATE_LIMIT, [
            {"id": uuid.uuid4(), "subscription_id": subscription["id"],
             "requests_per_second": tier.requests_per_second, "burst": tier.burst,
             "created_by_key": ctx.key}
            for subscription in subscriptions])
    return {"activatedServices": ",".join(services)}


def deactivate_services(ctx: StepContext) -> StepOutput:
    delete_created(ctx, Subscription)  # their rate limits go by cascade
    return {}


def create_admin_role(ctx: StepContext) -> StepOutput:
    """Make the requester (created as a user if new) the tenant's administrator."""
    tenant = active_tenant(ctx)
    admin = ensure_user(ctx, ctx.param("requestedBy"))
    ctx.db.execute(CREATE_MEMBERSHIP, {"id": uuid.uuid4(), "tenant_id": tenant.id,
                                           "user_id": admin.id, "role_name": ADMIN_ROLE,
                                           "created_by_key": ctx.key})
    return {"adminUserId": str(admin.id)}


def delete_admin_role(ctx: StepContext) -> StepOutput:
    delete_created(ctx, Membership)
    # The requester's user goes only if this call created it and nothing else uses it since.
    delete_unused_user(ctx)
    return {}


_SELECT_ENTITY = sa.select(Entity.id, Entity.name, Entity.status).where(
    Entity.external_id == sa.bindparam("external_id"))
_ENTITY = compiled(_SELECT_ENTITY)
_ENTITY_FOR_UPDATE = compiled(_SELECT_ENTITY.with_for_update())
_PROMOTE_ENTITY = compiled(sa.update(Entity).where(Entity.id == sa.bindparam("entity"))
                           .values(status="tenant", updated_at=sa.func.now()))
_RESTORE_ENTITY = compiled(sa.update(Entity)
                           .where(Entity.id == sa.bindparam("entity"), Entity.status == "tenant")
                           .values(status="eligible", updated_at=sa.func.now()))
_CREATE_TENANT = insert(Tenant, "id", "entity_id", "name", "plan_code", "created_by_key")
_DELETE_TENANT = compiled(sa.delete(Tenant).where(Tenant.created_by_key == sa.bindparam("key"))
                          .returning(Tenant.entity_id))
_CREATE_BILLING_ACCOUNT = insert(BillingAccount, "id", "tenant_id", "account_name",
                                 "billing_email", "currency", "payment_method", "created_by_key")


def _eligible_entity(ctx: StepContext, query: Sql) -> Row:
    entity_id = ctx.param("entityId")
    entity = ctx.db.execute(query, {"external_id": entity_id}).one_or_none()
    if entity is None:
        raise StepRejected(f"unknown entity {entity_id}")
    if entity.status == "tenant":
        raise StepRejected(f"entity {entity_id} is already a tenant")
    if entity.status != "eligible":
        raise StepRejected(f"entity {entity_id} is not eligible to become a tenant "
                           f"(status {entity.status})")
    return entity


def _plan(ctx: StepContext) -> PlanInfo:
    code = ctx.param("subscriptionPlan")
    plan = ctx.reference.plan(ctx.db, code.upper())
    if plan is None:
        raise StepRejected(f"unknown subscription plan {code}")
    return plan


STEPS: dict[tuple[str, Action], StepFunction] = {
    ("validate-entity", Action.EXECUTE): validate_entity,
    ("create-tenant", Action.EXECUTE): create_tenant,
    ("create-tenant", Action.COMPENSATE): delete_tenant,
    ("setup-billing", Action.EXECUTE): setup_billing,
    ("setup-billing", Action.COMPENSATE): delete_billing_account,
    ("activate-services", Action.EXECUTE): activate_services,
    ("activate-services", Action.COMPENSATE): deactivate_services,
    ("create-admin-role", Action.EXECUTE): create_admin_role,
    ("create-admin-role", Action.COMPENSATE): delete_admin_role,
}
