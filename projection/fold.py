"""One event onto one request row: the projection's only rules, pure and replayable.

`apply(row, event)` returns the row after the event, or the same row when the event is one the
row already reflects (its sequence is not newer). That check is what makes the projector
idempotent: a redelivered batch, a restarted projector or two projectors during a rebalance
all end on the same rows.

A run's leftovers (steps whose compensation was given up) stay on its row until an operator's
re-attempt compensates them or an operator resolves them by hand; a re-attempt after the run
ended turns the row COMPENSATING, then FAILED again, as the saga does (`sagas/replay.py`).

Sequence 0 belongs to two things that are not saga events: the row the API writes when it
accepts a request (PENDING, before the worker has seen it), and a `ProvisioningRejected` for a
command that never became a saga. A rejection applies only to a row no saga event has touched.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

TERMINAL = frozenset({"COMPLETED", "FAILED", "REJECTED"})


@dataclass(frozen=True, slots=True)
class Event:
    """A decoded event as the projector sees it."""

    record_name: str
    value: dict[str, Any]
    partition: int = 0
    offset: int = 0

    @property
    def request_id(self) -> str:
        return str(self.value["requestId"])

    @property
    def sequence(self) -> int:
        return int(self.value.get("sequence", 0))

    @property
    def occurred_at(self) -> datetime:
        return from_millis(self.value["occurredAt"])


@dataclass(frozen=True, slots=True)
class Leftover:
    """A step whose compensation was given up: what it did may still exist."""

    step: str
    reason: str  # of the last failed attempt
    since: datetime  # when it was first given up


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestRow:
    request_id: str
    workflow_type: str
    tenant_id: str | None = None
    submitted_tenant_id: str | None = None
    requested_by: str = ""
    status: str = "PENDING"
    run: int = 1
    last_sequence: int = 0
    payload_hash: str = ""
    params: dict[str, str] = field(default_factory=dict)
    reply_to: str | None = None
    current_step: str | None = None
    completed_steps: tuple[str, ...] = ()
    compensated_steps: tuple[str, ...] = ()
    failed_step: str | None = None
    reason: str | None = None
    resource_id: str | None = None
    attempts: int = 0
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None = None
    uncompensated_steps: tuple[Leftover, ...] = ()  # in the order they were given up

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL

    @property
    def run_ended(self) -> bool:
        """The run had its terminal event (an operator's re-attempt may follow it)."""
        return self.finished_at is not None

    def leftover(self, step: str) -> Leftover | None:
        return next((x for x in self.uncompensated_steps if x.step == step), None)

    def without_leftover(self, step: str) -> tuple[Leftover, ...]:
        return tuple(x for x in self.uncompensated_steps if x.step != step)


def from_millis(millis: int) -> datetime:
    return datetime.fromtimestamp(millis / 1000, tz=UTC)


def applies(row: RequestRow | None, event: Event) -> bool:
    """Is the event newer than what the row reflects?"""
    if row is None:
        return True
    if event.sequence == 0:
        return row.last_sequence == 0 and not row.finished
    return event.sequence > row.last_sequence


def apply(row: RequestRow | None, event: Event) -> RequestRow | None:
    """The row after the event; `row` itself when the event is old news or says nothing."""
    if not applies(row, event):
        return row
    if row is None:
        row = _first_row(event)
        if row is None:
            return None
    changes = _CHANGES.get(event.record_name, _no_change)(row, event)
    if event.sequence > 0:
        changes["last_sequence"] = event.sequence
    if event.value.get("tenantId") and event.record_name != "ProvisioningRejected":
        changes.setdefault("tenant_id", event.value["tenantId"])
    return dataclasses.replace(row, updated_at=event.occurred_at, **changes)


def _first_row(event: Event) -> RequestRow | None:
    """A row for a request the projection has not seen (the command did not come via the API)."""
    value = event.value
    if "workflowType" not in value:
        return None
    return RequestRow(
        request_id=event.request_id,
        workflow_type=value["workflowType"],
        tenant_id=value.get("tenantId"),
        requested_by=value.get("requestedBy", ""),
        run=value.get("run") or 1,
        created_at=event.occurred_at,
        updated_at=event.occurred_at,
    )


def _requested(row: RequestRow, e: Event) -> dict[str, Any]:
    v = e.value
    changes: dict[str, Any] = {
        "status": "PENDING", "run": v["run"], "workflow_type": v["workflowType"],
        "requested_by": v["requestedBy"], "payload_hash": v["payloadHash"],
        "params": dict(v.get("params") or {}), "reply_to": v.get("replyTo"),
        "tenant_id": v.get("tenantId") or row.tenant_id,
    }
    if v["run"] != row.run or row.finished:
        # A new run (a retry of a failed request) starts from a clean slate.
        changes.update(current_step=None, completed_steps=(), compensated_steps=(),
                       failed_step=None, reason=None, resource_id=None, attempts=0,
                       finished_at=None, uncompensated_steps=())
    return changes


def _step_started(row: RequestRow, e: Event) -> dict[str, Any]:
    return {"status": "IN_PROGRESS", "current_step": e.value["step"],
            "attempts": row.attempts + 1}


def _step_completed(row: RequestRow, e: Event) -> dict[str, Any]:
    step = e.value["step"]
    completed = row.completed_steps if step in row.completed_steps else (
        *row.completed_steps, step)
    return {"completed_steps": completed}


def _step_failed(row: RequestRow, e: Event) -> dict[str, Any]:
    return {"reason": e.value.get("reason")}


def _compensation_started(row: RequestRow, e: Event) -> dict[str, Any]:
    return {"status": "COMPENSATING", "current_step": e.value["step"]}


def _step_compensated(row: RequestRow, e: Event) -> dict[str, Any]:
    step = e.value["step"]
    done = row.compensated_steps if step in row.compensated_steps else (
        *row.compensated_steps, step)
    return {"compensated_steps": done, "uncompensated_steps": row.without_leftover(step),
            **_back_to_failed(row)}


def _compensation_failed(row: RequestRow, e: Event) -> dict[str, Any]:
    reason = e.value.get("reason")
    # While the run compensates, the row shows the latest trouble; after its end (an
    # operator's re-attempt) the run's own reason stays.
    changes: dict[str, Any] = {} if row.run_ended else {"reason": reason}
    if e.value.get("nextRetryAt") is not None:
        return changes
    step = e.value["step"]
    known = row.leftover(step)
    leftover = Leftover(step, reason or "failed", known.since if known else e.occurred_at)
    leftovers = tuple(leftover if x.step == step else x for x in row.uncompensated_steps)
    if known is None:
        leftovers = (*leftovers, leftover)
    return {**changes, "uncompensated_steps": leftovers, **_back_to_failed(row)}


def _back_to_failed(row: RequestRow) -> dict[str, Any]:
    """A compensation settled after the run ended was an operator's re-attempt: FAILED again
    (the run's reason and end unchanged; no second terminal event comes)."""
    return {"status": "FAILED", "current_step": None} if row.run_ended else {}


def _operator_action(row: RequestRow, e: Event) -> dict[str, Any]:
    # Audit only, but for RESOLVE: an operator cleaned that leftover by hand.
    step = e.value.get("step")
    if e.value.get("action") == "RESOLVE" and step:
        return {"uncompensated_steps": row.without_leftover(step)}
    return {}


def _succeeded(row: RequestRow, e: Event) -> dict[str, Any]:
    return {"status": "COMPLETED", "current_step": None, "resource_id": e.value["resourceId"],
            "reason": None, "finished_at": e.occurred_at}


def _failed(row: RequestRow, e: Event) -> dict[str, Any]:
    return {"status": "FAILED", "current_step": None, "failed_step": e.value.get("failedStep"),
            "reason": e.value.get("reason"), "finished_at": e.occurred_at}


def _rejected(row: RequestRow, e: Event) -> dict[str, Any]:
    if e.sequence > 0:
        # A command refused by a running saga (e.g. a conflicting payload): audit only.
        return {}
    return {"status": "REJECTED", "current_step": None, "reason": e.value.get("reason"),
            "finished_at": e.occurred_at}


def _no_change(row: RequestRow, e: Event) -> dict[str, Any]:
    return {}


_CHANGES = {
    "ProvisioningRequested": _requested,
    "ProvisioningStepStarted": _step_started,
    "ProvisioningStepCompleted": _step_completed,
    "ProvisioningStepFailed": _step_failed,
    "ProvisioningCompensationStarted": _compensation_started,
    "ProvisioningStepCompensated": _step_compensated,
    "ProvisioningCompensationFailed": _compensation_failed,
    "ProvisioningSucceeded": _succeeded,
    "ProvisioningFailedEvent": _failed,
    "ProvisioningRejected": _rejected,
    "ProvisioningOperatorAction": _operator_action,
}
EVENT_TYPES = frozenset(_CHANGES)
