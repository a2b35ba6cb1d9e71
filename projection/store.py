"""Reading and writing the projection tables; every write is one short transaction.

The projector calls `apply_batch` once per poll batch: it locks the batch's rows, folds the
events onto them (`projection.fold`), and writes the changed rows, the audit rows and the
`FINISHED_CHANNEL` notifications in one transaction. Whatever order or number of times a batch
arrives, the rows end the same: `fold.applies` drops events a row already reflects and the audit
insert ignores (request_id, sequence) pairs it has.

The API calls `accept` to make a request visible as PENDING the moment it is accepted, and
`read_request`/`read_events` to answer lookups.

Every write of request rows also NOTIFYs `CHANGED_CHANNEL` with the rows' ids and tenants, in
the same transaction, so whoever follows the projection live (the console) learns of a change
when it is readable, and can tell which viewers may see it without reading the rows.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert

from projection import fold
from projection.fold import Event, Leftover, RequestRow
from projection.models import CHANGED_CHANNEL, FINISHED_CHANNEL, events, requests

_ROW_FIELDS = tuple(f.name for f in dataclasses.fields(RequestRow))
# Columns the projector never overwrites: what only the API knows, and when the row began.
_KEEP_ON_UPDATE = {"request_id", "submitted_tenant_id", "created_at"}


@dataclass(frozen=True, slots=True)
class BatchResult:
    events: int  # events in the batch
    applied: int  # events that changed a request row
    audited: int  # audit rows written (redelivered events are not written twice)
    finished: tuple[str, ...]  # requests that reached a terminal status in this batch


def apply_batch(engine: sa.Engine, batch: Sequence[Event]) -> BatchResult:
    """Fold a batch of events into the tables in one transaction."""
    ids = sorted({e.request_id for e in batch})  # one lock order for every projector
    with engine.begin() as conn:
        rows: dict[str, RequestRow | None] = dict.fromkeys(ids)
        rows.update(_lock_rows(conn, ids))
        changed: dict[str, RequestRow] = {}
        applied = 0
        for event in batch:
            before = rows[event.request_id]
            after = fold.apply(before, event)
            if after is not before and after is not None:
                rows[event.request_id] = changed[event.request_id] = after
                applied += 1
        audited = _insert_audit(conn, batch)
        _upsert_rows(conn, changed.values())
        notify_changed(conn, changed.values())
        finished = tuple(sorted(i for i, row in changed.items() if row.finished))
        if finished:
            conn.execute(
                sa.text("SELECT pg_notify(:channel, id) FROM unnest(CAST(:ids AS text[])) id"),
                {"channel": FINISHED_CHANNEL, "ids": list(finished)},
            )
    return BatchResult(events=len(batch), applied=applied, audited=audited, finished=finished)


@dataclass(frozen=True, slots=True)
class ChangedRequest:
    request_id: str
    tenant_id: str | None
    submitted_tenant_id: str | None


# PostgreSQL refuses a NOTIFY payload of 8000 bytes or more: the changes go in chunks below it.
MAX_PAYLOAD_BYTES = 7000


def changed_payloads(rows: Iterable[RequestRow]) -> list[str]:
    """The `CHANGED_CHANNEL` payloads for `rows`: JSON lists of [id, tenant, submitted tenant]."""
    payloads: list[str] = []
    chunk: list[str] = []
    size = 2
    for row in rows:
        item = json.dumps([row.request_id, row.tenant_id, row.submitted_tenant_id])
        if chunk and size + len(item.encode()) + 1 > MAX_PAYLOAD_BYTES:
            payloads.append(f"[{','.join(chunk)}]")
            chunk, size = [], 2
        chunk.append(item)
        size += len(item.encode()) + 1
    if chunk:
        payloads.append(f"[{','.join(chunk)}]")
    return payloads


def parse_changed(payload: str) -> list[ChangedRequest] | None:
    """The requests a `CHANGED_CHANNEL` payload names; None if it cannot be read (a listener
    then treats anything as changed)."""
    try:
        items = json.loads(payload)
        return [ChangedRequest(str(i), t, s) for i, t, s in items]
    except (ValueError, TypeError):
        return None


def notify_changed(conn: sa.Connection, rows: Iterable[RequestRow]) -> None:
    payloads = changed_payloads(rows)
    if payloads:
        conn.execute(sa.text("SELECT pg_notify(:channel, p) FROM unnest(CAST(:ps AS text[])) p"),
                     {"channel": CHANGED_CHANNEL, "ps": payloads})


def _lock_rows(conn: sa.Connection, ids: list[str]) -> dict[str, RequestRow]:
    if not ids:
        return {}
    query = (sa.select(requests).where(requests.c.request_id.in_(ids))
             .order_by(requests.c.request_id).with_for_update())
    return {str(r.request_id): row_from_db(r._mapping) for r in conn.execute(query)}


def _insert_audit(conn: sa.Connection, batch: Iterable[Event]) -> int:
    values: dict[tuple[str, int], dict[str, Any]] = {}
    for e in batch:
        if e.record_name not in fold.EVENT_TYPES:
            continue
        values.setdefault((e.request_id, e.sequence), {
            "request_id": e.request_id, "sequence": e.sequence,
            "run": int(e.value.get("run") or 0), "event_type": e.record_name,
            "step": e.value.get("step"), "attempt": e.value.get("attempt"),
            "occurred_at": e.occurred_at, "payload": storable(e.value),
            "kafka_partition": e.partition, "kafka_offset": e.offset,
        })
    if not values:
        return 0
    statement = (pg_insert(events).values(list(values.values())).on_conflict_do_nothing()
                 .returning(events.c.sequence))
    return len(conn.execute(statement).all())


def _upsert_rows(conn: sa.Connection, rows: Iterable[RequestRow]) -> None:
    values = [row_to_db(row) for row in rows]
    if not values:
        return
    statement = pg_insert(requests).values(values)
    excluded = statement.excluded
    update = {name: excluded[name] for name in _ROW_FIELDS if name not in _KEEP_ON_UPDATE}
    statement = statement.on_conflict_do_update(
        index_elements=[requests.c.request_id],
        set_=update,
        # The row lock makes this hold already; the guard keeps it true if someone edits the
        # table by hand between our read and write.
        where=requests.c.last_sequence <= excluded.last_sequence,
    )
    conn.execute(statement)


def row_to_db(row: RequestRow) -> dict[str, Any]:
    values = dataclasses.asdict(row)
    values["completed_steps"] = list(row.completed_steps)
    values["compensated_steps"] = list(row.compensated_steps)
    values["uncompensated_steps"] = [
        {"step": x.step, "reason": x.reason, "since": x.since.isoformat()}
        for x in row.uncompensated_steps]
    return storable(values)


def storable(value: Any) -> Any:
    """`value` with every NUL character in its strings replaced by U+FFFD.

    PostgreSQL text and jsonb cannot hold NUL. Commands are checked for it, but a reason or
    output from a participant is not ours to refuse: one such event must not stop the
    projection (it would be retried forever).
    """
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd") if "\x00" in value else value
    if isinstance(value, dict):
        return {storable(k): storable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(storable(v) for v in value)
    return value


def row_from_db(mapping: Any) -> RequestRow:
    values = {name: mapping[name] for name in _ROW_FIELDS}
    values["request_id"] = str(values["request_id"])
    values["completed_steps"] = tuple(values["completed_steps"] or ())
    values["compensated_steps"] = tuple(values["compensated_steps"] or ())
    values["params"] = dict(values["params"] or {})
    values["uncompensated_steps"] = tuple(
        Leftover(x["step"], x["reason"], datetime.fromisoformat(x["since"]))
        for x in values["uncompensated_steps"] or ())
    return RequestRow(**values)


# --- what the API needs -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Acceptance:
    row: RequestRow
    created: bool  # False: the requestId was known already (same payload, or a conflict)

    def conflicts_with(self, payload_hash: str) -> bool:
        return not self.created and self.row.payload_hash != payload_hash


def accept(conn: sa.Connection, row: RequestRow) -> Acceptance:
    """Record a request the API accepted as PENDING, unless its requestId is known."""
    inserted = conn.execute(
        pg_insert(requests).values(row_to_db(row))
        .on_conflict_do_nothing(index_elements=[requests.c.request_id])
        .returning(requests.c.request_id)
    ).first()
    if inserted is not None:
        notify_changed(conn, [row])
        return Acceptance(row, created=True)
    existing = read_request(conn, row.request_id)
    assert existing is not None  # the insert saw it; rows are never deleted by the projector
    return Acceptance(existing, created=False)


def forget_pending(conn: sa.Connection, request_id: str) -> None:
    """Undo `accept` when the command could not be published (only if nothing happened since)."""
    conn.execute(sa.delete(requests).where(requests.c.request_id == request_id,
                                           requests.c.last_sequence == 0,
                                           requests.c.status == "PENDING"))


def mark_retrying(conn: sa.Connection, request_id: str, now: datetime) -> RequestRow | None:
    """A FAILED request becomes PENDING again while its retry is on its way to the worker."""
    result = conn.execute(
        sa.update(requests)
        .where(requests.c.request_id == request_id, requests.c.status == "FAILED")
        .values(status="PENDING", updated_at=now)
        .returning(*requests.c)
    ).first()
    if result is None:
        return None
    row = row_from_db(result._mapping)
    notify_changed(conn, [row])
    return row


def read_request(conn: sa.Connection, request_id: str) -> RequestRow | None:
    result = conn.execute(sa.select(requests).where(requests.c.request_id == request_id)).first()
    return None if result is None else row_from_db(result._mapping)


def read_events(conn: sa.Connection, request_id: str) -> list[dict[str, Any]]:
    query = (sa.select(events.c.sequence, events.c.run, events.c.event_type, events.c.step,
                       events.c.attempt, events.c.occurred_at, events.c.payload)
             .where(events.c.request_id == request_id).order_by(events.c.sequence))
    return [dict(r._mapping) for r in conn.execute(query)]
