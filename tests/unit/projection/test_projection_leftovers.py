"""Leftovers on the request row: given up, re-attempted, resolved by hand."""

from __future__ import annotations

from datetime import UTC, datetime

from projection.fold import Event, Leftover, RequestRow, apply
from projection.store import row_from_db, row_to_db

RID = "3f6c2a9e-8d41-4b7a-9c55-1e2f3a4b5c6d"
T0 = 1_764_331_200_000


def _event(name: str, sequence: int, **fields: object) -> Event:
    value = {"requestId": RID, "sequence": sequence, "run": 1, "workflowType": "resource",
             "tenantId": "tenant-1", "occurredAt": T0 + 1000 * sequence, **fields}
    return Event(name, value, 0, sequence)


def _at(sequence: int) -> datetime:
    return datetime.fromtimestamp((T0 + 1000 * sequence) / 1000, tz=UTC)


def failed_with_two_leftovers() -> list[Event]:
    """configure-monitoring refused; the undo of update-billing and of allocate-resource gave
    up, check-quota needs none."""
    return [
        _event("ProvisioningRequested", 1, workflowVersion=1, requestedBy="ada",
               payloadHash="h", params={}, replyTo=None),
        _event("ProvisioningStepStarted", 2, step="allocate-resource", attempt=1),
        _event("ProvisioningStepCompleted", 3, step="allocate-resource", attempt=1),
        _event("ProvisioningStepStarted", 4, step="update-billing", attempt=1),
        _event("ProvisioningStepCompleted", 5, step="update-billing", attempt=1),
        _event("ProvisioningStepStarted", 6, step="configure-monitoring", attempt=1),
        _event("ProvisioningStepFailed", 7, step="configure-monitoring", attempt=1,
               transient=False, reason="monitoring refused"),
        _event("ProvisioningCompensationStarted", 8, step="update-billing", attempt=1),
        _event("ProvisioningCompensationFailed", 9, step="update-billing", attempt=1,
               reason="billing 503", nextRetryAt=T0 + 10_000),
        _event("ProvisioningCompensationStarted", 10, step="update-billing", attempt=2),
        _event("ProvisioningCompensationFailed", 11, step="update-billing", attempt=2,
               reason="billing 503 (gave up after 2 attempts)", nextRetryAt=None),
        _event("ProvisioningCompensationStarted", 12, step="allocate-resource", attempt=1),
        _event("ProvisioningCompensationFailed", 13, step="allocate-resource", attempt=1,
               reason="schema in use (gave up after 1 attempts)", nextRetryAt=None),
        _event("ProvisioningFailedEvent", 14, reason="monitoring refused",
               failedStep="configure-monitoring"),
    ]


def fold(events: list[Event], row: RequestRow | None = None) -> RequestRow:
    for event in events:
        row = apply(row, event)
    assert row is not None
    return row


BOTH = (Leftover("update-billing", "billing 503 (gave up after 2 attempts)", _at(11)),
        Leftover("allocate-resource", "schema in use (gave up after 1 attempts)", _at(13)))


def test_compensations_given_up_are_the_rows_leftovers_in_order() -> None:
    row = fold(failed_with_two_leftovers())

    assert row.status == "FAILED"
    assert row.uncompensated_steps == BOTH
    assert (row.failed_step, row.reason) == ("configure-monitoring", "monitoring refused")
    # A retried attempt is no leftover while its compensation still runs.
    assert fold(failed_with_two_leftovers()[:9]).uncompensated_steps == ()


def test_a_successful_re_attempt_clears_its_leftover_and_the_row_is_failed_again() -> None:
    failed = fold(failed_with_two_leftovers())
    audit = _event("ProvisioningOperatorAction", 15, operator="ops", action="RECOMPENSATE",
                   reason=None, step="update-billing")
    started = _event("ProvisioningCompensationStarted", 16, step="update-billing", attempt=3)

    running = fold([audit, started], failed)
    assert (running.status, running.current_step) == ("COMPENSATING", "update-billing")
    assert running.uncompensated_steps == BOTH  # not undone yet

    done = fold([_event("ProvisioningStepCompensated", 17, step="update-billing", attempt=3)],
                running)
    assert (done.status, done.current_step) == ("FAILED", None)
    assert done.uncompensated_steps == BOTH[1:]
    assert done.compensated_steps == ("update-billing",)
    assert (done.reason, done.finished_at) == ("monitoring refused", failed.finished_at)


def test_a_failed_re_attempt_keeps_the_leftover_since_its_first_give_up_with_the_new_reason(
) -> None:
    failed = fold(failed_with_two_leftovers())
    again = fold([
        _event("ProvisioningOperatorAction", 15, operator="ops", action="RECOMPENSATE",
               reason=None, step="allocate-resource"),
        _event("ProvisioningCompensationStarted", 16, step="allocate-resource", attempt=2),
        _event("ProvisioningCompensationFailed", 17, step="allocate-resource", attempt=2,
               reason="schema still in use (gave up after 2 attempts)", nextRetryAt=None),
    ], failed)

    assert (again.status, again.current_step) == ("FAILED", None)
    assert again.uncompensated_steps == (
        BOTH[0],
        Leftover("allocate-resource", "schema still in use (gave up after 2 attempts)", _at(13)))
    assert again.reason == "monitoring refused"  # the run's reason, not the undo's


def test_resolving_by_hand_removes_only_that_leftover() -> None:
    failed = fold(failed_with_two_leftovers())
    resolved = fold([_event("ProvisioningOperatorAction", 15, operator="ops", action="RESOLVE",
                            reason="schema dropped by hand", step="allocate-resource")], failed)

    assert resolved.uncompensated_steps == BOTH[:1]
    assert resolved.status == "FAILED" and resolved.last_sequence == 15
    # Other operator actions are audit only.
    cancel = fold([_event("ProvisioningOperatorAction", 16, operator="ops", action="CANCEL",
                          reason="x", step=None)], resolved)
    assert cancel.uncompensated_steps == BOTH[:1]


def test_leftovers_survive_the_trip_through_the_database_columns() -> None:
    row = fold(failed_with_two_leftovers())
    stored = row_to_db(row)

    assert stored["uncompensated_steps"] == [
        {"step": "update-billing", "reason": "billing 503 (gave up after 2 attempts)",
         "since": "2025-11-28T12:00:11+00:00"},
        {"step": "allocate-resource", "reason": "schema in use (gave up after 1 attempts)",
         "since": "2025-11-28T12:00:13+00:00"},
    ]
    assert row_from_db({**stored, "request_id": RID}) == row
