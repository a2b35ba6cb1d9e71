"""The console's pages: sign-in and out, the requests table, one request, the overview.

Every page reads the projection through the API's store and queries, with the viewer's tenant
(`Session.tenant_scope`); every action goes through the API's own operator code
(`api.app.send_operator_action`), so the console can do nothing the API would not.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from fastapi import APIRouter, Request
from fastapi.responses import Response

from api.app import Services, send_operator_action, visible_to
from api.console import charts, queries, timeline
from api.console.filters import STATUS_CHOICES, WORKFLOWS, Filters
from api.console.rendering import redirect, render
from api.console.session import (
    ConsoleError,
    Session,
    check_csrf,
    check_same_site,
    current_session,
    start,
    verify,
)
from api.console.session import end as end_session
from api.operator_actions import InvalidReason, applicable, checked_reason
from api.problems import Problem
from projection import store
from projection.fold import RequestRow
from sagas.workflows import DEFAULT_REGISTRY

router = APIRouter(prefix="/console", include_in_schema=False)
ACTIONS = ("cancel", "resume", "retry", "recompensate", "resolve")
ACTION_LABELS = {"CANCEL": "Cancel request", "RESUME": "Resume request",
                 "RETRY": "Retry request", "RECOMPENSATE": "Re-attempt undo",
                 "RESOLVE": "Mark resolved"}


def services(request: Request) -> Services:
    return request.app.state.services


def fragment(request: Request) -> bool:
    """The page's live parts only: what its script swaps in when the projection changes."""
    return request.headers.get("x-console-fragment") == "live"


async def posted_form(request: Request) -> tuple[Session, dict[str, str]]:
    """A form post's session and fields, once it is shown to come from the console itself."""
    check_same_site(request)
    session = await current_session(request)
    form = await request.form()
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    check_csrf(session, fields.get("csrf"))
    return session, fields


def require_operator(session: Session) -> None:
    if not session.operator:
        raise ConsoleError(403, "Only operators (provisioning:operate) can do this.")


async def visible_row(request: Request, session: Session, request_id: str) -> RequestRow:
    try:
        request_id = str(uuid.UUID(request_id))
    except ValueError:
        raise ConsoleError(404, f"{request_id[:60]!r} is not a request id.") from None
    row = await services(request).db(store.read_request, request_id)
    if row is None or not visible_to(row, session.caller):
        raise ConsoleError(404, f"No request {request_id} is visible to you.")
    return row


# --- signing in and out ----------------------------------------------------------------------


@router.get("")
async def home() -> Response:
    return redirect("/console/requests")


@router.get("/sign-in")
async def sign_in_page(request: Request, message: str | None = None,
                       next: str | None = None) -> Response:  # noqa: A002 - the query name
    return render(request, "sign_in.html", {"message": message, "next": _local_path(next)})


@router.post("/sign-in")
async def sign_in(request: Request) -> Response:
    check_same_site(request)  # no other site signs a browser in under its own token
    form = await request.form()
    token = str(form.get("token") or "").strip().removeprefix("Bearer ").strip()
    target = _local_path(str(form.get("next") or "")) or "/console/requests"
    if not token:
        return render(request, "sign_in.html", {"message": "Paste a bearer token to sign in.",
                                                "next": target}, status_code=400)
    try:
        await verify(request, token)
    except ConsoleError as exc:
        return render(request, "sign_in.html", {"message": exc.message, "next": target},
                      status_code=exc.status)
    response = redirect(target)
    start(response, request, token)
    return response


@router.post("/sign-out")
async def sign_out(request: Request) -> Response:
    await posted_form(request)
    response = redirect("/console/sign-in?message=Signed%20out.")
    end_session(response, request)
    return response


def _local_path(path: str | None) -> str | None:
    """Only a page of the console as the place to go after signing in (no open redirect)."""
    if path and path.startswith("/console/") and not path.startswith("//") and "\\" not in path:
        return path
    return None


# --- the requests table --------------------------------------------------------------------


@router.get("/requests")
async def requests_page(request: Request) -> Response:
    session = await current_session(request)
    svc = services(request)
    filters, problems = Filters.parse(request.query_params)
    if session.tenant_scope is not None:
        filters = filters.with_tenant(None)  # a tenant's session sees its own tenant only
    page = await svc.db(queries.list_requests, session.tenant_scope, filters,
                        svc.settings.console_stuck_after_s)
    context = {"filters": filters, "page": page, "problems": problems, "nav": "requests",
               "status_choices": STATUS_CHOICES, "workflows": WORKFLOWS,
               "steps": _step_names(), "now": datetime.now(UTC)}
    if fragment(request):
        return render(request, "_requests_live.html", context, session=session)
    return render(request, "requests.html", context, session=session)


def _step_names() -> list[str]:
    names: list[str] = []
    for workflow in WORKFLOWS:
        names += [s.name for s in DEFAULT_REGISTRY.latest(workflow).steps]
    return names


# --- one request -----------------------------------------------------------------------------


@router.get("/requests/{request_id}")
async def request_page(request: Request, request_id: str, run: str | None = None,
                       sent: str | None = None) -> Response:
    session = await current_session(request)
    row = await visible_row(request, session, request_id)
    shown = int(run) if run and run.isdigit() else None  # else the latest run
    return await _request_response(request, session, row, run=shown, sent=sent)


async def _request_response(request: Request, session: Session, row: RequestRow, *,
                            run: int | None = None, sent: str | None = None,
                            error: str | None = None, status_code: int = 200) -> Response:
    audit = await services(request).db(store.read_events, row.request_id)
    now = datetime.now(UTC)
    runs = timeline.runs(audit, now)
    shown = next((r for r in runs if r.run == run), runs[-1] if runs else None)
    sent_label = ACTION_LABELS.get((sent or "").upper())
    context = {
        "row": row, "runs": runs, "shown": shown, "audit": audit, "now": now,
        "chart": charts.timeline_chart(shown, now) if shown else None,
        "actions": applicable(row) if session.operator else [],
        "action_labels": ACTION_LABELS, "nav": "requests", "error": error,
        "flash": (f"{sent_label}: sent. The worker applies it in order with everything else; "
                  "this page follows it live.") if sent_label else None,
    }
    template = "_request_live.html" if fragment(request) else "request.html"
    return render(request, template, context, session=session, status_code=status_code)


@router.post("/requests/{request_id}/actions/{action}")
async def act(request: Request, request_id: str, action: str) -> Response:
    session, form = await posted_form(request)
    require_operator(session)
    if action not in ACTIONS:
        raise ConsoleError(404, f"There is no action {action[:40]!r}.")
    row = await visible_row(request, session, request_id)
    action = action.upper()
    try:
        reason = checked_reason(form.get("reason"), required=True)
        await send_operator_action(services(request), row, session.caller, action, reason,
                                   form.get("step") or None)
    except InvalidReason as exc:
        return await _request_response(request, session, row, error=str(exc), status_code=422)
    except Problem as exc:
        return await _request_response(request, session, row, error=exc.detail,
                                       status_code=exc.status)
    return redirect(f"/console/requests/{row.request_id}?sent={action.lower()}")


# --- the overview ----------------------------------------------------------------------------


@router.get("/overview")
async def overview_page(request: Request) -> Response:
    session = await current_session(request)
    svc = services(request)
    figures = await svc.db(queries.overview, session.tenant_scope,
                           svc.settings.console_stuck_after_s)
    seen = {w for _, w, _ in figures.per_minute}
    workflows = [*WORKFLOWS, *sorted(seen - set(WORKFLOWS))]
    success = charts.horizontal_bars(
        "Success rate per workflow, last hour",
        [(w.workflow, (w.success_rate or 0) * 100,
          "no finished request" if w.success_rate is None else
          f"{w.success_rate:.1%} of {w.completed + w.failed} finished", "rate")
         for w in figures.workflows], maximum=100)
    p95 = charts.horizontal_bars(
        "p95 duration per workflow (seconds), last hour",
        [(w.workflow, w.p95_s or 0, f"p95 {w.p95_s or 0:.2f} s over {w.finished} finished",
          "duration") for w in figures.workflows])
    in_flight = charts.horizontal_bars(
        "Requests in flight by step",
        [(f"{wf} · {step}" + (" (undo)" if status == "COMPENSATING" else ""), n,
          f"{n} {status.lower().replace('_', ' ')}", f"st-{status}")
         for wf, step, status, n in figures.in_flight[:15]], whole=True)
    per_minute = charts.per_minute("Requests per minute, last hour, by workflow", figures.now,
                                   figures.per_minute, workflows)
    return render(request, "overview.html", {
        "figures": figures, "success": success, "p95": p95, "in_flight": in_flight,
        "per_minute": per_minute, "workflows": workflows, "nav": "overview",
        "stuck_after_min": svc.settings.console_stuck_after_s // 60,
    }, session=session)
