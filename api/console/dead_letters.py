"""Dead-lettered commands: the list with their reasons, one of them decoded, and a form to fix
its fields and send it again. Reading and redriving are `provisioning.dlq_admin`'s, as for the
API's `/api/v1/admin/dlq` endpoints and `provisioning dlq`: a fix is validated exactly as the
worker validates every command, and a command still broken is refused with the reason.
Operators only: dead letters are every tenant's.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from api.console.pages import posted_form, require_operator, services
from api.console.rendering import redirect, render
from api.console.session import ConsoleError, Session, current_session
from provisioning import dlq_admin
from provisioning.errors import ProvisioningError
from schemas import codec

router = APIRouter(prefix="/console/dead-letters", include_in_schema=False)
FIELD = "field:"  # form inputs of the command's fields: field:<dotted name>
LIST_LIMIT = 500  # the oldest first, as `provisioning dlq list` and the API list them


def editable_fields(command: Mapping[str, Any], record_name: str | None = None,
                    prefix: str = "") -> list[tuple[str, str]]:
    """(dotted name, value) of the fields an operator may fix: text ones, set or empty; numbers
    and times (requestedAt, knownRun) stay as they are."""
    numeric = _numeric_fields(record_name) if record_name else set()
    fields: list[tuple[str, str]] = []
    for name, value in command.items():
        dotted = f"{prefix}{name}"
        if dotted in numeric:
            continue
        if isinstance(value, Mapping):
            fields += editable_fields(value, None, f"{dotted}.")
        elif value is None or isinstance(value, str):
            fields.append((dotted, value or ""))
    return fields


_NUMERIC = {"int", "long", "float", "double", "boolean"}


def _numeric_fields(record_name: str) -> set[str]:
    """Dotted names of the record's fields whose type (or a union member) is not text."""

    def kinds(kind: Any) -> list[Any]:
        return [m for k in kind for m in kinds(k)] if isinstance(kind, list) else [kind]

    def walk(fields: list[dict[str, Any]], prefix: str) -> set[str]:
        found: set[str] = set()
        for field in fields:
            for kind in kinds(field["type"]):
                name = kind.get("type") if isinstance(kind, dict) else kind
                if name in _NUMERIC:
                    found.add(prefix + field["name"])
                elif name == "record":
                    found |= walk(kind["fields"], f"{prefix}{field['name']}.")
        return found

    return walk(codec.schema(record_name).plain["fields"], "")


def changes_from(form: Mapping[str, str], command: Mapping[str, Any],
                 record_name: str | None = None) -> dict[str, str]:
    """The fields the operator changed (an emptied field stays as it was: nothing to send)."""
    known = dict(editable_fields(command, record_name))
    return {name: value for key, value in form.items()
            if key.startswith(FIELD) and (name := key.removeprefix(FIELD)) in known
            and value.strip() and value != known[name]}


async def _find(request: Request, partition: int, offset: int) -> dlq_admin.DeadLetter:
    try:
        return await run_in_threadpool(dlq_admin.find, services(request).settings,
                                       f"{partition}:{offset}")
    except dlq_admin.DeadLetterNotFound as exc:
        raise ConsoleError(404, str(exc)) from None
    except ProvisioningError as exc:
        raise ConsoleError(503, f"The dead letters cannot be read: {exc}") from None


def _letter_page(request: Request, session: Session, letter: dlq_admin.DeadLetter, *,
                 error: str | None = None, values: Mapping[str, str] | None = None,
                 status_code: int = 200) -> Response:
    fields = (editable_fields(letter.command, letter.record_name)
              if letter.command is not None else [])
    if values:
        fields = [(name, values.get(FIELD + name, value)) for name, value in fields]
    return render(request, "dead_letter.html", {
        "letter": letter, "fields": fields, "error": error, "nav": "dead-letters",
        "decoded": (json.dumps(letter.command, indent=2, default=str)
                    if letter.command is not None else None),
        "bytes_hex": letter.value[:96].hex(" "),
    }, session=session, status_code=status_code)


@router.get("")
async def list_page(request: Request, redriven: str | None = None,
                    request_id: str | None = None) -> Response:
    session = await current_session(request)
    require_operator(session)
    try:
        letters = await run_in_threadpool(dlq_admin.read_dead_letters,
                                          services(request).settings, limit=LIST_LIMIT)
    except ProvisioningError as exc:
        raise ConsoleError(503, f"The dead letters cannot be read: {exc}") from None
    flash = (f"Dead letter {redriven} was fixed and sent again as request {request_id}."
             if redriven and request_id else None)
    return render(request, "dead_letters.html", {
        "letters": letters, "limit": LIST_LIMIT, "flash": flash, "redriven_id": request_id,
        "nav": "dead-letters"}, session=session)


@router.get("/{partition}/{offset}")
async def letter_page(request: Request, partition: int, offset: int) -> Response:
    session = await current_session(request)
    require_operator(session)
    return _letter_page(request, session, await _find(request, partition, offset))


@router.post("/{partition}/{offset}/redrive")
async def redrive(request: Request, partition: int, offset: int) -> Response:
    session, form = await posted_form(request)
    require_operator(session)
    letter = await _find(request, partition, offset)
    changes = (changes_from(form, letter.command, letter.record_name)
               if letter.command is not None else {})
    try:
        request_id = await run_in_threadpool(
            dlq_admin.redrive, services(request).settings, letter, changes=changes,
            operator=session.caller.subject)
    except ProvisioningError as exc:
        return _letter_page(request, session, letter, error=f"Not sent again: {exc}",
                            values=form, status_code=422)
    return redirect(f"/console/dead-letters?redriven={letter.ref}&request_id={request_id}")
