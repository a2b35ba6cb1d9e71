"""`provisioning top --once` on the real projection: a batch shows in its rates, in-flight
steps, stuck list, latest failures and leftovers (other tests write the same tables: the
assertions are about this test's own distinctive rows)."""

from __future__ import annotations

import argparse
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from rich.console import Console

from projection.models import requests as requests_table
from provisioning.settings import Settings
from provisioning.top import render_frame, run_top


def row(**fields: object) -> dict:
    now = datetime.now(UTC)
    base = {"request_id": str(uuid.uuid4()), "workflow_type": "tenant", "requested_by": "ada",
            "status": "COMPLETED", "run": 1, "last_sequence": 12, "payload_hash": "h",
            "params": {}, "completed_steps": [], "compensated_steps": [], "attempts": 5,
            "current_step": None, "failed_step": None, "reason": None, "tenant_id": None,
            "created_at": now - timedelta(seconds=2), "updated_at": now, "finished_at": now,
            "uncompensated_steps": []}
    return {**base, **fields}


def test_top_once_shows_the_batch(migrated: sa.Engine, base_settings: Settings,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    mark = uuid.uuid4().hex[:8]
    old = datetime.now(UTC) - timedelta(days=30)  # older than any other row: listed first
    stuck, failed = row(status="IN_PROGRESS", current_step=f"step-{mark}", finished_at=None,
                        created_at=old, updated_at=old), row(
        status="FAILED", failed_step=f"check-{mark}", reason=f"quota exceeded {mark}")
    now = datetime.now(UTC).isoformat()
    leftover = row(status="FAILED", failed_step="update-billing", reason="billing closed",
                   workflow_type="resource", uncompensated_steps=[
                       {"step": "allocate-resource", "reason": f"schema in use {mark}",
                        "since": now},
                       {"step": f"update-billing-{mark}", "reason": "billing 503", "since": now}])
    rows = [row() for _ in range(3)] + [stuck, failed, leftover]
    with migrated.begin() as conn:
        conn.execute(sa.insert(requests_table), rows)

    console = Console(record=True, width=200)
    try:
        console.print(render_frame(migrated, window_min=180))
    finally:
        with migrated.begin() as conn:  # a made-up leftover must not stay in the real view
            conn.execute(sa.delete(requests_table).where(
                requests_table.c.request_id == leftover["request_id"]))
    frame = console.export_text()
    assert "provisioning top" in frame and "Latest failures" in frame
    assert f"quota exceeded {mark}" in frame and f"check-{mark}" in frame
    assert stuck["request_id"] in frame  # slowest running and stuck
    assert f"step-{mark}" in frame
    assert "Needs attention" in frame and leftover["request_id"] in frame
    assert f"schema in use {mark}" in frame and f"update-billing-{mark}" in frame

    assert run_top(argparse.Namespace(once=True, window_min=15, interval=1),
                   base_settings) == 0
    printed = capsys.readouterr().out
    assert "Requests, last 15 min" in printed and "tenant" in printed
