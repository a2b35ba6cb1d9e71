"""How each event changes a saga's state, and `replay`, which rebuilds a state from events.

`decide` never changes a state by hand: it emits events and folds them with `evolve`. The
snapshot it persists is therefore exactly `replay(the saga's events)`, and an audit trail read
back from `provisioning.events` (or the projection) reproduces the state the worker had.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import reduce
from typing import Any

from sagas.events import (
    Event,
    ProvisioningCompensationFailed,
    ProvisioningCompensationStarted,
    ProvisioningFailedEvent,
    ProvisioningOperatorAction,
    ProvisioningRejected,
    ProvisioningRequested,
    ProvisioningStepCompensated,
    ProvisioningStepCompleted,
    ProvisioningStepFailed,
    ProvisioningStepStarted,
    ProvisioningSucceeded,
)
from sagas.frozen import EMPTY
from sagas.state import SagaState, Status, with_changes


class ReplayError(ValueError):
    """The events do not form one saga's audit trail (wrong saga, a gap, no start)."""


def replay(events: Iterable[Event]) -> SagaState | None:
    """The state after `events`, in sequence order; None if no run was ever requested.

    Repeated events (a sequence number already applied) are skipped, so an audit trail read
    with at-least-once delivery replays the same.
    """
    return reduce(evolve, events, None)


def evolve(state: SagaState | None, event: Event) -> SagaState | None:
    """The state after one more event."""
    if state is None:
        if isinstance(event, ProvisioningRequested):
            return _requested(event)
        if isinstance(event, ProvisioningRejected):
            return None  # an invalid command that never became a saga
        raise ReplayError(f"{type(event).__name__} before any ProvisioningRequested")
    if event.request_id != state.request_id:
        raise ReplayError(f"event of {event.request_id} in the trail of {state.request_id}")
    if event.sequence <= state.sequence:
        return state  # already applied: a duplicate delivery
    if event.sequence != state.sequence + 1:
        raise ReplayError(
            f"{state.request_id}: events {state.sequence + 1}..{event.sequence - 1} are missing"
        )
    if isinstance(event, ProvisioningRequested):
        return _requested(event)  # a new run starts from the command again
    if isinstance(event, ProvisioningRejected):
        # A conflicting command: it uses a sequence number and changes nothing else.
        return with_changes(state, sequence=event.sequence)
    return _EVOLVE[type(event)](state, event)


def _requested(e: ProvisioningRequested) -> SagaState:
    return SagaState(
        request_id=e.request_id,
        workflow_type=e.workflow_type,
        workflow_version=e.workflow_version,
        tenant_id=e.tenant_id,
        status=Status.PENDING,
        run=e.run,
        sequence=e.sequence,
        payload_hash=e.payload_hash,
        params=e.params,
        outputs=EMPTY,
        requested_by=e.requested_by,
        reply_to=e.reply_to,
        trace_parent=e.trace_parent,
        started_at=e.occurred_at,
        updated_at=e.occurred_at,
    )


def _after(state: SagaState, e: Event, **changes: Any) -> SagaState:
    return with_changes(
        state, sequence=e.sequence, updated_at=e.occurred_at, tenant_id=e.tenant_id, **changes
    )


def _step_started(state: SagaState, e: ProvisioningStepStarted) -> SagaState:
    return _after(
        state, e,
        status=Status.IN_PROGRESS,
        current_step=e.step,
        attempts=state.attempts.set(e.step, e.attempt),
        next_retry_at=None,
        attempt_deadline=e.deadline_at,
        step_deadline=e.step_deadline,
    )


def _step_completed(state: SagaState, e: ProvisioningStepCompleted) -> SagaState:
    return _after(
        state, e,
        current_step=None,
        completed_steps=(*state.completed_steps, e.step),
        outputs=state.outputs.merge(e.output),
        attempt_deadline=None,
        step_deadline=None,
    )


def _step_failed(state: SagaState, e: ProvisioningStepFailed) -> SagaState:
    if e.next_retry_at is not None:
        return _after(state, e, next_retry_at=e.next_retry_at, attempt_deadline=None)
    # Failed for good: the saga turns to undoing what it did.
    return _after(
        state, e,
        status=Status.COMPENSATING,
        current_step=None,
        failed_step=e.step,
        reason=e.reason,
        next_retry_at=None,
        attempt_deadline=None,
        step_deadline=None,
    )


def _compensation_started(state: SagaState, e: ProvisioningCompensationStarted) -> SagaState:
    return _after(
        state, e,
        status=Status.COMPENSATING,
        current_step=e.step,
        compensation_attempts=state.compensation_attempts.set(e.step, e.attempt),
        next_retry_at=None,
        attempt_deadline=e.deadline_at,
    )


def _step_compensated(state: SagaState, e: ProvisioningStepCompensated) -> SagaState:
    return _after(
        state, e,
        current_step=None,
        compensated_steps=(*state.compensated_steps, e.step),
        uncompensated_steps=state.uncompensated_steps.without(e.step),
        attempt_deadline=None,
        **_back_to_failed(state),
    )


def _compensation_failed(state: SagaState, e: ProvisioningCompensationFailed) -> SagaState:
    if e.next_retry_at is not None:
        return _after(state, e, next_retry_at=e.next_retry_at, attempt_deadline=None)
    # Given up: a leftover, with the reason of its last attempt (a failed re-attempt updates it).
    failed_steps = state.compensation_failed_steps
    return _after(
        state, e,
        current_step=None,
        compensation_failed_steps=failed_steps if e.step in failed_steps else (
            *failed_steps, e.step),
        uncompensated_steps=state.uncompensated_steps.set(e.step, e.reason),
        next_retry_at=None,
        attempt_deadline=None,
        **_back_to_failed(state),
    )


def _back_to_failed(state: SagaState) -> dict[str, Any]:
    """A compensation settled after its run had ended was an operator's re-attempt of one
    leftover: the saga is FAILED again, with its run's reason and end, and no second terminal
    event (a run has exactly one)."""
    return {"status": Status.FAILED} if state.run_ended else {}


def _operator_action(state: SagaState, e: ProvisioningOperatorAction) -> SagaState:
    if e.action == "RESOLVE" and e.step is not None:
        # Cleaned by hand: the audit record itself is the change.
        return _after(state, e, uncompensated_steps=state.uncompensated_steps.without(e.step))
    return _after(state, e)  # the other actions' effects follow as their own events


def _succeeded(state: SagaState, e: ProvisioningSucceeded) -> SagaState:
    return _after(
        state, e,
        status=Status.COMPLETED,
        current_step=None,
        resource_id=e.resource_id,
        next_retry_at=None,
        attempt_deadline=None,
        step_deadline=None,
        finished_at=e.occurred_at,
    )


def _failed(state: SagaState, e: ProvisioningFailedEvent) -> SagaState:
    return _after(
        state, e,
        status=Status.FAILED,
        current_step=None,
        failed_step=e.failed_step,
        reason=e.reason,
        next_retry_at=None,
        attempt_deadline=None,
        step_deadline=None,
        finished_at=e.occurred_at,
    )


_EVOLVE: dict[type, Callable[[SagaState, Any], SagaState]] = {
    ProvisioningStepStarted: _step_started,
    ProvisioningStepCompleted: _step_completed,
    ProvisioningStepFailed: _step_failed,
    ProvisioningCompensationStarted: _compensation_started,
    ProvisioningStepCompensated: _step_compensated,
    ProvisioningCompensationFailed: _compensation_failed,
    ProvisioningSucceeded: _succeeded,
    ProvisioningFailedEvent: _failed,
    ProvisioningOperatorAction: _operator_action,
}
