"""The built-in participants' registry, its reference data, and the step execution log.

Revision ID: 0001_registry
Revises:
Create Date: 2025-11-28

Tables mirror `consumer.participants.builtin.models` (a test compares the two). Statuses and
kinds are text with CHECK constraints rather than enum types, so a later revision can add a
value without rewriting a type.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0001_registry"
down_revision = None
branch_labels = None
depends_on = None

RESOURCE_TYPES = "'DATABASE', 'STORAGE', 'COMPUTE'"

# --- reference data ----------------------------------------------------------------------------

SLA_TIERS = [  # code, rank, default rate limit (requests per second, burst)
    ("BRONZE", 1, 10, 20),
    ("SILVER", 2, 50, 100),
    ("GOLD", 3, 200, 400),
    ("PLATINUM", 4, 1000, 2000),
]
PLANS = [  # code, name, SLA tier of the services a new tenant gets
    ("FREE", "Free", "BRONZE"),
    ("STARTER", "Starter", "BRONZE"),
    ("BUSINESS", "Business", "SILVER"),
    ("ENTERPRISE", "Enterprise", "GOLD"),
]
SERVICES = [
    ("CoreService", "Tenant core: identity, settings, audit"),
    ("CartService", "Shopping carts"),
    ("OrderService", "Orders and fulfilment"),
    ("AnalyticsService", "Reporting and analytics"),
    ("InventoryService", "Stock and warehouses"),
    ("PaymentService", "Payments and refunds"),
]
PLAN_SERVICES = {  # every plan starts its tenants on CoreService
    "FREE": ["CoreService"],
    "STARTER": ["CoreService", "CartService"],
    "BUSINESS": ["CoreService", "CartService", "OrderService", "AnalyticsService"],
    "ENTERPRISE": [name for name, _ in SERVICES],
}
QUOTA_UNITS = {"DATABASE": "sizeGb", "STORAGE": "sizeGb", "COMPUTE": "vcpus"}
QUOTAS = {  # max units per subscription: DATABASE, STORAGE, COMPUTE
    "BRONZE": (10, 50, 2),
    "SILVER": (50, 250, 8),
    "GOLD": (200, 1000, 32),
    "PLATINUM": (1000, 5000, 128),
}
ROLES = {
    "tenant-admin": (
        "Administers the tenant",
        ["user:manage", "service:manage", "resource:manage", "billing:manage", "tenant:read"],
    ),
    "billing-admin": ("Manages billing", ["billing:manage", "tenant:read"]),
    "member": ("Uses the tenant's services", ["tenant:read"]),
}


def _id() -> sa.Column:
    return sa.Column("id", sa.Uuid(), server_default=sa.text("gen_random_uuid()"), nullable=False)


def _created() -> list[sa.Column]:
    return [
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(),
                  nullable=False),
        sa.Column("created_by_key", sa.Text(), nullable=True),
    ]


def _fk(table: str, column: str, target: str, ondelete: str | None = None) -> sa.Constraint:
    return sa.ForeignKeyConstraint(
        [column], [target], name=f"fk_{table}_{column}", ondelete=ondelete
    )


def _index_created_by_key(table: str) -> None:
    op.create_index(f"ix_{table}_created_by_key", table, ["created_by_key"])


def upgrade() -> None:
    _create_reference_tables()
    _create_tenant_tables()
    _create_user_tables()
    _create_resource_tables()
    _create_step_executions()
    _seed_reference_data()


def _create_reference_tables() -> None:
    op.create_table(
        "sla_tiers",
        sa.Column("code", sa.Text(), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("requests_per_second", sa.Integer(), nullable=False),
        sa.Column("burst", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("code", name="pk_sla_tiers"),
        sa.UniqueConstraint("rank", name="uq_sla_tiers_rank"),
    )
    op.create_table(
        "plans",
        sa.Column("code", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("default_sla_tier", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("code", name="pk_plans"),
        _fk("plans", "default_sla_tier", "sla_tiers.code"),
    )
    op.create_table(
        "services",
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_services"),
    )
    op.create_table(
        "plan_services",
        sa.Column("plan_code", sa.Text(), nullable=False),
        sa.Column("service_name", sa.Text(), nullable=False),
        sa.Column("activated_by_default", sa.Boolean(), server_default=sa.false(),
                  nullable=False),
        sa.PrimaryKeyConstraint("plan_code", "service_name", name="pk_plan_services"),
        _fk("plan_services", "plan_code", "plans.code"),
        _fk("plan_services", "service_name", "services.name"),
    )
    op.create_table(
        "sla_quotas",
        sa.Column("sla_tier", sa.Text(), nullable=False),
        sa.Column("resource_type", sa.Text(), nullable=False),
        sa.Column("max_units", sa.Integer(), nullable=False),
        sa.Column("unit", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("sla_tier", "resource_type", name="pk_sla_quotas"),
        _fk("sla_quotas", "sla_tier", "sla_tiers.code"),
        sa.CheckConstraint(f"resource_type IN ({RESOURCE_TYPES})",
                           name="ck_sla_quotas_resource_type"),
    )
    op.create_table(
        "roles",
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_roles"),
    )
    op.create_table(
        "role_permissions",
        sa.Column("role_name", sa.Text(), nullable=False),
        sa.Column("permission", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("role_name", "permission", name="pk_role_permissions"),
        _fk("role_permissions", "role_name", "roles.name", ondelete="CASCADE"),
    )


def _create_tenant_tables() -> None:
    op.create_table(
        "entities",
        _id(),
        sa.Column("external_id", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), server_default="eligible", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(),
                  nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(),
                  nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_entities"),
        sa.UniqueConstraint("external_id", name="uq_entities_external_id"),
        sa.CheckConstraint("status IN ('eligible', 'tenant', 'ineligible')",
                           name="ck_entities_status"),
    )
    op.create_table(
        "tenants",
        _id(),
        sa.Column("entity_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("plan_code", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), server_default="active", nullable=False),
        *_created(),
        sa.PrimaryKeyConstraint("id", name="pk_tenants"),
        sa.UniqueConstraint("entity_id", name="uq_tenants_entity_id"),
        _fk("tenants", "entity_id", "entities.id"),
        _fk("tenants", "plan_code", "plans.code"),
        sa.CheckConstraint("status IN ('active', 'suspended')", name="ck_tenants_status"),
    )
    op.create_table(
        "billing_accounts",
        _id(),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("account_name", sa.Text(), nullable=False),
        sa.Column("billing_email", sa.Text(), nullable=False),
        sa.Column("currency", sa.Text(), nullable=False),
        sa.Column("payment_method", sa.Text(), nullable=True),
        sa.Column("status", sa.Text(), server_default="active", nullable=False),
        *_created(),
        sa.PrimaryKeyConstraint("id", name="pk_billing_accounts"),
        sa.UniqueConstraint("tenant_id", name="uq_billing_accounts_tenant_id"),
        _fk("billing_accounts", "tenant_id", "tenants.id", ondelete="CASCADE"),
        sa.CheckConstraint("status IN ('active', 'closed')", name="ck_billing_accounts_status"),
        sa.CheckConstraint("currency ~ '^[A-Z]{3}$'", name="ck_billing_accounts_currency"),
    )
    op.create_table(
        "tenant_service_subscriptions",
        _id(),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("service_name", sa.Text(), nullable=False),
        sa.Column("sla_tier", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), server_default="active", nullable=False),
        *_created(),
        sa.PrimaryKeyConstraint("id", name="pk_tenant_service_subscriptions"),
        _fk("tenant_service_subscriptions", "tenant_id", "tenants.id", ondelete="CASCADE"),
        _fk("tenant_service_subscriptions", "service_name", "services.name"),
        _fk("tenant_service_subscriptions", "sla_tier", "sla_tiers.code"),
        sa.CheckConstraint("status IN ('active', 'cancelled')",
                           name="ck_tenant_service_subscriptions_status"),
    )
    # At most one active subscription per tenant and service, even under concurrent sagas.
    op.create_index(
        "uq_tenant_service_subscriptions_active", "tenant_service_subscriptions",
        ["tenant_id", "service_name"], unique=True, postgresql_where=sa.text("status = 'active'"),
    )
    op.create_table(
        "service_instances",
        _id(),
        sa.Column("subscription_id", sa.Uuid(), nullable=False),
        sa.Column("namespace", sa.Text(), nullable=False),
        *_created(),
        sa.PrimaryKeyConstraint("id", name="pk_service_instances"),
        sa.UniqueConstraint("subscription_id", name="uq_service_instances_subscription_id"),
        sa.UniqueConstraint("namespace", name="uq_service_instances_namespace"),
        _fk("service_instances", "subscription_id", "tenant_service_subscriptions.id",
            ondelete="CASCADE"),
    )
    op.create_table(
        "rate_limits",
        _id(),
        sa.Column("subscription_id", sa.Uuid(), nullable=False),
        sa.Column("requests_per_second", sa.Integer(), nullable=False),
        sa.Column("burst", sa.Integer(), nullable=False),
        *_created(),
        sa.PrimaryKeyConstraint("id", name="pk_rate_limits"),
        sa.UniqueConstraint("subscription_id", name="uq_rate_limits_subscription_id"),
        _fk("rate_limits", "subscription_id", "tenant_service_subscriptions.id",
            ondelete="CASCADE"),
    )
    for table in ("tenants", "billing_accounts", "tenant_service_subscriptions",
                  "service_instances", "rate_limits"):
        _index_created_by_key(table)


def _create_user_tables() -> None:
    op.create_table(
        "users",
        _id(),
        sa.Column("external_id", sa.Text(), nullable=True),
        sa.Column("email", sa.Text(), nullable=True),
        *_created(),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
        sa.UniqueConstraint("external_id", name="uq_users_external_id"),
        sa.UniqueConstraint("email", name="uq_users_email"),
        sa.CheckConstraint("external_id IS NOT NULL OR email IS NOT NULL",
                           name="ck_users_identified"),
        sa.CheckConstraint("email = lower(email)", name="ck_users_email_lowercase"),
    )
    op.create_table(
        "memberships",
        _id(),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("role_name", sa.Text(), nullable=False),
        *_created(),
        sa.PrimaryKeyConstraint("id", name="pk_memberships"),
        sa.UniqueConstraint("tenant_id", "user_id", name="uq_memberships_tenant_id_user_id"),
        _fk("memberships", "tenant_id", "tenants.id", ondelete="CASCADE"),
        _fk("memberships", "user_id", "users.id"),
        _fk("memberships", "role_name", "roles.name"),
    )
    op.create_table(
        "invitations",
        _id(),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("email", sa.Text(), nullable=False),
        sa.Column("role_name", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), server_default="pending", nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(),
                  nullable=False),
        *_created(),
        sa.PrimaryKeyConstraint("id", name="pk_invitations"),
        _fk("invitations", "tenant_id", "tenants.id", ondelete="CASCADE"),
        _fk("invitations", "user_id", "users.id", ondelete="CASCADE"),
        sa.CheckConstraint("status IN ('pending', 'sent', 'cancelled')",
                           name="ck_invitations_status"),
    )
    op.create_table(
        "user_preferences",
        _id(),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("locale", sa.Text(), nullable=False),
        sa.Column("timezone", sa.Text(), nullable=False),
        sa.Column("settings", JSONB(), nullable=False),
        *_created(),
        sa.PrimaryKeyConstraint("id", name="pk_user_preferences"),
        sa.UniqueConstraint("user_id", "tenant_id", name="uq_user_preferences_user_id_tenant_id"),
        _fk("user_preferences", "user_id", "users.id", ondelete="CASCADE"),
        _fk("user_preferences", "tenant_id", "tenants.id", ondelete="CASCADE"),
    )
    for table in ("users", "memberships", "invitations", "user_preferences"):
        _index_created_by_key(table)


def _create_resource_tables() -> None:
    op.create_table(
        "resources",
        _id(),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("subscription_id", sa.Uuid(), nullable=False),
        sa.Column("resource_type", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("spec", JSONB(), nullable=False),
        sa.Column("size_units", sa.Integer(), nullable=False),
        sa.Column("status", sa.Text(), server_default="active", nullable=False),
        sa.Column("db_schema", sa.Text(), nullable=True),
        sa.Column("db_role", sa.Text(), nullable=True),
        *_created(),
        sa.PrimaryKeyConstraint("id", name="pk_resources"),
        sa.UniqueConstraint("db_schema", name="uq_resources_db_schema"),
        sa.UniqueConstraint("db_role", name="uq_resources_db_role"),
        # No cascade: a tenant or subscription with live resources cannot disappear silently.
        _fk("resources", "tenant_id", "tenants.id"),
        _fk("resources", "subscription_id", "tenant_service_subscriptions.id"),
        sa.CheckConstraint(f"resource_type IN ({RESOURCE_TYPES})",
                           name="ck_resources_resource_type"),
        sa.CheckConstraint("status IN ('active', 'released')", name="ck_resources_status"),
        sa.CheckConstraint("size_units > 0", name="ck_resources_size_units_positive"),
    )
    op.create_table(
        "billing_usage",
        _id(),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("billing_account_id", sa.Uuid(), nullable=False),
        sa.Column("resource_id", sa.Uuid(), nullable=False),
        sa.Column("metric", sa.Text(), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        *_created(),
        sa.PrimaryKeyConstraint("id", name="pk_billing_usage"),
        _fk("billing_usage", "tenant_id", "tenants.id", ondelete="CASCADE"),
        _fk("billing_usage", "billing_account_id", "billing_accounts.id", ondelete="CASCADE"),
        _fk("billing_usage", "resource_id", "resources.id", ondelete="CASCADE"),
    )
    op.create_table(
        "monitoring_configs",
        _id(),
        sa.Column("resource_id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("metrics", JSONB(), nullable=False),
        sa.Column("alert_rules", JSONB(), nullable=False),
        *_created(),
        sa.PrimaryKeyConstraint("id", name="pk_monitoring_configs"),
        sa.UniqueConstraint("resource_id", name="uq_monitoring_configs_resource_id"),
        _fk("monitoring_configs", "resource_id", "resources.id", ondelete="CASCADE"),
        _fk("monitoring_configs", "tenant_id", "tenants.id", ondelete="CASCADE"),
    )
    for table in ("resources", "billing_usage", "monitoring_configs"):
        _index_created_by_key(table)


def _create_step_executions() -> None:
    op.create_table(
        "step_executions",
        _id(),
        sa.Column("idempotency_key", sa.Text(), nullable=False),
        sa.Column("action", sa.Text(), nullable=False),
        sa.Column("request_id", sa.Text(), nullable=False),
        sa.Column("run", sa.Integer(), nullable=False),
        sa.Column("workflow_type", sa.Text(), nullable=False),
        sa.Column("step", sa.Text(), nullable=False),
        sa.Column("outcome", sa.Text(), nullable=False),
        sa.Column("output", JSONB(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(),
                  nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_step_executions"),
        sa.UniqueConstraint("idempotency_key", "action",
                            name="uq_step_executions_idempotency_key_action"),
        sa.CheckConstraint("action IN ('EXECUTE', 'COMPENSATE')", name="ck_step_executions_action"),
        sa.CheckConstraint("outcome IN ('SUCCEEDED', 'PERMANENT_FAILURE')",
                           name="ck_step_executions_outcome"),
    )
    op.create_index("ix_step_executions_request_id", "step_executions", ["request_id"])


def _seed_reference_data() -> None:
    def table(name: str, *columns: str) -> sa.TableClause:
        return sa.table(name, *(sa.column(c) for c in columns))

    op.bulk_insert(
        table("sla_tiers", "code", "rank", "requests_per_second", "burst"),
        [dict(zip(("code", "rank", "requests_per_second", "burst"), row, strict=True))
         for row in SLA_TIERS],
    )
    op.bulk_insert(
        table("plans", "code", "name", "default_sla_tier"),
        [{"code": c, "name": n, "default_sla_tier": t} for c, n, t in PLANS],
    )
    op.bulk_insert(
        table("services", "name", "description"),
        [{"name": n, "description": d} for n, d in SERVICES],
    )
    op.bulk_insert(
        table("plan_services", "plan_code", "service_name", "activated_by_default"),
        [{"plan_code": plan, "service_name": s, "activated_by_default": s == "CoreService"}
         for plan, services in PLAN_SERVICES.items() for s in services],
    )
    op.bulk_insert(
        table("sla_quotas", "sla_tier", "resource_type", "max_units", "unit"),
        [{"sla_tier": tier, "resource_type": kind, "max_units": limit, "unit": QUOTA_UNITS[kind]}
         for tier, limits in QUOTAS.items()
         for kind, limit in zip(QUOTA_UNITS, limits, strict=True)],
    )
    op.bulk_insert(table("roles", "name", "description"),
                   [{"name": n, "description": d} for n, (d, _) in ROLES.items()])
    op.bulk_insert(
        table("role_permissions", "role_name", "permission"),
        [{"role_name": n, "permission": p} for n, (_, perms) in ROLES.items() for p in perms],
    )


def downgrade() -> None:
    # Schemas and roles of allocated DATABASE resources live outside these tables and stay:
    # release the resources (their compensation) before going below this revision.
    for name in (
        "step_executions", "monitoring_configs", "billing_usage", "resources",
        "user_preferences", "invitations", "memberships", "users",
        "rate_limits", "service_instances", "tenant_service_subscriptions", "billing_accounts",
        "tenants", "entities",
        "role_permissions", "roles", "sla_quotas", "plan_services", "services", "plans",
        "sla_tiers",
    ):
        op.drop_table(name)
