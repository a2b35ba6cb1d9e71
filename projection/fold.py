"""One event onto one request row: the projection's only rules, pure and replayable.

`apply(row, event)` returns the row after the event, or the same row when the event is one the
row already reflects (its sequence is not newer). That check is what makes the projector
idempotent: a redelivered batch, a restarted projector or two projectors during a rebalance
all end on the same rows.

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

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL


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
                       finished_at=None)
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
    return {"compensated_steps": done}


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
    "ProvisioningCompensationFailed": _step_failed,
    "ProvisioningSucceeded": _succeeded,
    "ProvisioningFailedEvent": _failed,
    "ProvisioningRejected": _rejected,
    "ProvisioningOperatorAction": _no_change,  # audit only: its effects are their own events
}
EVENT_TYPES = frozenset(_CHANGES)
