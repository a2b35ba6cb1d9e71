"""The built-in participants' registry: typed models of the tables migration 0001 creates.

Reference data (plans, services, SLA tiers, quotas, roles) is keyed by its code, since every
command names it by that code. Everything the participants create has a uuid key and
`created_by_key`: the idempotency key of the step call that created the row. A compensation
deletes exactly the rows its key created, so it never touches what another saga (or an operator)
made, and it works even when the step's output never reached the saga.

Identifiers that come from outside the service are kept as given, in `external_id` columns:
an entity's id from Entity Management, and a requester's `requestedBy` for users.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from provisioning.database import NAMING_CONVENTION

RESOURCE_TYPES = ("DATABASE", "STORAGE", "COMPUTE")


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {
        str: sa.Text(),
        datetime: sa.DateTime(timezone=True),
        uuid.UUID: sa.Uuid(),
        dict[str, Any]: JSONB(),
    }


def _one_of(column: str, values: tuple[str, ...], name: str | None = None) -> sa.CheckConstraint:
    listed = ", ".join(f"'{v}'" for v in values)
    return sa.CheckConstraint(f"{column} IN ({listed})", name=name or column)


class CreatedByStep:
    """A row a step call created: its id, when, and under which idempotency key."""

    id: Mapped[uuid.UUID] = mapped_column(
        primary_key=True, default=uuid.uuid4, server_default=sa.text("gen_random_uuid()")
    )
    created_at: Mapped[datetime] = mapped_column(server_default=sa.func.now())
    created_by_key: Mapped[str | None] = mapped_column(index=True)


# --- reference data (seeded by the migration) ---------------------------------------------------


class SlaTier(Base):
    __tablename__ = "sla_tiers"

    code: Mapped[str] = mapped_column(primary_key=True)
    rank: Mapped[int] = mapped_column(unique=True)
    requests_per_second: Mapped[int]  # the default rate limit of a subscription on this tier
    burst: Mapped[int]


class Plan(Base):
    __tablename__ = "plans"

    code: Mapped[str] = mapped_column(primary_key=True)
    name: Mapped[str]
    default_sla_tier: Mapped[str] = mapped_column(sa.ForeignKey("sla_tiers.code"))


class Service(Base):
    __tablename__ = "services"

    name: Mapped[str] = mapped_column(primary_key=True)
    description: Mapped[str]


class PlanService(Base):
    """A service a plan allows; `activated_by_default` ones start with every new tenant."""

    __tablename__ = "plan_services"

    plan_code: Mapped[str] = mapped_column(sa.ForeignKey("plans.code"), primary_key=True)
    service_name: Mapped[str] = mapped_column(sa.ForeignKey("services.name"), primary_key=True)
    activated_by_default: Mapped[bool] = mapped_column(server_default=sa.false())


class SlaQuota(Base):
    """How many units of a resource type one subscription on a tier may hold at once."""

    __tablename__ = "sla_quotas"
    __table_args__ = (_one_of("resource_type", RESOURCE_TYPES),)

    sla_tier: Mapped[str] = mapped_column(sa.ForeignKey("sla_tiers.code"), primary_key=True)
    resource_type: Mapped[str] = mapped_column(primary_key=True)
    max_units: Mapped[int]
    unit: Mapped[str]  # the resourceSpec key that measures a request: sizeGb, vcpus


class Role(Base):
    __tablename__ = "roles"

    name: Mapped[str] = mapped_column(primary_key=True)
    description: Mapped[str]


class RolePermission(Base):
    __tablename__ = "role_permissions"

    role_name: Mapped[str] = mapped_column(
        sa.ForeignKey("roles.name", ondelete="CASCADE"), primary_key=True
    )
    permission: Mapped[str] = mapped_column(primary_key=True)


# --- entities and tenants -----------------------------------------------------------------------


class Entity(Base):
    """An organisation known to Entity Management; `eligible` ones may become a tenant."""

    __tablename__ = "entities"
    __table_args__ = (_one_of("status", ("eligible", "tenant", "ineligible")),)

    id: Mapped[uuid.UUID] = mapped_column(
        primary_key=True, default=uuid.uuid4, server_default=sa.text("gen_random_uuid()")
    )
    external_id: Mapped[str] = mapped_column(unique=True)  # the commands' entityId
    name: Mapped[str]
    status: Mapped[str] = mapped_column(server_default="eligible")
    created_at: Mapped[datetime] = mapped_column(server_default=sa.func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=sa.func.now())


class Tenant(CreatedByStep, Base):
    __tablename__ = "tenants"
    __table_args__ = (_one_of("status", ("active", "suspended")),)

    entity_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("entities.id"), unique=True)
    name: Mapped[str]
    plan_code: Mapped[str] = mapped_column(sa.ForeignKey("plans.code"))
    status: Mapped[str] = mapped_column(server_default="active")


class BillingAccount(CreatedByStep, Base):
    __tablename__ = "billing_accounts"
    __table_args__ = (
        _one_of("status", ("active", "closed")),
        sa.CheckConstraint("currency ~ '^[A-Z]{3}$'", name="currency"),
    )

    tenant_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("tenants.id", ondelete="CASCADE"), unique=True
    )
    account_name: Mapped[str]
    billing_email: Mapped[str]
    currency: Mapped[str]
    payment_method: Mapped[str | None]
    status: Mapped[str] = mapped_column(server_default="active")


class Subscription(CreatedByStep, Base):
    """A tenant's use of one service at one SLA tier; at most one active per service."""

    __tablename__ = "tenant_service_subscriptions"
    __table_args__ = (
        _one_of("status", ("active", "cancelled")),
        sa.Index(
            "uq_tenant_service_subscriptions_active", "tenant_id", "service_name",
            unique=True, postgresql_where=sa.text("status = 'active'"),
        ),
    )

    tenant_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("tenants.id", ondelete="CASCADE"))
    service_name: Mapped[str] = mapped_column(sa.ForeignKey("services.name"))
    sla_tier: Mapped[str] = mapped_column(sa.ForeignKey("sla_tiers.code"))
    status: Mapped[str] = mapped_column(server_default="active")


class ServiceInstance(CreatedByStep, Base):
    """The service-side resources of a subscription: its namespace in the service."""

    __tablename__ = "service_instances"

    subscription_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("tenant_service_subscriptions.id", ondelete="CASCADE"), unique=True
    )
    namespace: Mapped[str] = mapped_column(unique=True)


class RateLimit(CreatedByStep, Base):
    __tablename__ = "rate_limits"

    subscription_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("tenant_service_subscriptions.id", ondelete="CASCADE"), unique=True
    )
    requests_per_second: Mapped[int]
    burst: Mapped[int]


# --- users --------------------------------------------------------------------------------------


class User(CreatedByStep, Base):
    """A person or service account: found by e-mail (invited users) or by `external_id`
    (a command's `requestedBy`), or by its own id."""

    __tablename__ = "users"
    __table_args__ = (
        sa.CheckConstraint("external_id IS NOT NULL OR email IS NOT NULL", name="identified"),
        sa.CheckConstraint("email = lower(email)", name="email_lowercase"),
    )

    external_id: Mapped[str | None] = mapped_column(unique=True)
    email: Mapped[str | None] = mapped_column(unique=True)


class Membership(CreatedByStep, Base):
    __tablename__ = "memberships"
    __table_args__ = (sa.UniqueConstraint("tenant_id", "user_id"),)

    tenant_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("tenants.id", ondelete="CASCADE"))
    user_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("users.id"))
    role_name: Mapped[str] = mapped_column(sa.ForeignKey("roles.name"))


class Invitation(CreatedByStep, Base):
    """Outbox of invitation e-mails: a mailer sends `pending` rows; a compensation cancels."""

    __tablename__ = "invitations"
    __table_args__ = (_one_of("status", ("pending", "sent", "cancelled")),)

    tenant_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("tenants.id", ondelete="CASCADE"))
    user_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("users.id", ondelete="CASCADE"))
    email: Mapped[str]
    role_name: Mapped[str]
    status: Mapped[str] = mapped_column(server_default="pending")
    updated_at: Mapped[datetime] = mapped_column(server_default=sa.func.now())


class UserPreferences(CreatedByStep, Base):
    __tablename__ = "user_preferences"
    __table_args__ = (sa.UniqueConstraint("user_id", "tenant_id"),)

    user_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("users.id", ondelete="CASCADE"))
    tenant_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("tenants.id", ondelete="CASCADE"))
    locale: Mapped[str]
    timezone: Mapped[str]
    settings: Mapped[dict[str, Any]]


# --- resources ----------------------------------------------------------------------------------


class Resource(CreatedByStep, Base):
    """An allocated resource. A DATABASE also has a real schema and role in this cluster; the
    tenant and subscription cannot be deleted while it exists (no cascade)."""

    __tablename__ = "resources"
    __table_args__ = (
        _one_of("resource_type", RESOURCE_TYPES),
        _one_of("status", ("active", "released")),
        sa.CheckConstraint("size_units > 0", name="size_units_positive"),
    )

    tenant_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("tenants.id"))
    subscription_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("tenant_service_subscriptions.id")
    )
    resource_type: Mapped[str]
    name: Mapped[str]
    spec: Mapped[dict[str, Any]]
    size_units: Mapped[int]
    status: Mapped[str] = mapped_column(server_default="active")
    db_schema: Mapped[str | None] = mapped_column(unique=True)
    db_role: Mapped[str | None] = mapped_column(unique=True)


class BillingUsage(CreatedByStep, Base):
    __tablename__ = "billing_usage"

    tenant_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("tenants.id", ondelete="CASCADE"))
    billing_account_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("billing_accounts.id", ondelete="CASCADE")
    )
    resource_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("resources.id", ondelete="CASCADE")
    )
    metric: Mapped[str]  # e.g. DATABASE.sizeGb
    quantity: Mapped[int]


class MonitoringConfig(CreatedByStep, Base):
    __tablename__ = "monitoring_configs"

    resource_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("resources.id", ondelete="CASCADE"), unique=True
    )
    tenant_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("tenants.id", ondelete="CASCADE"))
    metrics: Mapped[dict[str, Any]]
    alert_rules: Mapped[dict[str, Any]]


# --- idempotency --------------------------------------------------------------------------------


class StepExecution(Base):
    """The first result of each (idempotency key, action): what a repeated call gets back."""

    __tablename__ = "step_executions"
    __table_args__ = (
        sa.UniqueConstraint("idempotency_key", "action"),
        _one_of("action", ("EXECUTE", "COMPENSATE")),
        _one_of("outcome", ("SUCCEEDED", "PERMANENT_FAILURE")),
    )

    id: Mapped[uuid.UUID] = mapped_column(
        primary_key=True, default=uuid.uuid4, server_default=sa.text("gen_random_uuid()")
    )
    idempotency_key: Mapped[str]
    action: Mapped[str]
    request_id: Mapped[str] = mapped_column(index=True)
    run: Mapped[int]
    workflow_type: Mapped[str]
    step: Mapped[str]
    outcome: Mapped[str]
    output: Mapped[dict[str, Any]]
    reason: Mapped[str | None]
    created_at: Mapped[datetime] = mapped_column(server_default=sa.func.now())
