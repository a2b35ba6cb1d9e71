"""Resource workflow: allocate a DATABASE, STORAGE or COMPUTE resource for a tenant's subscribed
service, within the quota of the subscription's SLA tier, then bill and monitor it.

A DATABASE is real: a PostgreSQL schema in this cluster owned by a NOLOGIN role of its own.
Application logins get access by being granted that role. The service's login has no DDL
right: it calls two SECURITY DEFINER functions of migration 0005, which create and drop only
such schema-and-role pairs. They run in the step's transaction, so the schema and the role
commit or vanish together with the registry row and the idempotency record.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

import sqlalchemy as sa
from psycopg.types.json import Jsonb

from consumer.participants.base import Action
from consumer.participants.builtin.context import (
    LockSpace,
    StepContext,
    StepFunction,
    StepOutput,
    StepRejected,
)
from consumer.participants.builtin.lookups import (
    Row,
    active_subscription,
    active_tenant,
    delete_created,
    known_service,
)
from consumer.participants.builtin.models import (
    RESOURCE_TYPES,
    BillingAccount,
    BillingUsage,
    MonitoringConfig,
    Resource,
    Subscription,
)
from consumer.participants.builtin.reference import QuotaInfo
from consumer.participants.builtin.sql import compiled, insert

MONITORED_METRICS = {
    "DATABASE": ["connections", "storage_used_gb", "query_latency_ms"],
    "STORAGE": ["storage_used_gb", "requests_per_second"],
    "COMPUTE": ["cpu_utilisation", "memory_used_mb"],
}
ALERT_AT_PERCENT = {"warning": 80, "critical": 95}


@dataclass(frozen=True, slots=True)
class ResourceRequest:
    tenant_id: uuid.UUID
    subscription: Row  # id, sla_tier, service_name
    resource_type: str
    quota: QuotaInfo
    units: int  # in quota.unit


def validate_subscription(ctx: StepContext) -> StepOutput:
    _subscribed(ctx)
    return {}


def check_quota(ctx: StepContext) -> StepOutput:
    _within_quota(ctx, _request(ctx))
    return {}


def allocate_resource(ctx: StepContext) -> StepOutput:
    request = _request(ctx)
    # Checked again under a lock: concurrent allocations cannot overrun the quota together.
    ctx.lock(LockSpace.QUOTA, f"{request.subscription.id}:{request.resource_type}")
    _within_quota(ctx, request)
    spec = ctx.params_under("resourceSpec")
    resource_id = uuid.uuid4()
    name = spec.get("name") or request.resource_type.lower()
    output = {"resourceId": str(resource_id)}
    db_schema = db_role = None
    if request.resource_type == "DATABASE":
        db_schema, db_role = database_names(request.tenant_id, resource_id, name)
        _create_database(ctx, db_schema, db_role)
        output |= {"databaseSchema": db_schema, "databaseRole": db_role}
    ctx.db.execute(_CREATE_RESOURCE, {
        "id": resource_id, "tenant_id": request.tenant_id,
        "subscription_id": request.subscription.id, "resource_type": request.resource_type,
        "name": name, "spec": Jsonb(spec), "size_units": request.units, "db_schema": db_schema,
        "db_role": db_role, "created_by_key": ctx.key,
    })
    return output


def release_resource(ctx: StepContext) -> StepOutput:
    # Its billing usage and monitoring go by cascade.
    released = ctx.db.execute(_DELETE_RESOURCE, {"key": ctx.key}).one_or_none()
    if released is not None:
        _drop_database(ctx, released.db_schema, released.db_role)
    return {}


def update_billing(ctx: StepContext) -> StepOutput:
    resource = _resource(ctx)
    account_id = ctx.db.scalar(_ACTIVE_BILLING_ACCOUNT, {"tenant_id": resource.tenant_id})
    if account_id is None:
        raise StepRejected(f"tenant {resource.tenant_id} has no active billing account")
    usage_id = uuid.uuid4()
    ctx.db.execute(_CREATE_BILLING_USAGE, {
        "id": usage_id, "tenant_id": resource.tenant_id, "billing_account_id": account_id,
        "resource_id": resource.id, "metric": f"{resource.resource_type}.{_unit(ctx, resource)}",
        "quantity": resource.size_units, "created_by_key": ctx.key,
    })
    return {"billingUsageId": str(usage_id)}


def revert_billing(ctx: StepContext) -> StepOutput:
    delete_created(ctx, BillingUsage)
    return {}


def configure_monitoring(ctx: StepContext) -> StepOutput:
    resource = _resource(ctx)
    config_id = uuid.uuid4()
    ctx.db.execute(_CREATE_MONITORING_CONFIG, {
        "id": config_id, "resource_id": resource.id, "tenant_id": resource.tenant_id,
        "metrics": Jsonb({"collect": MONITORED_METRICS[resource.resource_type]}),
        "alert_rules": Jsonb({
            "capacity": resource.size_units, "unit": _unit(ctx, resource),
            "usagePercent": ALERT_AT_PERCENT,
        }),
        "created_by_key": ctx.key,
    })
    return {"monitoringConfigId": str(config_id)}


def remove_monitoring(ctx: StepContext) -> StepOutput:
    delete_created(ctx, MonitoringConfig)
    return {}


_RESOURCE = compiled(sa.select(Resource.id, Resource.tenant_id, Resource.subscription_id,
                               Resource.resource_type, Resource.size_units)
                     .where(Resource.id == sa.bindparam("id")))
_CREATE_RESOURCE = insert(Resource, "id", "tenant_id", "subscription_id", "resource_type", "name",
                          "spec", "size_units", "db_schema", "db_role", "created_by_key")
# Deleted before its schema and role are dropped: the row lock keeps a concurrent release of
# the same key waiting, and the drop rolls back with the row if anything fails.
_DELETE_RESOURCE = compiled(sa.delete(Resource)
                            .where(Resource.created_by_key == sa.bindparam("key"))
                            .returning(Resource.db_schema, Resource.db_role))
_ACTIVE_BILLING_ACCOUNT = compiled(sa.select(BillingAccount.id)
                                   .where(BillingAccount.tenant_id == sa.bindparam("tenant_id"),
                                          BillingAccount.status == "active"))
_CREATE_BILLING_USAGE = insert(BillingUsage, "id", "tenant_id", "billing_account_id",
                               "resource_id", "metric", "quantity", "created_by_key")
_CREATE_MONITORING_CONFIG = insert(MonitoringConfig, "id", "resource_id", "tenant_id", "metrics",
                                   "alert_rules", "created_by_key")
_UNITS_IN_USE = compiled(sa.select(sa.func.coalesce(sa.func.sum(Resource.size_units), 0))
                         .where(Resource.subscription_id == sa.bindparam("subscription_id"),
                                Resource.resource_type == sa.bindparam("type"),
                                Resource.status == "active"))
_SUBSCRIPTION_TIER = compiled(sa.select(Subscription.sla_tier)
                              .where(Subscription.id == sa.bindparam("id")))
_CREATE_TENANT_DATABASE = compiled(
    sa.text("SELECT provisioning_create_tenant_database(:schema, :role)"))
_DROP_TENANT_DATABASE = compiled(
    sa.text("SELECT provisioning_drop_tenant_database(:schema, :role)"))


# --- checks ---------------------------------------------------------------------------------------


def _subscribed(ctx: StepContext) -> tuple[Row, Row]:
    tenant = active_tenant(ctx)
    service = known_service(ctx)
    subscription = active_subscription(ctx.db, tenant.id, service)
    if subscription is None:
        raise StepRejected(f"tenant {tenant.id} has no active subscription to {service}")
    return tenant, subscription


def _request(ctx: StepContext) -> ResourceRequest:
    tenant, subscription = _subscribed(ctx)
    resource_type = ctx.param("resourceType").upper()
    if resource_type not in RESOURCE_TYPES:
        raise StepRejected(f"unsupported resource type {resource_type}")
    quota = ctx.reference.quota(ctx.db, subscription.sla_tier, resource_type)
    if quota is None:
        raise StepRejected(f"SLA tier {subscription.sla_tier} allows no {resource_type}")
    units = _units(ctx, quota.unit)
    return ResourceRequest(tenant.id, subscription, resource_type, quota, units)


def _units(ctx: StepContext, unit: str) -> int:
    """The requested size (`resourceSpec.<unit>`); 1 when the spec does not say."""
    raw = ctx.optional(f"resourceSpec.{unit}")
    if raw is None:
        return 1
    if not re.fullmatch(r"[0-9]{1,9}", raw) or int(raw) <= 0:
        raise StepRejected(f"resourceSpec.{unit} must be a positive whole number, not {raw!r}")
    return int(raw)


def _within_quota(ctx: StepContext, request: ResourceRequest) -> None:
    in_use = ctx.db.execute(_UNITS_IN_USE, {"subscription_id": request.subscription.id,
                                            "type": request.resource_type}).scalar_one()
    quota = request.quota
    if in_use + request.units > quota.max_units:
        raise StepRejected(
            f"quota exceeded: {request.units} {quota.unit} of {request.resource_type} requested, "
            f"{in_use} in use, {quota.max_units} allowed for {request.subscription.service_name} "
            f"on SLA tier {quota.sla_tier}"
        )


def _resource(ctx: StepContext) -> Row:
    resource_id = ctx.id_param("resourceId", "resource")
    resource = ctx.db.execute(_RESOURCE, {"id": resource_id}).one_or_none()
    if resource is None:
        raise StepRejected(f"unknown resource {resource_id}")
    return resource


def _unit(ctx: StepContext, resource: Row) -> str:
    tier = ctx.db.execute(_SUBSCRIPTION_TIER, {"id": resource.subscription_id}).scalar_one()
    quota = ctx.reference.quota(ctx.db, tier, resource.resource_type)
    if quota is None:
        raise StepRejected(f"SLA tier {tier} no longer allows {resource.resource_type}")
    return quota.unit


# --- the real database ----------------------------------------------------------------------------


def database_names(tenant_id: uuid.UUID, resource_id: uuid.UUID, name: str) -> tuple[str, str]:
    """Schema and role of a DATABASE resource: plain lower-case identifiers that say whose and
    which resource they are, within PostgreSQL's 63 bytes. Migration 0005's functions create
    and drop names of exactly this form and no others."""
    label = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")[:20] or "db"
    schema = f"tenant_{tenant_id.hex[:12]}_{label}_{resource_id.hex[:8]}"
    return schema, f"{schema}_owner"


def _create_database(ctx: StepContext, schema: str, role: str) -> None:
    ctx.db.execute(_CREATE_TENANT_DATABASE, {"schema": schema, "role": role})


def _drop_database(ctx: StepContext, schema: str | None, role: str | None) -> None:
    if schema is None and role is None:  # STORAGE and COMPUTE: nothing in the cluster
        return
    ctx.db.execute(_DROP_TENANT_DATABASE, {"schema": schema, "role": role})


STEPS: dict[tuple[str, Action], StepFunction] = {
    ("validate-subscription", Action.EXECUTE): validate_subscription,
    ("check-quota", Action.EXECUTE): check_quota,
    ("allocate-resource", Action.EXECUTE): allocate_resource,
    ("allocate-resource", Action.COMPENSATE): release_resource,
    ("update-billing", Action.EXECUTE): update_billing,
    ("update-billing", Action.COMPENSATE): revert_billing,
    ("configure-monitoring", Action.EXECUTE): configure_monitoring,
    ("configure-monitoring", Action.COMPENSATE): remove_monitoring,
}
