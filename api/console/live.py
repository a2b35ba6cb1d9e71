"""Live updates: server-sent events that tell an open page the projection changed.

The stream is fed by the projection's NOTIFYs (`api.notifications`), not by polling: each
stream follows the changes its viewer may see (one request, the viewer's tenant, or every
tenant for an operator), gathers a burst for a moment, and sends one `changed` event; the
page's script then fetches its live parts again. A comment every 15 s keeps proxies from
closing an idle stream. Streams end when the API shuts down (`app.state.closing`), so a
rolling deploy is not held up by open pages (their browsers reconnect to another replica).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response, StreamingResponse

from api.app import visible_to
from api.console.pages import services
from api.console.session import ConsoleError, current_session
from projection import store
from projection.store import ChangedRequest

router = APIRouter(prefix="/console", include_in_schema=False)
GATHER_S = 0.1  # a burst of changes (one projector batch after another) becomes one event
KEEP_ALIVE_S = 15.0


@router.get("/live")
async def live(request: Request, request_id: str | None = None) -> Response:
    try:
        session = await current_session(request)
    except ConsoleError as exc:
        return PlainTextResponse(exc.message, status_code=exc.status)
    svc = services(request)
    if request_id is not None:
        try:
            request_id = str(uuid.UUID(request_id))
        except ValueError:
            return PlainTextResponse("not a request id", status_code=404)
        row = await svc.db(store.read_request, request_id)
        if row is None or not visible_to(row, session.caller):
            return PlainTextResponse("no such request is visible to you", status_code=404)
        one = request_id

        def visible(change: ChangedRequest) -> bool:
            return change.request_id == one
    elif session.tenant_scope is not None:
        tenant = session.tenant_scope

        def visible(change: ChangedRequest) -> bool:
            return tenant in (change.tenant_id, change.submitted_tenant_id)
    else:
        def visible(change: ChangedRequest) -> bool:
            return True

    closing = request.app.state.closing
    feed = svc.listener.follow(visible)

    async def events() -> AsyncIterator[str]:
        try:
            yield "retry: 2000\n\n"
            quiet_since = time.monotonic()
            while not closing.is_set():
                if await feed.wait(1.0):
                    await asyncio.sleep(GATHER_S)  # let the rest of a burst arrive
                    changed, everything = feed.take()
                    yield ("event: changed\ndata: "
                           f"{json.dumps({'requests': len(changed), 'all': everything})}\n\n")
                    quiet_since = time.monotonic()
                elif time.monotonic() - quiet_since > KEEP_ALIVE_S:
                    yield ": keep-alive\n\n"
                    quiet_since = time.monotonic()
        finally:
            svc.listener.unfollow(feed)

    return StreamingResponse(events(), media_type="text/event-stream", headers={
        "Cache-Control": "no-store", "X-Accel-Buffering": "no"})
