"""The saga's events: the audit trail, published on `provisioning.events`, and the only way the
state changes (`sagas/replay.py` folds them into the state).

Names are the seed's (plus the compensation events of DESIGN.md section 5); fields are the
snake_case of the Avro records in `schemas/`. Every event carries the saga's request id, its
sequence number (per saga, strictly increasing across runs, from 1), the run, the workflow
type, the tenant as known after the event, and when it happened.

Exactly one terminal event, `ProvisioningSucceeded` or `ProvisioningFailedEvent`, ends a run.
"""

from __future__ import annotations

from dataclasses import dataclass

from sagas.frozen import EMPTY, FrozenMap, freeze_fields
from sagas.slot_init import with_slot_init


@with_slot_init
@dataclass(frozen=True, slots=True, kw_only=True)
class SagaEvent:
    request_id: str
    sequence: int
    run: int
    workflow_type: str
    tenant_id: str | None = None
    occurred_at: int


@with_slot_init
@dataclass(frozen=True, slots=True, kw_only=True)
class ProvisioningRequested(SagaEvent):
    """A run started. Carries the command, so that replay can rebuild the state from events."""

    workflow_version: int
    requested_by: str
    payload_hash: str
    params: FrozenMap[str, str] = EMPTY
    reply_to: str | None = None
    trace_parent: str | None = None

    def __post_init__(self) -> None:
        freeze_fields(self, "params")


@with_slot_init
@dataclass(frozen=True, slots=True, kw_only=True)
class ProvisioningStepStarted(SagaEvent):
    step: str
    attempt: int
    participant: str
    deadline_at: int | None = None  # when this attempt is no longer waited for
    step_deadline: int | None = None  # when the step fails for good


@with_slot_init
@dataclass(frozen=True, slots=True, kw_only=True)
class ProvisioningStepCompleted(SagaEvent):
    step: str
    attempt: int
    output: FrozenMap[str, str] = EMPTY

    def __post_init__(self) -> None:
        freeze_fields(self, "output")


@with_slot_init
@dataclass(frozen=True, slots=True, kw_only=True)
class ProvisioningStepFailed(SagaEvent):
    """An attempt failed. With `next_retry_at` the step is tried again then; without, the step
    failed for good and the saga compensates."""

    step: str
    attempt: int
    transient: bool
    reason: str
    next_retry_at: int | None = None


@with_slot_init
@dataclass(frozen=True, slots=True, kw_only=True)
class ProvisioningSucceeded(SagaEvent):
    resource_id: str
    # What the run's steps produced (the saga's `outputs`), so a subscriber learns what was
    # provisioned without calling back: e.g. adminUserId, billingAccountId, an endpoint.
    outputs: FrozenMap[str, str] = EMPTY

    def __post_init__(self) -> None:
        freeze_fields(self, "outputs")


@with_slot_init
@dataclass(frozen=True, slots=True, kw_only=True)
class ProvisioningFailedEvent(SagaEvent):
    reason: str
    failed_step: str | None = None


@with_slot_init
@dataclass(frozen=True, slots=True, kw_only=True)
class ProvisioningCompensationStarted(SagaEvent):
    """An attempt to undo a completed step was issued (the compensation's StepStarted)."""

    step: str
    attempt: int
    participant: str
    compensation: str  # what undoes the step, e.g. delete-tenant
    deadline_at: int | None = None


@with_slot_init
@dataclass(frozen=True, slots=True, kw_only=True)
class ProvisioningStepCompensated(SagaEvent):
    step: str
    attempt: int


@with_slot_init
@dataclass(frozen=True, slots=True, kw_only=True)
class ProvisioningCompensationFailed(SagaEvent):
    """A compensation attempt failed. With `next_retry_at` it is tried again then; without, the
    saga gave up on undoing the step: it is skipped and needs an operator."""

    step: str
    attempt: int
    reason: str
    next_retry_at: int | None = None


@with_slot_init
@dataclass(frozen=True, slots=True, kw_only=True)
class ProvisioningRejected(SagaEvent):
    """A command was refused without running anything (code "conflict" or "invalid")."""

    reason: str
    code: str


@with_slot_init
@dataclass(frozen=True, slots=True, kw_only=True)
class ProvisioningOperatorAction(SagaEvent):
    """An operator acted on the saga (CANCEL, RETRY, RESUME, RECOMPENSATE, RESOLVE): the audit
    record of who and why. The action's effects follow as the usual events; RESOLVE has none
    but this record, which takes `step` off the saga's leftovers."""

    operator: str
    action: str
    reason: str | None = None
    step: str | None = None  # the leftover acted on (RECOMPENSATE, RESOLVE)


Event = (
    ProvisioningRequested
    | ProvisioningStepStarted
    | ProvisioningStepCompleted
    | ProvisioningStepFailed
    | ProvisioningSucceeded
    | ProvisioningFailedEvent
    | ProvisioningCompensationStarted
    | ProvisioningStepCompensated
    | ProvisioningCompensationFailed
    | ProvisioningRejected
    | ProvisioningOperatorAction
)

TERMINAL_EVENTS = (ProvisioningSucceeded, ProvisioningFailedEvent)
