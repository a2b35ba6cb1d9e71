"""The projection's tables, as migrations 0002 and 0004 create them (a test compares them).

`provisioning_requests` has one row per request: its latest status. `provisioning_events` has
one row per event (the audit trail), keyed by (request_id, sequence) so a redelivered event is
a no-op. Statuses are text with a CHECK constraint, so a later revision can add one cheaply.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

from provisioning.database import NAMING_CONVENTION

STATUSES = ("PENDING", "IN_PROGRESS", "COMPENSATING", "COMPLETED", "FAILED", "REJECTED")
TERMINAL_STATUSES = ("COMPLETED", "FAILED", "REJECTED")
# Channel the projector notifies (payload: the requestId) when a request reaches a terminal
# status; the API's waiting callers listen on it.
FINISHED_CHANNEL = "provisioning_request_finished"
# Channel notified whenever request rows change (payload: the requests and their tenants, see
# `projection.store.changed_payloads`); the console's live pages follow it.
CHANGED_CHANNEL = "provisioning_request_changed"

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)
_STATUS_LIST = ", ".join(f"'{s}'" for s in STATUSES)


def _timestamp(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


requests = sa.Table(
    "provisioning_requests",
    metadata,
    sa.Column("request_id", sa.Uuid(), primary_key=True),
    sa.Column("workflow_type", sa.Text(), nullable=False),
    # For a tenant provisioning: null until its tenant exists, then the new tenant's id.
    sa.Column("tenant_id", sa.Text(), nullable=True),
    # The tenant the request was submitted under (the caller's X-Tenant-ID), when known.
    sa.Column("submitted_tenant_id", sa.Text(), nullable=True),
    sa.Column("requested_by", sa.Text(), nullable=False),
    sa.Column("status", sa.Text(), nullable=False),
    sa.Column("run", sa.Integer(), nullable=False),
    # Sequence number of the last event applied; 0 while only the API has seen the request.
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
    sa.Column("attempts", sa.Integer(), nullable=False),  # step attempts in the current run
    _timestamp("created_at"),
    _timestamp("updated_at"),
    _timestamp("finished_at", nullable=True),
    # Leftovers (migration 0004): [{"step", "reason", "since"}] of the steps whose compensation
    # was given up and not since re-attempted with success or resolved by hand.
    sa.Column("uncompensated_steps", JSONB(), nullable=False,
              server_default=sa.text("'[]'::jsonb")),
    sa.CheckConstraint(f"status IN ({_STATUS_LIST})", name="status"),
    sa.Index(None, "tenant_id", "created_at"),
    sa.Index(None, "submitted_tenant_id", "created_at"),
    sa.Index(None, "status", "updated_at"),
    # The needs-attention view reads only the few rows with leftovers.
    sa.Index("ix_provisioning_requests_needs_attention", "updated_at",
             postgresql_where=sa.text("uncompensated_steps <> '[]'::jsonb")),
)

events = sa.Table(
    "provisioning_events",
    metadata,
    sa.Column("request_id", sa.Uuid(), primary_key=True),
    sa.Column("sequence", sa.BigInteger(), primary_key=True),
    sa.Column("run", sa.Integer(), nullable=False),
    sa.Column("event_type", sa.Text(), nullable=False),
    sa.Column("step", sa.Text(), nullable=True),
    sa.Column("attempt", sa.Integer(), nullable=True),
    _timestamp("occurred_at"),
    sa.Column("payload", JSONB(), nullable=False),
    # Where the event is in Kafka, so an operator can find the original record.
    sa.Column("kafka_partition", sa.Integer(), nullable=False),
    sa.Column("kafka_offset", sa.BigInteger(), nullable=False),
    sa.Column("recorded_at", sa.DateTime(timezone=True), server_default=sa.func.now(),
              nullable=False),
)
