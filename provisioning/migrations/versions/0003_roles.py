"""Least-privilege roles: a writer for the service's processes, a reader for operators.

Revision ID: 0003_roles
Revises: 0002_projection
Create Date: 2026-11-28

Two group roles (NOLOGIN), created once per cluster and granted on this schema's tables:

- `provisioning_writer`: what the worker (registry), the projector and the API need: read and
  write rows, no DDL. Grant it to the login role the processes use.
- `provisioning_reader`: operators at a psql prompt: the projection's tables and views only,
  read-only; nothing of the registry (tenants, users, billing).

The role running the migrations needs CREATEROLE (or the roles created beforehand).
"""

from __future__ import annotations

from alembic import op

revision = "0003_roles"
down_revision = "0002_projection"
branch_labels = None
depends_on = None

READER_OBJECTS = ("provisioning_requests", "provisioning_events",
                  "provisioning_recent_failures", "provisioning_durations",
                  "provisioning_stuck_requests")


def upgrade() -> None:
    op.execute("""
        DO $$
        BEGIN
            IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'provisioning_writer') THEN
                CREATE ROLE provisioning_writer NOLOGIN;
            END IF;
            IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'provisioning_reader') THEN
                CREATE ROLE provisioning_reader NOLOGIN;
            END IF;
        END
        $$""")
    op.execute(_on_schema("GRANT USAGE ON SCHEMA {s} TO provisioning_writer, "
                          "provisioning_reader"))
    op.execute(_on_schema("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {s} "
                          "TO provisioning_writer"))
    op.execute(f"GRANT SELECT ON {', '.join(READER_OBJECTS)} TO provisioning_reader")


def downgrade() -> None:
    # The roles are cluster-wide and may hold grants in other schemas: only this schema's
    # grants are taken back.
    op.execute(f"REVOKE ALL ON {', '.join(READER_OBJECTS)} FROM provisioning_reader")
    op.execute(_on_schema("REVOKE ALL ON ALL TABLES IN SCHEMA {s} FROM provisioning_writer"))
    op.execute(_on_schema("REVOKE USAGE ON SCHEMA {s} FROM provisioning_writer, "
                          "provisioning_reader"))


def _on_schema(statement: str) -> str:
    """`statement` for the schema the migration runs in (the first of the search path)."""
    quoted = statement.replace("{s}", "%I").replace("'", "''")
    return f"DO $$ BEGIN EXECUTE format('{quoted}', current_schema()); END $$"
