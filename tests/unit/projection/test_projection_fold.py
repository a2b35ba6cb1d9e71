"""The projection's fold: the rules per event, and at-least-once delivery changing nothing."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from projection.fold import Event, RequestRow, apply

RID = "3f6c2a9e-8d41-4b7a-9c55-1e2f3a4b5c6d"
T0 = 1_764_331_200_000


def _event(name: str, sequence: int, run: int = 1, **fields: object) -> Event:
    value = {"requestId": RID, "sequence": sequence, "run": run, "workflowType": "resource",
             "tenantId": "tenant-1", "occurredAt": T0 + sequence, **fields}
    return Event(name, value, 0, sequence)


def _requested(sequence: int, run: int = 1) -> Event:
    return _event("ProvisioningRequested", sequence, run, workflowVersion=1, requestedBy="ada",
                  payloadHash="h", params={"serviceName": "CoreService"}, replyTo=None)


def succeeded_run() -> list[Event]:
    return [
        _requested(1),
        _event("ProvisioningStepStarted", 2, step="validate-subscription", attempt=1),
        _event("ProvisioningStepCompleted", 3, step="validate-subscription", attempt=1),
        _event("ProvisioningStepStarted", 4, step="allocate", attempt=1),
        _event("ProvisioningStepFailed", 5, step="allocate", attempt=1, transient=True,
               reason="timeout"),
        _event("ProvisioningStepStarted", 6, step="allocate", attempt=2),
        _event("ProvisioningStepCompleted", 7, step="allocate", attempt=2),
        _event("ProvisioningSucceeded", 8, resourceId="db-1"),
    ]


def failed_then_retried() -> list[Event]:
    return [
        _requested(1),
        _event("ProvisioningStepStarted", 2, step="validate-subscription", attempt=1),
        _event("ProvisioningStepCompleted", 3, step="validate-subscription", attempt=1),
        _event("ProvisioningStepStarted", 4, step="allocate", attempt=1),
        _event("ProvisioningStepCompleted", 5, step="allocate", attempt=1),
        _event("ProvisioningStepStarted", 6, step="update-billing", attempt=1),
        _event("ProvisioningStepFailed", 7, step="update-billing", attempt=1, transient=False,
               reason="billing closed"),
        _event("ProvisioningCompensationStarted", 8, step="allocate", attempt=1),
        _event("ProvisioningStepCompensated", 9, step="allocate", attempt=1),
        _event("ProvisioningFailedEvent", 10, reason="billing closed",
               failedStep="update-billing"),
        _requested(11, run=2),
        _event("ProvisioningStepStarted", 12, 2, step="validate-subscription", attempt=1),
    ]


def fold(events: list[Event], row: RequestRow | None = None) -> RequestRow | None:
    for event in events:
        row = apply(row, event)
    return row


def test_a_successful_run_ends_completed_with_its_steps_and_resource() -> None:
    row = fold(succeeded_run())
    assert row is not None
    assert (row.status, row.resource_id, row.last_sequence) == ("COMPLETED", "db-1", 8)
    assert row.completed_steps == ("validate-subscription", "allocate")
    assert row.attempts == 3
    assert row.finished_at is not None and row.current_step is None


def test_a_failure_then_a_retry_starts_the_next_run_from_a_clean_slate() -> None:
    events = failed_then_retried()
    failed = fold(events[:10])
    assert failed is not None
    assert (failed.status, failed.failed_step, failed.reason) == (
        "FAILED", "update-billing", "billing closed")
    assert failed.compensated_steps == ("allocate",)

    retried = fold(events)
    assert retried is not None
    assert (retried.status, retried.run, retried.failed_step, retried.finished_at) == (
        "IN_PROGRESS", 2, None, None)
    assert retried.completed_steps == () and retried.compensated_steps == ()


def test_a_row_the_api_accepted_is_taken_over_by_the_first_event() -> None:
    accepted = RequestRow(request_id=RID, workflow_type="resource", tenant_id="tenant-1",
                          submitted_tenant_id="tenant-1", requested_by="ada",
                          created_at=_requested(1).occurred_at,
                          updated_at=_requested(1).occurred_at)
    row = fold(succeeded_run(), accepted)
    assert row is not None and row.status == "COMPLETED"
    assert row.submitted_tenant_id == "tenant-1"


def test_a_rejection_without_a_saga_ends_an_accepted_row_but_not_a_running_one() -> None:
    rejected = _event("ProvisioningRejected", 0, 0, reason="invalid command", code="invalid")
    assert fold([rejected]).status == "REJECTED"  # type: ignore[union-attr]
    running = fold(succeeded_run()[:3])
    assert apply(running, rejected) is running


def test_a_conflicting_command_refused_by_a_saga_is_audit_only() -> None:
    conflict = _event("ProvisioningRejected", 9, reason="conflict", code="conflict")
    done = fold(succeeded_run())
    after = apply(done, conflict)
    assert after is not None and after.status == "COMPLETED" and after.last_sequence == 9


@st.composite
def redelivered(draw: st.DrawFn) -> tuple[list[Event], list[Event]]:
    """A stream and the same stream as at-least-once delivery may bring it: any prefix
    delivered again any number of times (a crash before the offset commit)."""
    events = draw(st.sampled_from([succeeded_run(), failed_then_retried()]))
    delivered: list[Event] = []
    position = 0
    while position < len(events):
        step = draw(st.integers(1, len(events) - position))
        delivered.extend(events[position:position + step])
        position += step
        if draw(st.booleans()):
            rewind = draw(st.integers(0, position))
            delivered.extend(events[rewind:position])
    return events, delivered


@given(redelivered())
def test_redelivery_never_changes_the_row(streams: tuple[list[Event], list[Event]]) -> None:
    clean, delivered = streams
    assert fold(delivered) == fold(clean)
