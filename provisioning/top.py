"""`provisioning top`: a live view of provisioning for operators without Grafana.

It reads the projection in PostgreSQL (read-only queries): request rate per workflow type,
success ratio, what is in flight by workflow and step, the slowest running requests, stuck
requests, the latest failures with their reasons, and the requests that need attention: steps
whose compensation was given up, which an operator must re-attempt or resolve. `--once` prints
one frame and exits.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import sqlalchemy as sa
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from provisioning.settings import Settings

QUERIES = {
    "rates": """
        SELECT workflow_type, count(*) AS requests,
               count(*) FILTER (WHERE status = 'COMPLETED') AS completed,
               count(*) FILTER (WHERE status IN ('FAILED', 'REJECTED')) AS failed
        FROM provisioning_requests
        WHERE created_at > now() - make_interval(mins => :window)
        GROUP BY workflow_type ORDER BY workflow_type""",
    "in_flight": """
        SELECT workflow_type, status, coalesce(current_step, '-') AS step, count(*) AS requests
        FROM provisioning_requests
        WHERE status IN ('PENDING', 'IN_PROGRESS', 'COMPENSATING')
        GROUP BY workflow_type, status, current_step ORDER BY requests DESC LIMIT 15""",
    "slowest": """
        SELECT request_id, workflow_type, status, coalesce(current_step, '-') AS step,
               extract(epoch FROM now() - created_at) AS age_s
        FROM provisioning_requests
        WHERE status IN ('PENDING', 'IN_PROGRESS', 'COMPENSATING')
        ORDER BY created_at LIMIT 5""",
    "stuck": """
        SELECT request_id, workflow_type, status, coalesce(current_step, '-') AS step,
               extract(epoch FROM idle_for) AS idle_s
        FROM provisioning_stuck_requests LIMIT 10""",
    "failures": """
        SELECT request_id, workflow_type, coalesce(failed_step, '-') AS step, reason,
               finished_at
        FROM provisioning_requests
        WHERE status IN ('FAILED', 'REJECTED') ORDER BY finished_at DESC NULLS LAST LIMIT 5""",
    # Newest first, as the failures; the count says how many there are in all.
    "needs_attention": """
        SELECT request_id, workflow_type, status, steps, reasons, since,
               count(*) OVER () AS total
        FROM provisioning_needs_attention ORDER BY since DESC LIMIT 10""",
}


def run_top(args: argparse.Namespace, settings: Settings) -> int:
    from provisioning.database import create_engine

    engine = create_engine(settings, pool_size=1, max_overflow=0)
    try:
        if args.once:
            Console(width=max(120, Console().width)).print(render_frame(engine,
                                                                        args.window_min))
            return 0
        with Live(render_frame(engine, args.window_min), refresh_per_second=4,
                  screen=False) as live:
            while True:
                time.sleep(args.interval)
                live.update(render_frame(engine, args.window_min))
    except KeyboardInterrupt:
        return 0
    finally:
        engine.dispose()


def read(engine: sa.Engine, window_min: int) -> dict[str, list[dict[str, Any]]]:
    with engine.connect() as conn:
        conn.execute(sa.text("SET TRANSACTION READ ONLY"))
        return {name: [dict(r._mapping) for r in conn.execute(sa.text(sql),
                                                               {"window": window_min})]
                for name, sql in QUERIES.items()}


def render_frame(engine: sa.Engine, window_min: int = 15) -> Group:
    data = read(engine, window_min)
    return Group(
        _header(data, window_min), _rates(data, window_min), _in_flight(data),
        _requests("Slowest running", data["slowest"], "age_s", "age"),
        _requests("Stuck (not moving)", data["stuck"], "idle_s", "idle for"),
        _failures(data), _needs_attention(data),
    )


def _header(data: dict, window_min: int) -> Text:
    requests = sum(r["requests"] for r in data["rates"])
    completed = sum(r["completed"] for r in data["rates"])
    failed = sum(r["failed"] for r in data["rates"])
    finished = completed + failed
    ratio = f"{completed / finished:.2%}" if finished else "-"
    in_flight = sum(r["requests"] for r in data["in_flight"])
    return Text.assemble(
        ("provisioning top", "bold"),
        f"  last {window_min} min: {requests} requests ({requests / (window_min * 60):.2f}/s), "
        f"success {ratio}, in flight {in_flight}, stuck {len(data['stuck'])}, "
        f"need attention {_attention_total(data)}")


def _rates(data: dict, window_min: int) -> Table:
    table = Table(title=f"Requests, last {window_min} min", title_justify="left")
    for column in ("workflow", "requests", "per min", "completed", "failed", "success"):
        table.add_column(column, justify="left" if column == "workflow" else "right")
    for r in data["rates"]:
        finished = r["completed"] + r["failed"]
        table.add_row(r["workflow_type"], str(r["requests"]),
                      f"{r['requests'] / window_min:.1f}", str(r["completed"]), str(r["failed"]),
                      f"{r['completed'] / finished:.1%}" if finished else "-")
    return table


def _in_flight(data: dict) -> Table:
    table = Table(title="In flight by step", title_justify="left")
    for column in ("workflow", "status", "step", "requests"):
        table.add_column(column)
    for r in data["in_flight"]:
        table.add_row(r["workflow_type"], r["status"], r["step"], str(r["requests"]))
    return table


def _requests(title: str, rows: list[dict], seconds_key: str, label: str) -> Table:
    table = Table(title=title, title_justify="left")
    for column in ("request", "workflow", "status", "step", label):
        table.add_column(column)
    for r in rows:
        table.add_row(str(r["request_id"]), r["workflow_type"], r["status"], r["step"],
                      f"{float(r[seconds_key]):,.0f} s")
    return table


def _failures(data: dict) -> Table:
    table = Table(title="Latest failures", title_justify="left")
    for column in ("request", "workflow", "failed step", "reason"):
        table.add_column(column, overflow="fold")
    for r in data["failures"]:
        table.add_row(str(r["request_id"]), r["workflow_type"], r["step"], r["reason"] or "-")
    return table


def _attention_total(data: dict) -> int:
    rows = data["needs_attention"]
    return int(rows[0]["total"]) if rows else 0


def _needs_attention(data: dict) -> Table:
    table = Table(title=f"Needs attention: {_attention_total(data)} requests with uncompensated "
                        "steps (provisioning recompensate|resolve <id> --step S)",
                  title_justify="left")
    for column in ("request", "workflow", "status", "uncompensated step", "reason", "since"):
        table.add_column(column, overflow="fold")
    for r in data["needs_attention"]:
        for index, step in enumerate(r["steps"]):
            first = index == 0  # one line per step, the request's columns on its first
            table.add_row(str(r["request_id"]) if first else "",
                          r["workflow_type"] if first else "", r["status"] if first else "",
                          step, (r["reasons"] or {}).get(step, "-"),
                          f"{r['since']:%Y-%m-%d %H:%M:%S}" if first else "")
    return table
