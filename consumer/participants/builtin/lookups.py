"""Registry reads and writes that several workflows share.

Statements are compiled once, here, with bind parameters (`sql.py`): per call only the values
change. Rows come back as named tuples (`row.id`, `row.status`).
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
    RateLimit,
    RolePermission,
    Subscription,
    Tenant,
    User,
)
from consumer.participants.builtin.reference import TierInfo
from consumer.participants.builtin.sql import Registry, compiled, delete_created_by
from consumer.participants.builtin.sql import insert as insert_row

Row = Any  # a named tuple of the statement's columns

_TENANT = compiled(sa.select(Tenant.id, Tenant.status, Tenant.plan_code)
                   .where(Tenant.id == sa.bindparam("id")))
_ACTIVE_SUBSCRIPTION = compiled(
    sa.select(Subscription.id, Subscription.sla_tier, Subscription.service_name)
    .where(Subscription.tenant_id == sa.bindparam("tenant_id"),
           Subscription.service_name == sa.bindparam("service"),
           Subscription.status == "active"))
_USER_BY_EXTERNAL_ID = compiled(sa.select(User.id, User.email)
                                .where(User.external_id == sa.bindparam("reference")))
_USER_BY_ID = compiled(sa.select(User.id, User.email).where(User.id == sa.bindparam("id")))
# ON CONFLICT: a concurrent call may create the same requester; then we use theirs.
_CREATE_REQUESTER = compiled(insert(User)
                             .on_conflict_do_nothing(index_elements=[User.external_id])
                             .returning(User.id, User.email),
                             ["id", "external_id", "created_by_key"])
_PERMISSIONS = compiled(sa.select(RolePermission.permission)
                        .join(Membership, Membership.role_name == RolePermission.role_name)
                        .where(Membership.tenant_id == sa.bindparam("tenant_id"),
                               Membership.user_id == sa.bindparam("user_id")))
# Rows more than one workflow creates.
CREATE_SUBSCRIPTION = insert_row(Subscription, "id", "tenant_id", "service_name", "sla_tier",
                                 "created_by_key")
CREATE_RATE_LIMIT = insert_row(RateLimit, "id", "subscription_id", "requests_per_second", "burst",
                               "created_by_key")
CREATE_MEMBERSHIP = insert_row(Membership, "id", "tenant_id", "user_id", "role_name",
                               "created_by_key")
_DELETE_UNUSED_USER = compiled(sa.delete(User)
                               .where(User.created_by_key == sa.bindparam("key"),
                                      ~sa.exists().where(Membership.user_id == User.id)))


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


def active_subscription(db: Registry, tenant_id: uuid.UUID, service: str) -> Row | None:
    """The tenant's active subscription to `service` (id, sla_tier, service_name), if any."""
    return db.execute(_ACTIVE_SUBSCRIPTION,
                      {"tenant_id": tenant_id, "service": service}).one_or_none()


def find_user(db: Registry, reference: str) -> Row | None:
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


def permissions_in(db: Registry, tenant_id: uuid.UUID, user_id: uuid.UUID) -> set[str]:
    return set(db.scalars(_PERMISSIONS, {"tenant_id": tenant_id, "user_id": user_id}))


def user_by_id(db: Registry, user_id: uuid.UUID) -> Row | None:
    return db.execute(_USER_BY_ID, {"id": user_id}).one_or_none()


def delete_unused_user(ctx: StepContext) -> None:
    """Delete the user this call's key created, unless some tenant has taken it up since."""
    ctx.db.execute(_DELETE_UNUSED_USER, {"key": ctx.key})


def delete_created(ctx: StepContext, model: type[CreatedByStep]) -> None:
    """Delete the rows of `model` this call's key created (none: nothing to undo)."""
    ctx.db.execute(delete_created_by(model), {"key": ctx.key})
