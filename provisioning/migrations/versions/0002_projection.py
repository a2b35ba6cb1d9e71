"""The projection of the events topic: request statuses, the audit trail, operator views.

Revision ID: 0002_projection
Revises: 0001_registry
Create Date: 2026-11-28

Tables mirror `projection.models` (a test compares the two). The views are for operators at a
psql prompt; the stuck-request threshold is a setting, so it can change per session:

    SET provisioning.stuck_after = '5 minutes';
    SELECT * FROM provisioning_stuck_requests;
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

revision = "0002_projection"
down_revision = "0001_registry"
branch_labels = None
depends_on = None

STATUSES = "'PENDING', 'IN_PROGRESS', 'COMPENSATING', 'COMPLETED', 'FAILED', 'REJECTED'"

VIEWS = {
    # What failed in the last 24 hours, grouped by what went wrong.
    "provisioning_recent_failures": """
        SELECT workflow_type, status, failed_step, reason,
               count(*) AS requests, min(finished_at) AS first_seen, max(finished_at) AS last_seen
        FROM provisioning_requests
        WHERE status IN ('FAILED', 'REJECTED') AND finished_at > now() - interval '24 hours'
        GROUP BY workflow_type, status, failed_step, reason
        ORDER BY requests DESC, last_seen DESC
    """,
    # How long finished requests took (created to finished), per workflow and outcome, 7 days.
    "provisioning_durations": """
        SELECT workflow_type, status, count(*) AS requests,
               percentile_cont(0.50) WITHIN GROUP (ORDER BY d) AS p50_seconds,
               percentile_cont(0.95) WITHIN GROUP (ORDER BY d) AS p95_seconds,
               percentile_cont(0.99) WITHIN GROUP (ORDER BY d) AS p99_seconds,
               max(d) AS max_seconds
        FROM (SELECT workflow_type, status,
                     extract(epoch FROM finished_at - created_at)::double precision AS d
              FROM provisioning_requests
              WHERE finished_at > now() - interval '7 days') finished
        GROUP BY workflow_type, status
        ORDER BY workflow_type, status
    """,
    # Requests that have not moved for longer than provisioning.stuck_after (default 15 min).
    "provisioning_stuck_requests": """
        SELECT request_id, workflow_type, tenant_id, status, run, current_step, attempts, reason,
               created_at, updated_at, now() - updated_at AS idle_for
        FROM provisioning_requests
        WHERE status IN ('PENDING', 'IN_PROGRESS', 'COMPENSATING')
          AND updated_at < now() - coalesce(
                nullif(current_setting('provisioning.stuck_after', true), '')::interval,
                interval '15 minutes')
        ORDER BY updated_at
    """,
}


def _timestamp(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "provisioning_requests",
        sa.Column("request_id", sa.Uuid(), nullable=False),
        sa.Column("workflow_type", sa.Text(), nullable=False),
        sa.Column("tenant_id", sa.Text(), nullable=True),
        sa.Column("submitted_tenant_id", sa.Text(), nullable=True),
        sa.Column("requested_by", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("run", sa.Integer(), nullable=False),
        sa.Column("last_sequence", sa.BigInteger(), nullable=False),
        sa.Column("payload_hash", sa.Text(), nullable=False),
        sa.Column("params", JSONB(), nullable=False),
        sa.Column("reply_to", sa.Text(), nullable=True),
        sa.Column("current_step", sa.Text(), nullable=True),
        sa.Column("completed_steps", ARRAY(sa.Text()), nullable=False),
        sa.Column("compensated_steps", ARRAY(sa.Text()), nullable=False),
        sa.Column("failed_step", sa.Text(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("resource_id", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        _timestamp("created_at"),
        _timestamp("updated_at"),
        _timestamp("finished_at", nullable=True),
        sa.PrimaryKeyConstraint("request_id", name="pk_provisioning_requests"),
        sa.CheckConstraint(f"status IN ({STATUSES})", name="ck_provisioning_requests_status"),
    )
    for columns in (["tenant_id", "created_at"], ["submitted_tenant_id", "created_at"],
                    ["status", "updated_at"]):
        op.create_index(f"ix_provisioning_requests_{'_'.join(columns)}",
                        "provisioning_requests", columns)
    op.create_table(
        "provisioning_events",
        sa.Column("request_id", sa.Uuid(), nullable=False),
        sa.Column("sequence", sa.BigInteger(), nullable=False),
        sa.Column("run", sa.Integer(), nullable=False),
        sa.Column("event_type", sa.Text(), nullable=False),
        sa.Column("step", sa.Text(), nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=True),
        _timestamp("occurred_at"),
        sa.Column("payload", JSONB(), nullable=False),
        sa.Column("kafka_partition", sa.Integer(), nullable=False),
        sa.Column("kafka_offset", sa.BigInteger(), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), server_default=sa.func.now(),
                  nullable=False),
        sa.PrimaryKeyConstraint("request_id", "sequence", name="pk_provisioning_events"),
    )
    for name, query in VIEWS.items():
        op.execute(f"CREATE VIEW {name} AS {query}")


def downgrade() -> None:
    for name in VIEWS:
        op.execute(f"DROP VIEW IF EXISTS {name}")
    op.drop_table("provisioning_events")
    op.drop_table("provisioning_requests")
