"""What the console reads from the projection: the requests table, counts, bulk targets and the
overview's figures. Plain queries on the projection's tables (`projection.models`); every one
takes the viewer's tenant (None: an operator, who sees every tenant) so a tenant's session
never reads another tenant's rows. Each function takes a connection (`Services.db`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

from api.console.filters import NEEDS_ATTENTION, PAGE_SIZE, STUCK, Filters
from projection.fold import RequestRow
from projection.models import STATUSES, requests
from projection.store import row_from_db

RUNNING = ("PENDING", "IN_PROGRESS", "COMPENSATING")
r = requests.c
HAS_LEFTOVERS = r.uncompensated_steps != sa.cast(sa.literal("[]"), JSONB)
_SORT_COLUMNS = {"created": r.created_at, "updated": r.updated_at, "status": r.status,
                 "workflow": r.workflow_type, "tenant": r.tenant_id, "step": r.current_step}


def _stuck(stuck_after_s: int) -> sa.ColumnElement[bool]:
    return sa.and_(r.status.in_(RUNNING),
                   r.updated_at < sa.func.now() - timedelta(seconds=stuck_after_s))


def _visible_to(viewer_tenant: str | None) -> list[sa.ColumnElement[bool]]:
    """A tenant sees its requests and the tenant provisionings it submitted (as the API)."""
    if viewer_tenant is None:
        return []
    return [sa.or_(r.tenant_id == viewer_tenant, r.submitted_tenant_id == viewer_tenant)]


def _conditions(viewer_tenant: str | None, f: Filters, stuck_after_s: int, *,
                with_status: bool = True) -> list[sa.ColumnElement[bool]]:
    where = _visible_to(viewer_tenant)
    if with_status and f.status == NEEDS_ATTENTION:
        where.append(HAS_LEFTOVERS)
    elif with_status and f.status == STUCK:
        where.append(_stuck(stuck_after_s))
    elif with_status and f.status:
        where.append(r.status == f.status)
    if f.workflow:
        where.append(r.workflow_type == f.workflow)
    if f.tenant:
        where.append(r.tenant_id == f.tenant)
    if f.step:
        where.append(sa.or_(r.current_step == f.step, r.failed_step == f.step))
    if f.since:
        where.append(r.created_at >= f.since)
    if f.until:
        where.append(r.created_at < f.until)
    if f.request_id:
        if len(f.request_id) == 36:
            where.append(sa.cast(r.request_id, sa.Text) == f.request_id)
        else:
            where.append(sa.cast(r.request_id, sa.Text).startswith(f.request_id,
                                                                    autoescape=True))
    return where


@dataclass(frozen=True, slots=True)
class Page:
    rows: list[RequestRow]
    total: int  # rows matching the filters, on every page
    counts: dict[str, int]  # per status (and NEEDS_ATTENTION, STUCK) under the other filters
    page: int
    pages: int


def list_requests(conn: sa.Connection, viewer_tenant: str | None, f: Filters,
                  stuck_after_s: int) -> Page:
    counts = status_counts(conn, viewer_tenant, f, stuck_after_s)
    where = _conditions(viewer_tenant, f, stuck_after_s)
    total = conn.execute(sa.select(sa.func.count()).select_from(requests).where(*where)).scalar()
    pages = max(1, -(-int(total or 0) // PAGE_SIZE))
    page = min(f.page, pages)
    column = _SORT_COLUMNS[f.sort]
    order = column.desc().nulls_last() if f.descending else column.asc().nulls_last()
    query = (sa.select(requests).where(*where).order_by(order, r.request_id)
             .limit(PAGE_SIZE).offset((page - 1) * PAGE_SIZE))
    rows = [row_from_db(x._mapping) for x in conn.execute(query)]
    return Page(rows, int(total or 0), counts, page, pages)


def status_counts(conn: sa.Connection, viewer_tenant: str | None, f: Filters,
                  stuck_after_s: int) -> dict[str, int]:
    where = _conditions(viewer_tenant, f, stuck_after_s, with_status=False)
    query = (sa.select(r.status, sa.func.count(),
                       sa.func.count().filter(HAS_LEFTOVERS),
                       sa.func.count().filter(_stuck(stuck_after_s)))
             .where(*where).group_by(r.status))
    counts = dict.fromkeys((*STATUSES, NEEDS_ATTENTION, STUCK), 0)
    for status, count, leftovers, stuck in conn.execute(query):
        counts[status] = count
        counts[NEEDS_ATTENTION] += leftovers
        counts[STUCK] += stuck
    return counts


# --- bulk actions --------------------------------------------------------------------------------

# What a bulk action touches among the requests matching the filter: the FAILED ones without
# leftovers (they can run again), or the stuck ones that can be cancelled.
BULK_ACTIONS = ("RETRY", "CANCEL")
BULK_LIMIT = 500


def _bulk_target(action: str, stuck_after_s: int) -> sa.ColumnElement[bool]:
    if action == "RETRY":
        return sa.and_(r.status == "FAILED", sa.not_(HAS_LEFTOVERS))
    return sa.and_(_stuck(stuck_after_s), r.status.in_(("PENDING", "IN_PROGRESS")))


def bulk_count(conn: sa.Connection, viewer_tenant: str | None, f: Filters, action: str,
               stuck_after_s: int) -> int:
    where = [*_conditions(viewer_tenant, f, stuck_after_s), _bulk_target(action, stuck_after_s)]
    return int(conn.execute(sa.select(sa.func.count()).select_from(requests)
                            .where(*where)).scalar() or 0)


def bulk_rows(conn: sa.Connection, viewer_tenant: str | None, f: Filters, action: str,
              stuck_after_s: int, limit: int = BULK_LIMIT) -> list[RequestRow]:
    where = [*_conditions(viewer_tenant, f, stuck_after_s), _bulk_target(action, stuck_after_s)]
    query = sa.select(requests).where(*where).order_by(r.created_at, r.request_id).limit(limit)
    return [row_from_db(x._mapping) for x in conn.execute(query)]


# --- overview ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WorkflowHour:
    workflow: str
    finished: int
    completed: int
    failed: int
    p95_s: float | None

    @property
    def success_rate(self) -> float | None:
        judged = self.completed + self.failed
        return None if judged == 0 else self.completed / judged


@dataclass(frozen=True, slots=True)
class Overview:
    now: datetime
    per_minute: list[tuple[datetime, str, int]]  # minute, workflow, requests created
    workflows: list[WorkflowHour]
    in_flight: list[tuple[str, str, str, int]]  # workflow, step, status, requests
    stuck: list[RequestRow]
    stuck_total: int
    needs_attention: int


def overview(conn: sa.Connection, viewer_tenant: str | None, stuck_after_s: int) -> Overview:
    visible = _visible_to(viewer_tenant)
    now = conn.execute(sa.select(sa.func.now())).scalar_one()
    hour_ago = now - timedelta(hours=1)
    minute = sa.func.date_trunc("minute", r.created_at).label("minute")
    per_minute = [(m, w, n) for m, w, n in conn.execute(
        sa.select(minute, r.workflow_type, sa.func.count())
        .where(*visible, r.created_at >= hour_ago)
        .group_by(minute, r.workflow_type).order_by(minute))]
    seconds = sa.extract("epoch", r.finished_at - r.created_at)
    workflows = [WorkflowHour(w, n, c, f, p95) for w, n, c, f, p95 in conn.execute(
        sa.select(r.workflow_type, sa.func.count(),
                  sa.func.count().filter(r.status == "COMPLETED"),
                  sa.func.count().filter(r.status == "FAILED"),
                  sa.func.percentile_cont(0.95).within_group(seconds))
        .where(*visible, r.finished_at >= hour_ago, r.status.in_(("COMPLETED", "FAILED")))
        .group_by(r.workflow_type).order_by(r.workflow_type))]
    step = sa.func.coalesce(r.current_step, "(not started)")
    in_flight = [(w, s, st, n) for w, s, st, n in conn.execute(
        sa.select(r.workflow_type, step, r.status, sa.func.count())
        .where(*visible, r.status.in_(RUNNING))
        .group_by(r.workflow_type, step, r.status)
        .order_by(sa.func.count().desc(), r.workflow_type, step))]
    stuck_where = [*visible, _stuck(stuck_after_s)]
    stuck = [row_from_db(x._mapping) for x in conn.execute(
        sa.select(requests).where(*stuck_where).order_by(r.updated_at).limit(20))]
    stuck_total = conn.execute(
        sa.select(sa.func.count()).select_from(requests).where(*stuck_where)).scalar_one()
    attention = conn.execute(
        sa.select(sa.func.count()).select_from(requests).where(*visible, HAS_LEFTOVERS)
    ).scalar_one()
    return Overview(now, per_minute, workflows, in_flight, stuck, int(stuck_total),
                    int(attention))
