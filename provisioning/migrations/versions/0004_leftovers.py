"""Leftovers: what failed compensations left behind, on the request row and in a view.

Revision ID: 0004_leftovers
Revises: 0003_roles
Create Date: 2026-12-05

A compensation whose retries are spent is skipped (the saga goes on undoing the rest), so what
its step did may still exist: a tenant, a schema, a role. Such a step is a leftover until an
operator's re-attempt compensates it or an operator resolves it by hand.

- `provisioning_requests.uncompensated_steps`: `[{"step", "reason", "since"}]`, the reason of
  the last failed attempt and when the step was first given up (`projection.fold`).
- `provisioning_needs_attention`: one row per request with leftovers, oldest first:

      SELECT * FROM provisioning_needs_attention;

Operators read it through `provisioning_reader`, as the other views; the writer may read it
too (`provisioning top` runs under either).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0004_leftovers"
down_revision = "0003_roles"
branch_labels = None
depends_on = None

HAS_LEFTOVERS = "uncompensated_steps <> '[]'::jsonb"

NEEDS_ATTENTION = f"""
    SELECT r.request_id, r.workflow_type, r.tenant_id, r.status, r.run,
           ARRAY(SELECT x.item->>'step'
                 FROM jsonb_array_elements(r.uncompensated_steps) WITH ORDINALITY x(item, n)
                 ORDER BY x.n) AS steps,
           (SELECT jsonb_object_agg(x.item->>'step', x.item->>'reason')
            FROM jsonb_array_elements(r.uncompensated_steps) x(item)) AS reasons,
           (SELECT min((x.item->>'since')::timestamptz)
            FROM jsonb_array_elements(r.uncompensated_steps) x(item)) AS since,
           r.failed_step, r.reason AS failure_reason, r.updated_at
    FROM provisioning_requests r
    WHERE r.{HAS_LEFTOVERS}
    ORDER BY since
"""


def upgrade() -> None:
    op.add_column("provisioning_requests", sa.Column(
        "uncompensated_steps", JSONB(), nullable=False, server_default=sa.text("'[]'::jsonb")))
    # The view reads only the few rows with leftovers.
    op.create_index("ix_provisioning_requests_needs_attention", "provisioning_requests",
                    ["updated_at"], postgresql_where=sa.text(HAS_LEFTOVERS))
    op.execute(f"CREATE VIEW provisioning_needs_attention AS {NEEDS_ATTENTION}")
    op.execute("GRANT SELECT ON provisioning_needs_attention "
               "TO provisioning_reader, provisioning_writer")


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS provisioning_needs_attention")
    op.drop_index("ix_provisioning_requests_needs_attention", "provisioning_requests")
    op.drop_column("provisioning_requests", "uncompensated_steps")
