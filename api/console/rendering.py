"""Pages from the Jinja2 templates beside this module, with the console's security headers.

Every page forbids framing (clickjacking) and loads scripts, styles and data from the console's
own origin only (Content-Security-Policy): the assets ship in the package, nothing is fetched
from elsewhere. Pages show live data, so no cache keeps them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from api.console import filters as filter_names
from api.console.session import ConsoleError, Session, end
from api.console.timeline import format_duration
from projection.fold import from_millis

HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; "
        "object-src 'none'"),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
STATUS_LABELS = {"PENDING": "Pending", "IN_PROGRESS": "In progress",
                 "COMPENSATING": "Compensating", "COMPLETED": "Completed", "FAILED": "Failed",
                 "REJECTED": "Rejected", filter_names.NEEDS_ATTENTION: "Needs attention",
                 filter_names.STUCK: "Stuck"}

templates = Jinja2Templates(directory=str(HERE / "templates"))


def _when(moment: datetime | None, precise: bool = False) -> str:
    if moment is None:
        return "–"
    text = moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f" if precise
                                           else "%Y-%m-%d %H:%M:%S")
    return text[:-3] if precise else text


templates.env.filters["when"] = _when
templates.env.filters["duration"] = format_duration
templates.env.filters["millis"] = lambda ms: _when(from_millis(ms)) if ms else "–"
templates.env.filters["detail"] = lambda v: (
    ", ".join(f"{k}={x}" for k, x in v.items()) if isinstance(v, dict)
    else ", ".join(map(str, v)) if isinstance(v, list) else str(v))
templates.env.globals["status_label"] = lambda s: STATUS_LABELS.get(s, s)


def render(request: Request, template: str, context: dict[str, Any], *,
           session: Session | None = None, status_code: int = 200) -> HTMLResponse:
    response = templates.TemplateResponse(
        request, template, {"session": session, **context}, status_code=status_code)
    response.headers.update(SECURITY_HEADERS)
    return response


def redirect(url: str) -> RedirectResponse:
    response = RedirectResponse(url, status_code=303)
    response.headers.update(SECURITY_HEADERS)
    return response


def error_page(request: Request, exc: ConsoleError) -> Response:
    """A page for a console error: the sign-in page for a page whose session is missing or
    ended, else the error with its status (a form post without a session gets a 401 page, so
    a refused cross-site post is a refusal, not a redirect)."""
    if exc.sign_in and request.method == "GET" and not _wants_fragment(request):
        target = f"/console/sign-in?message={quote(exc.message)}"
        if request.url.path not in ("/console/sign-in", "/console/live"):
            here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            target += f"&next={quote(here)}"
        response: Response = redirect(target)
    else:
        response = render(request, "error.html", {"message": exc.message,
                                                  "status": exc.status},
                          status_code=exc.status)
    if exc.clear_session:
        end(response, request)
    return response


def _wants_fragment(request: Request) -> bool:
    return request.headers.get("x-console-fragment") is not None
