"""Service workflow: subscribe an active tenant to a service its plan allows, at an SLA tier, with
the service's namespace and the tier's default rate limits."""

from __future__ import annotations

import re
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
    CREATE_RATE_LIMIT,
    CREATE_SUBSCRIPTION,
    Row,
    active_subscription,
    active_tenant,
    delete_created,
    known_service,
    known_sla_tier,
)
from consumer.participants.builtin.models import RateLimit, ServiceInstance, Subscription
from consumer.participants.builtin.reference import TierInfo
from consumer.participants.builtin.sql import compiled, insert


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
    subscription_id = uuid.uuid4()
    ctx.db.execute(CREATE_SUBSCRIPTION, {
        "id": subscription_id, "tenant_id": tenant.id, "service_name": service,
        "sla_tier": tier.code, "created_by_key": ctx.key,
    })
    return {"subscriptionId": str(subscription_id)}


def cancel_subscription(ctx: StepContext) -> StepOutput:
    delete_created(ctx, Subscription)
    return {}


def init_resources(ctx: StepContext) -> StepOutput:
    """Reserve the subscription's namespace in the service (its name for the tenant's data)."""
    subscription = _subscription(ctx)
    slug = re.sub(r"[^a-z0-9]+", "-", subscription.service_name.lower()).strip("-")
    instance_id = uuid.uuid4()
    namespace = f"{slug}-{subscription.id.hex[:16]}"
    ctx.db.execute(_CREATE_SERVICE_INSTANCE, {
        "id": instance_id, "subscription_id": subscription.id, "namespace": namespace,
        "created_by_key": ctx.key,
    })
    return {"serviceInstanceId": str(instance_id), "serviceNamespace": namespace}


def release_service_resources(ctx: StepContext) -> StepOutput:
    delete_created(ctx, ServiceInstance)
    return {}


def set_rate_limits(ctx: StepContext) -> StepOutput:
    subscription = _subscription(ctx)
    tier = ctx.reference.tier(ctx.db, subscription.sla_tier)
    if tier is None:
        raise StepRejected(f"SLA tier {subscription.sla_tier} is no longer defined")
    ctx.db.execute(CREATE_RATE_LIMIT, {
        "id": uuid.uuid4(), "subscription_id": subscription.id,
        "requests_per_second": tier.requests_per_second, "burst": tier.burst,
        "created_by_key": ctx.key,
    })
    return {"rateLimitRps": str(tier.requests_per_second), "rateLimitBurst": str(tier.burst)}


def remove_rate_limits(ctx: StepContext) -> StepOutput:
    delete_created(ctx, RateLimit)
    return {}


_SUBSCRIPTION = compiled(sa.select(Subscription.id, Subscription.status,
                                   Subscription.service_name, Subscription.sla_tier)
                         .where(Subscription.id == sa.bindparam("id")))
_CREATE_SERVICE_INSTANCE = insert(ServiceInstance, "id", "subscription_id", "namespace",
                                  "created_by_key")


def _available(ctx: StepContext) -> tuple[Row, str, TierInfo]:
    tenant = active_tenant(ctx)
    service = known_service(ctx)
    tier = known_sla_tier(ctx)
    if not ctx.reference.plan_includes(ctx.db, tenant.plan_code, service):
        raise StepRejected(f"plan {tenant.plan_code} of tenant {tenant.id} does not include "
                           f"{service}")
    if active_subscription(ctx.db, tenant.id, service) is not None:
        raise StepRejected(f"tenant {tenant.id} already subscribes to {service}")
    return tenant, service, tier


def _subscription(ctx: StepContext) -> Row:
    subscription_id = ctx.id_param("subscriptionId", "subscription")
    subscription = ctx.db.execute(_SUBSCRIPTION, {"id": subscription_id}).one_or_none()
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
