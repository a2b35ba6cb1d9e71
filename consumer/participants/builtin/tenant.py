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
from consumer.participants.builtin.lookups import active_tenant, delete_created, ensure_user
from consumer.participants.builtin.models import (
    BillingAccount,
    Entity,
    Membership,
    RateLimit,
    Subscription,
    Tenant,
    User,
)
from consumer.participants.builtin.reference import PlanInfo

ADMIN_ROLE = "tenant-admin"


def validate_entity(ctx: StepContext) -> StepOutput:
    _eligible_entity(ctx, for_update=False)
    _plan(ctx)
    return {}


def create_tenant(ctx: StepContext) -> StepOutput:
    # Row lock: two sagas promoting the same entity take turns; the second finds it a tenant.
    entity = _eligible_entity(ctx, for_update=True)
    tenant = Tenant(
        id=uuid.uuid4(),
        entity_id=entity.id,
        name=ctx.optional("tenantName") or entity.name,
        plan_code=_plan(ctx).code,
        created_by_key=ctx.key,
    )
    ctx.session.add(tenant)
    entity.status = "tenant"
    entity.updated_at = sa.func.now()
    return {"tenantId": str(tenant.id)}


def delete_tenant(ctx: StepContext) -> StepOutput:
    tenant = ctx.session.scalars(
        sa.select(Tenant).where(Tenant.created_by_key == ctx.key)
    ).one_or_none()
    if tenant is None:
        return {}
    entity = ctx.session.get(Entity, tenant.entity_id, with_for_update=True)
    ctx.session.delete(tenant)
    ctx.session.flush()  # the tenant's own rows go by cascade; live resources refuse (FK)
    if entity is not None and entity.status == "tenant":
        entity.status = "eligible"
        entity.updated_at = sa.func.now()
    return {}


def setup_billing(ctx: StepContext) -> StepOutput:
    tenant = active_tenant(ctx)
    account = BillingAccount(
        id=uuid.uuid4(),
        tenant_id=tenant.id,
        account_name=ctx.param("billingInfo.accountName"),
        billing_email=ctx.param("billingInfo.billingEmail"),
        currency=ctx.param("billingInfo.currency").upper(),
        payment_method=ctx.optional("billingInfo.paymentMethod"),
        created_by_key=ctx.key,
    )
    ctx.session.add(account)
    return {"billingAccountId": str(account.id)}


def delete_billing_account(ctx: StepContext) -> StepOutput:
    delete_created(ctx, BillingAccount)
    return {}


def activate_services(ctx: StepContext) -> StepOutput:
    """Subscribe the tenant to its plan's default services, at the plan's tier and its limits."""
    tenant = active_tenant(ctx)
    plan = ctx.reference.plan(ctx.session, tenant.plan_code)
    tier = ctx.reference.tier(ctx.session, plan.default_sla_tier) if plan else None
    if plan is None or tier is None:
        raise StepRejected(f"plan {tenant.plan_code} or its SLA tier is no longer defined")
    services = ctx.reference.default_services(ctx.session, plan.code)
    for service in services:
        subscription = Subscription(
            id=uuid.uuid4(), tenant_id=tenant.id, service_name=service, sla_tier=tier.code,
            created_by_key=ctx.key,
        )
        ctx.session.add(subscription)
        ctx.session.flush()  # the rate limit refers to it
        ctx.session.add(RateLimit(
            subscription_id=subscription.id, requests_per_second=tier.requests_per_second,
            burst=tier.burst, created_by_key=ctx.key,
        ))
    return {"activatedServices": ",".join(services)}


def deactivate_services(ctx: StepContext) -> StepOutput:
    delete_created(ctx, Subscription)  # their rate limits go by cascade
    return {}


def create_admin_role(ctx: StepContext) -> StepOutput:
    """Make the requester (created as a user if new) the tenant's administrator."""
    tenant = active_tenant(ctx)
    admin = ensure_user(ctx, ctx.param("requestedBy"))
    ctx.session.add(Membership(
        tenant_id=tenant.id, user_id=admin.id, role_name=ADMIN_ROLE, created_by_key=ctx.key
    ))
    return {"adminUserId": str(admin.id)}


def delete_admin_role(ctx: StepContext) -> StepOutput:
    delete_created(ctx, Membership)
    # The requester's user goes only if this call created it and nothing else uses it since.
    ctx.session.execute(
        sa.delete(User).where(
            User.created_by_key == ctx.key,
            ~sa.exists().where(Membership.user_id == User.id),
        )
    )
    return {}


def _eligible_entity(ctx: StepContext, for_update: bool) -> Entity:
    entity_id = ctx.param("entityId")
    query = sa.select(Entity).where(Entity.external_id == entity_id)
    entity = ctx.session.scalars(query.with_for_update() if for_update else query).one_or_none()
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
    plan = ctx.reference.plan(ctx.session, code.upper())
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
