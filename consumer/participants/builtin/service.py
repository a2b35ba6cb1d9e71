"""Service workflow: subscribe an active tenant to a service its plan allows, at an SLA tier, with
the service's namespace and the tier's default rate limits."""

from __future__ import annotations

import re
import uuid

from consumer.participants.base import Action
from consumer.participants.builtin.context import (
    StepContext,
    StepFunction,
    StepOutput,
    StepRejected,
)
from consumer.participants.builtin.lookups import (
    active_subscription,
    active_tenant,
    delete_created,
    known_service,
    known_sla_tier,
)
from consumer.participants.builtin.models import (
    PlanService,
    RateLimit,
    Service,
    ServiceInstance,
    Subscription,
    Tenant,
)
from consumer.participants.builtin.reference import TierInfo


def validate_tenant(ctx: StepContext) -> StepOutput:
    active_tenant(ctx)
    return {}


def check_availability(ctx: StepContext) -> StepOutput:
    _available(ctx)
    return {}


def create_subscription(ctx: StepContext) -> StepOutput:
    # Checked again: the registry may have changed since check-availability. A concurrent saga
    # subscribing the same service loses on the unique index and fails permanently.
    tenant, service, tier = _available(ctx)
    subscription = Subscription(
        id=uuid.uuid4(), tenant_id=tenant.id, service_name=service.name, sla_tier=tier.code,
        created_by_key=ctx.key,
    )
    ctx.session.add(subscription)
    return {"subscriptionId": str(subscription.id)}


def cancel_subscription(ctx: StepContext) -> StepOutput:
    delete_created(ctx, Subscription)
    return {}


def init_resources(ctx: StepContext) -> StepOutput:
    """Reserve the subscription's namespace in the service (its name for the tenant's data)."""
    subscription = _subscription(ctx)
    slug = re.sub(r"[^a-z0-9]+", "-", subscription.service_name.lower()).strip("-")
    instance = ServiceInstance(
        id=uuid.uuid4(), subscription_id=subscription.id,
        namespace=f"{slug}-{subscription.id.hex[:16]}", created_by_key=ctx.key,
    )
    ctx.session.add(instance)
    return {"serviceInstanceId": str(instance.id), "serviceNamespace": instance.namespace}


def release_service_resources(ctx: StepContext) -> StepOutput:
    delete_created(ctx, ServiceInstance)
    return {}


def set_rate_limits(ctx: StepContext) -> StepOutput:
    subscription = _subscription(ctx)
    tier = ctx.reference.tier(ctx.session, subscription.sla_tier)
    if tier is None:
        raise StepRejected(f"SLA tier {subscription.sla_tier} is no longer defined")
    limit = RateLimit(
        id=uuid.uuid4(), subscription_id=subscription.id,
        requests_per_second=tier.requests_per_second, burst=tier.burst, created_by_key=ctx.key,
    )
    ctx.session.add(limit)
    return {"rateLimitRps": str(limit.requests_per_second), "rateLimitBurst": str(limit.burst)}


def remove_rate_limits(ctx: StepContext) -> StepOutput:
    delete_created(ctx, RateLimit)
    return {}


def _available(ctx: StepContext) -> tuple[Tenant, Service, TierInfo]:
    tenant = active_tenant(ctx)
    service = known_service(ctx)
    tier = known_sla_tier(ctx)
    if ctx.session.get(PlanService, (tenant.plan_code, service.name)) is None:
        raise StepRejected(f"plan {tenant.plan_code} of tenant {tenant.id} does not include "
                           f"{service.name}")
    if active_subscription(ctx.session, tenant.id, service.name) is not None:
        raise StepRejected(f"tenant {tenant.id} already subscribes to {service.name}")
    return tenant, service, tier


def _subscription(ctx: StepContext) -> Subscription:
    subscription_id = ctx.id_param("subscriptionId", "subscription")
    subscription = ctx.session.get(Subscription, subscription_id)
    if subscription is None or subscription.status != "active":
        raise StepRejected(f"no active subscription {subscription_id}")
    return subscription


STEPS: dict[tuple[str, Action], StepFunction] = {
    ("validate-tenant", Action.EXECUTE): validate_tenant,
    ("check-availability", Action.EXECUTE): check_availability,
    ("create-subscription", Action.EXECUTE): create_subscription,
    ("create-subscription", Action.COMPENSATE): cancel_subscription,
    ("init-resources", Action.EXECUTE): init_resources,
    ("init-resources", Action.COMPENSATE): release_service_resources,
    ("set-rate-limits", Action.EXECUTE): set_rate_limits,
    ("set-rate-limits", Action.COMPENSATE): remove_rate_limits,
}
