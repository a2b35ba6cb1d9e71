"""The operators' web console, served by the API process under /console.

Server-rendered pages (Jinja2 templates, SVG charts drawn from geometry computed here) and one
small script of our own for live updates; every asset ships in the package (`templates/`,
`static/`), so the console works without network access. It reuses the API's token
verification (`api.auth`), projection reads (`projection.store`) and operator actions
(`api.operator_actions`, through `api.app.send_operator_action`).

- `session`: the bearer token in an HttpOnly, SameSite=Strict cookie; CSRF checks.
- `pages`: sign-in/out, the requests table, one request, the overview.
- `bulk`: retry or cancel every request matching a filter, one audited action each.
- `dead_letters`: the commands DLQ, fix and redrive.
- `live`: server-sent events fed by the projection's NOTIFYs.
- `filters`, `queries`, `timeline`, `charts`: what the pages read and draw (the last two pure).
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.staticfiles import StaticFiles

from api.console.rendering import STATIC_DIR, error_page
from api.console.session import ConsoleError


def install(app: FastAPI) -> None:
    from api.console import bulk, dead_letters, live, pages

    for module in (pages, bulk, dead_letters, live):
        app.include_router(module.router)
    app.mount("/console/static", StaticFiles(directory=STATIC_DIR), name="console-static")

    @app.exception_handler(ConsoleError)
    async def _console_error(request: Request, exc: ConsoleError):  # type: ignore[no-untyped-def]
        return error_page(request, exc)
