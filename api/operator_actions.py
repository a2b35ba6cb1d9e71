"""Operators' actions on one request: which apply to its state, and the command that asks the
worker for one. The REST API's operator endpoints and the console both act through here.

An action is a `ProvisioningOperatorCommand` on the commands topic, keyed by the requestId, so
the worker that owns the saga applies it in order with everything else and records it as a
`ProvisioningOperatorAction` event naming the operator (the audit). The checks here read the
projection, which may lag the saga by a moment: the worker checks again and ignores an action
that no longer applies.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter, ValidationError

from consumer.commands import Reason
from projection.fold import RequestRow

# What each action needs the request to be. RETRY (its next run) also needs no leftovers.
PRECONDITIONS: dict[str, tuple[str, ...]] = {
    "CANCEL": ("PENDING", "IN_PROGRESS"),
    "RESUME": ("PENDING", "IN_PROGRESS", "COMPENSATING"),
    "RETRY": ("FAILED",),
}
# Actions on one leftover (a step whose compensation was given up) of a FAILED request.
LEFTOVER_ACTIONS = ("RECOMPENSATE", "RESOLVE")
_REASON = TypeAdapter(Reason)


class NotApplicable(Exception):  # noqa: N818 - reads as "the action is not applicable"
    """The action does not apply to the request as the projection shows it (409)."""

    def __init__(self, detail: str, current_status: str,
                 uncompensated_steps: list[str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.current_status = current_status
        self.uncompensated_steps = uncompensated_steps


class InvalidReason(ValueError):
    """A reason the worker would refuse (empty, too long, or unprintable characters)."""


@dataclass(frozen=True, slots=True)
class ApplicableAction:
    action: str  # CANCEL, RESUME, RETRY, RECOMPENSATE, RESOLVE
    step: str | None = None  # the leftover, for RECOMPENSATE and RESOLVE


def applicable(row: RequestRow) -> list[ApplicableAction]:
    """Every action that applies to the request now, leftovers' actions once per leftover."""
    actions = [ApplicableAction(a) for a, statuses in PRECONDITIONS.items()
               if row.status in statuses and not (a == "RETRY" and row.uncompensated_steps)]
    if row.status == "FAILED":
        actions += [ApplicableAction(a, x.step) for x in row.uncompensated_steps
                    for a in LEFTOVER_ACTIONS]
    return actions


def check(row: RequestRow, action: str, step: str | None = None) -> None:
    """Raise NotApplicable unless `action` (on `step`, for a leftover action) applies."""
    if action in LEFTOVER_ACTIONS:
        if row.status != "FAILED" or step is None or row.leftover(step) is None:
            left = ", ".join(x.step for x in row.uncompensated_steps) or "none"
            raise NotApplicable(f"{action.lower()} needs a FAILED request with {step} "
                                f"uncompensated; {row.request_id} is {row.status}, "
                                f"uncompensated: {left}", row.status)
        return
    allowed = PRECONDITIONS[action]
    if row.status not in allowed:
        raise NotApplicable(f"{action.lower()} needs a request that is "
                            f"{' or '.join(allowed)}; {row.request_id} is {row.status}",
                            row.status)
    if action == "RETRY" and row.uncompensated_steps:
        steps = [x.step for x in row.uncompensated_steps]
        raise NotApplicable(f"{row.request_id} left {', '.join(steps)} uncompensated; an "
                            "operator must re-attempt (recompensate) or resolve them before it "
                            "runs again", row.status, steps)


def checked_reason(reason: str | None, *, required: bool = False) -> str | None:
    """The reason as the worker will take it; blank is none. Raises InvalidReason."""
    reason = (reason or "").strip() or None
    if reason is None:
        if required:
            raise InvalidReason("a reason is required")
        return None
    try:
        return _REASON.validate_python(reason)
    except ValidationError as exc:
        raise InvalidReason(f"the reason is not valid: {exc.errors()[0]['msg']}") from None


def operator_command(row: RequestRow, operator: str, action: str, reason: str | None,
                     step: str | None = None) -> dict[str, Any]:
    """The `ProvisioningOperatorCommand` for `action` after `check` passed."""
    return {"requestId": row.request_id, "operator": operator, "action": action,
            "reason": reason, "step": step if action in LEFTOVER_ACTIONS else None,
            "requestedAt": time.time_ns() // 1_000_000}
