"""Acting on many requests at once: retry the FAILED ones, or cancel the stuck ones, that match
the requests table's current filter.

The operator first sees how many requests the action will touch (and asks with that count); if
more match by the time they confirm, nothing is sent and the page asks again. Each request then
gets its own operator command, as if acted on alone, so each is checked, applied in order by
its worker and audited with the operator's name and reason.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.datastructures import QueryParams

from api.app import send_operator_action
from api.console import queries
from api.console.filters import Filters
from api.console.pages import posted_form, require_operator, services
from api.console.rendering import render
from api.console.session import ConsoleError, Session, current_session
from api.operator_actions import InvalidReason, checked_reason
from api.problems import Problem
from projection.fold import RequestRow

router = APIRouter(prefix="/console/bulk", include_in_schema=False)
WHAT = {"retry": ("RETRY", "Retry", "FAILED requests (without leftovers)"),
        "cancel": ("CANCEL", "Cancel", "stuck requests (pending or in progress, not moving)")}


def _action(name: str) -> tuple[str, str, str]:
    if name not in WHAT:
        raise ConsoleError(404, f"There is no bulk action {name[:40]!r}.")
    return WHAT[name]


async def _count(request: Request, session: Session, filters: Filters, action: str) -> int:
    svc = services(request)
    return await svc.db(queries.bulk_count, session.tenant_scope, filters, action,
                        svc.settings.console_stuck_after_s)


@router.get("/{name}")
async def confirm_page(request: Request, name: str) -> Response:
    session = await current_session(request)
    require_operator(session)
    action, verb, what = _action(name)
    filters, problems = Filters.parse(request.query_params)
    filters = filters.matching()
    count = await _count(request, session, filters, action)
    return render(request, "bulk_confirm.html", {
        "name": name, "verb": verb, "what": what, "filters": filters, "count": count,
        "problems": problems, "limit": queries.BULK_LIMIT, "nav": "requests",
        "stuck_after_min": services(request).settings.console_stuck_after_s // 60,
    }, session=session)


@router.post("/{name}")
async def apply(request: Request, name: str) -> Response:
    session, form = await posted_form(request)
    require_operator(session)
    action, verb, what = _action(name)
    filters, _ = Filters.parse(QueryParams(form))
    filters = filters.matching()
    confirmed = int(form["expected"]) if form.get("expected", "").isdigit() else -1
    count = await _count(request, session, filters, action)
    context = {"name": name, "verb": verb, "what": what, "filters": filters, "count": count,
               "problems": [], "limit": queries.BULK_LIMIT, "nav": "requests",
               "stuck_after_min": services(request).settings.console_stuck_after_s // 60}
    try:
        reason = checked_reason(form.get("reason"), required=True)
    except InvalidReason as exc:
        return render(request, "bulk_confirm.html", {**context, "error": str(exc)},
                      session=session, status_code=422)
    if count > confirmed or confirmed > queries.BULK_LIMIT:
        return render(request, "bulk_confirm.html", {
            **context, "error": f"{count} requests match now, not the {confirmed} you "
                                "confirmed: check the count and confirm again."},
            session=session, status_code=409)
    svc = services(request)
    rows = await svc.db(queries.bulk_rows, session.tenant_scope, filters, action,
                        svc.settings.console_stuck_after_s, confirmed)

    async def one(row: RequestRow) -> str | None:
        try:
            await send_operator_action(svc, row, session.caller, action, reason)
        except Problem as exc:
            return exc.detail
        return None

    outcomes = await asyncio.gather(*(one(row) for row in rows))
    refused = [(row, why) for row, why in zip(rows, outcomes, strict=True) if why is not None]
    sent = [row for row, why in zip(rows, outcomes, strict=True) if why is None]
    return render(request, "bulk_done.html", {**context, "sent": sent, "refused": refused,
                                              "reason": reason}, session=session)
