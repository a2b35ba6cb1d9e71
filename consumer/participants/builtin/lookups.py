"""Registry reads and writes that several workflows share."""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from consumer.participants.builtin.context import StepContext, StepRejected, parse_uuid
from consumer.participants.builtin.models import (
    CreatedByStep,
    Membership,
    Role,
    RolePermission,
    Service,
    Subscription,
    Tenant,
    User,
)
from consumer.participants.builtin.reference import TierInfo


def active_tenant(ctx: StepContext, param: str = "tenantId") -> Tenant:
    tenant_id = ctx.param(param)
    parsed = parse_uuid(tenant_id)
    tenant = ctx.session.get(Tenant, parsed) if parsed else None
    if tenant is None:
        raise StepRejected(f"unknown tenant {tenant_id}")
    if tenant.status != "active":
        raise StepRejected(f"tenant {tenant_id} is {tenant.status}, not active")
    return tenant


def known_service(ctx: StepContext) -> Service:
    """The service named by `serviceName`, matched without regard to case."""
    name = ctx.param("serviceName")
    service = ctx.session.scalars(
        sa.select(Service).where(sa.func.lower(Service.name) == name.lower())
    ).one_or_none()
    if service is None:
        raise StepRejected(f"unknown service {name}")
    return service


def known_sla_tier(ctx: StepContext) -> TierInfo:
    code = ctx.param("slaTier")
    tier = ctx.reference.tier(ctx.session, code.upper())
    if tier is None:
        raise StepRejected(f"unknown SLA tier {code}")
    return tier


def known_role(ctx: StepContext) -> Role:
    name = ctx.param("roleName")
    role = ctx.session.get(Role, name)
    if role is None:
        raise StepRejected(f"unknown role {name}")
    return role


def active_subscription(
    session: Session, tenant_id: uuid.UUID, service: str
) -> Subscription | None:
    return session.scalars(
        sa.select(Subscription).where(
            Subscription.tenant_id == tenant_id,
            Subscription.service_name == service,
            Subscription.status == "active",
        )
    ).one_or_none()


def find_user(session: Session, reference: str) -> User | None:
    """A user named by a command: its external id (`requestedBy`) or, failing that, its id."""
    user = session.scalars(sa.select(User).where(User.external_id == reference)).one_or_none()
    parsed = parse_uuid(reference)
    if user is None and parsed is not None:
        user = session.get(User, parsed)
    return user


def ensure_user(ctx: StepContext, reference: str) -> User:
    """The user `reference` names, created (under this call's key) when there is none yet."""
    user = find_user(ctx.session, reference)
    if user is not None:
        return user
    # ON CONFLICT: a concurrent call may create the same requester; then we use theirs.
    ctx.session.execute(
        insert(User)
        .values(id=uuid.uuid4(), external_id=reference, created_by_key=ctx.key)
        .on_conflict_do_nothing(index_elements=[User.external_id])
    )
    return ctx.session.scalars(sa.select(User).where(User.external_id == reference)).one()


def permissions_in(session: Session, tenant_id: uuid.UUID, user_id: uuid.UUID) -> set[str]:
    rows = session.scalars(
        sa.select(RolePermission.permission)
        .join(Membership, Membership.role_name == RolePermission.role_name)
        .where(Membership.tenant_id == tenant_id, Membership.user_id == user_id)
    )
    return set(rows)


def delete_created(ctx: StepContext, model: type[CreatedByStep]) -> None:
    """Delete the rows of `model` this call's key created (none: nothing to undo)."""
    ctx.session.execute(sa.delete(model).where(model.created_by_key == ctx.key))
