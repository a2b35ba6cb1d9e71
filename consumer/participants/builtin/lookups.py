"""Registry reads and writes that several workflows share.

Statements are Core, built once here with bind parameters: per call only the values change
(building and caching a statement, or the ORM's identity map and flush, cost more CPU than
PostgreSQL spent running it). Rows come back as named tuples (`row.id`, `row.status`).
"""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert

from consumer.participants.builtin.context import StepContext, StepRejected, parse_uuid
from consumer.participants.builtin.models import (
    CreatedByStep,
    Membership,
    RolePermission,
    Subscription,
    Tenant,
    User,
)
from consumer.participants.builtin.reference import TierInfo

Row = sa.Row[Any]

_TENANT = sa.select(Tenant.id, Tenant.status, Tenant.plan_code).where(
    Tenant.id == sa.bindparam("id"))
_ACTIVE_SUBSCRIPTION = sa.select(Subscription.id, Subscription.sla_tier,
                                 Subscription.service_name).where(
    Subscription.tenant_id == sa.bindparam("tenant_id"),
    Subscription.service_name == sa.bindparam("service"),
    Subscription.status == "active",
)
_USER_BY_EXTERNAL_ID = sa.select(User.id, User.email).where(
    User.external_id == sa.bindparam("reference"))
_USER_BY_ID = sa.select(User.id, User.email).where(User.id == sa.bindparam("id"))
# ON CONFLICT: a concurrent call may create the same requester; then we use theirs.
_CREATE_REQUESTER = (insert(User)
                     .on_conflict_do_nothing(index_elements=[User.external_id])
                     .returning(User.id, User.email))
_PERMISSIONS = (sa.select(RolePermission.permission)
                .join(Membership, Membership.role_name == RolePermission.role_name)
                .where(Membership.tenant_id == sa.bindparam("tenant_id"),
                       Membership.user_id == sa.bindparam("user_id")))


def active_tenant(ctx: StepContext, param: str = "tenantId") -> Row:
    """The tenant `param` names (id, status, plan_code), refused unless active."""
    tenant_id = ctx.param(param)
    parsed = parse_uuid(tenant_id)
    tenant = ctx.db.execute(_TENANT, {"id": parsed}).one_or_none() if parsed else None
    if tenant is None:
        raise StepRejected(f"unknown tenant {tenant_id}")
    if tenant.status != "active":
        raise StepRejected(f"tenant {tenant_id} is {tenant.status}, not active")
    return tenant


def known_service(ctx: StepContext) -> str:
    """The registered name of the service `serviceName` names, matched without regard to case."""
    name = ctx.param("serviceName")
    service = ctx.reference.service(ctx.db, name)
    if service is None:
        raise StepRejected(f"unknown service {name}")
    return service


def known_sla_tier(ctx: StepContext) -> TierInfo:
    code = ctx.param("slaTier")
    tier = ctx.reference.tier(ctx.db, code.upper())
    if tier is None:
        raise StepRejected(f"unknown SLA tier {code}")
    return tier


def known_role(ctx: StepContext) -> str:
    name = ctx.param("roleName")
    if ctx.reference.role(ctx.db, name) is None:
        raise StepRejected(f"unknown role {name}")
    return name


def active_subscription(db: sa.Connection, tenant_id: uuid.UUID, service: str) -> Row | None:
    """The tenant's active subscription to `service` (id, sla_tier, service_name), if any."""
    return db.execute(_ACTIVE_SUBSCRIPTION,
                      {"tenant_id": tenant_id, "service": service}).one_or_none()


def find_user(db: sa.Connection, reference: str) -> Row | None:
    """A user named by a command: its external id (`requestedBy`) or, failing that, its id."""
    user = db.execute(_USER_BY_EXTERNAL_ID, {"reference": reference}).one_or_none()
    parsed = parse_uuid(reference)
    if user is None and parsed is not None:
        user = db.execute(_USER_BY_ID, {"id": parsed}).one_or_none()
    return user


def ensure_user(ctx: StepContext, reference: str) -> Row:
    """The user `reference` names, created (under this call's key) when there is none yet."""
    user = find_user(ctx.db, reference)
    if user is not None:
        return user
    created = ctx.db.execute(_CREATE_REQUESTER, {"id": uuid.uuid4(), "external_id": reference,
                                                 "created_by_key": ctx.key}).one_or_none()
    return created or ctx.db.execute(_USER_BY_EXTERNAL_ID, {"reference": reference}).one()


def permissions_in(db: sa.Connection, tenant_id: uuid.UUID, user_id: uuid.UUID) -> set[str]:
    return set(db.scalars(_PERMISSIONS, {"tenant_id": tenant_id, "user_id": user_id}))


def user_by_id(db: sa.Connection, user_id: uuid.UUID) -> Row | None:
    return db.execute(_USER_BY_ID, {"id": user_id}).one_or_none()


def delete_created(ctx: StepContext, model: type[CreatedByStep]) -> None:
    """Delete the rows of `model` this call's key created (none: nothing to undo)."""
    ctx.db.execute(sa.delete(model).where(model.created_by_key == ctx.key))
