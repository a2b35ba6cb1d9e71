"""The saga's moves: start a run, start a step, retry it, fail it, compensate, finish.

Each move emits events through a `Transition`, which folds every event into the state at once
(so the next move sees its effect) and collects the effects the runtime must perform. The
input handlers in `sagas/decide.py` decide *which* move applies; this module says what each
move does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sagas.effects import (
    CompensateStep,
    Effect,
    EmitEvent,
    ExecuteStep,
    PersistState,
    ProvisioningCompleted,
    ProvisioningFailed,
    ProvisioningResponse,
    ProvisioningStarted,
    Reply,
    SetTimer,
    idempotency_key,
)
from sagas.events import (
    Event,
    ProvisioningCompensationFailed,
    ProvisioningCompensationStarted,
    ProvisioningFailedEvent,
    ProvisioningRequested,
    ProvisioningStepCompensated,
    ProvisioningStepCompleted,
    ProvisioningStepFailed,
    ProvisioningStepStarted,
    ProvisioningSucceeded,
)
from sagas.frozen import FrozenMap
from sagas.inputs import TimerKind
from sagas.outcomes import DEADLINE_EXCEEDED, GAVE_UP, NO_RESULT_ID
from sagas.replay import evolve
from sagas.state import SagaState
from sagas.workflows import Step, Workflow


class Transition:
    """One call of `decide` in the making: the events emitted so far, folded into `state`, and
    the effects asked for."""

    def __init__(self, state: SagaState | None, now: int) -> None:
        self.before = state
        self.state = state
        self.now = now
        self.events: list[Event] = []
        self.effects: list[Effect] = []

    @property
    def saga(self) -> SagaState:
        """The state, for moves that only exist once a run has started."""
        assert self.state is not None, "no saga yet"
        return self.state

    def record(self, event: Event) -> None:
        self.state = evolve(self.state, event)
        self.events.append(event)

    def emit(self, event_type: type, **fields: Any) -> None:
        """Emit an event of the saga, numbered after the last one."""
        saga = self.saga
        fields.setdefault("tenant_id", saga.tenant_id)
        self.record(event_type(
            request_id=saga.request_id, sequence=saga.sequence + 1, run=saga.run,
            workflow_type=saga.workflow_type, occurred_at=self.now, **fields,
        ))

    def ask(self, effect: Effect) -> None:
        self.effects.append(effect)

    def reply(self, reply_to: str | None, response: ProvisioningResponse) -> None:
        if reply_to is not None:
            self.ask(Reply(reply_to=reply_to, response=response))

    def result(self) -> tuple[SagaState | None, tuple[Effect, ...]]:
        """Events first, then the other effects in the order asked, then the new snapshot."""
        if not self.events:
            return self.before, tuple(self.effects)
        effects: list[Effect] = [EmitEvent(event=e) for e in self.events]
        effects += self.effects
        if self.state is not None:
            effects.append(PersistState(state=self.state))
        return self.state, tuple(effects)


# --- running ------------------------------------------------------------------------------------


def start_run(
    t: Transition,
    workflow: Workflow,
    *,
    request_id: str,
    run: int,
    tenant_id: str | None,
    params: Mapping[str, str],
    payload_hash: str,
    requested_by: str,
    reply_to: str | None,
    trace_parent: str | None = None,
    first_sequence: int = 1,
) -> None:
    """`first_sequence` numbers the first event of a saga that has no state (1, or after the
    events of the runs of a saga forgotten after its idempotency window)."""
    t.record(ProvisioningRequested(
        request_id=request_id,
        sequence=t.state.sequence + 1 if t.state is not None else first_sequence,
        run=run,
        workflow_type=workflow.type,
        tenant_id=tenant_id,
        occurred_at=t.now,
        workflow_version=workflow.version,
        requested_by=requested_by,
        payload_hash=payload_hash,
        params=FrozenMap(params),
        reply_to=reply_to,
        trace_parent=trace_parent,
    ))
    t.reply(reply_to, ProvisioningStarted(request_id=request_id, run=run, occurred_at=t.now))
    start_step(t, workflow.first_step, attempt=1)


def start_step(t: Transition, step: Step, attempt: int) -> None:
    # The step's deadline runs from its first attempt; retries share it.
    step_deadline = t.now + step.deadline_ms if attempt == 1 else t.saga.step_deadline
    deadline_at = t.now + step.attempt_timeout_ms
    if step_deadline is not None:
        deadline_at = min(deadline_at, step_deadline)
    t.emit(
        ProvisioningStepStarted, step=step.name, attempt=attempt, participant=step.participant,
        deadline_at=deadline_at, step_deadline=step_deadline,
    )
    t.ask(execute_step(t.saga, step))
    t.ask(set_timer(t.saga, TimerKind.ATTEMPT_TIMEOUT, step.name, attempt, deadline_at))
    if attempt == 1 and step_deadline is not None:
        t.ask(set_timer(t.saga, TimerKind.STEP_DEADLINE, step.name, attempt, step_deadline))


def step_succeeded(
    t: Transition, workflow: Workflow, step: Step, attempt: int, output: Mapping[str, str]
) -> None:
    saga = t.saga
    # A tenant provisioning learns its tenant from the step that creates it.
    tenant_id = saga.tenant_id if saga.tenant_id is not None else output.get("tenantId")
    t.emit(
        ProvisioningStepCompleted, step=step.name, attempt=attempt, output=FrozenMap(output),
        tenant_id=tenant_id,
    )
    id_step, id_key = workflow.resource_id_from
    if step.name == id_step and id_key not in output:
        # The participant broke its contract; what it did is undone with the rest.
        reason = f"{step.name} {NO_RESULT_ID} {id_key} that names the result"
        fail_step_for_good(t, workflow, step.name, attempt, reason, transient=False,
                           may_have_acted=False)  # completed: undone with the others
        return
    following = workflow.step_after(step.name)
    if following is not None:
        start_step(t, following, attempt=1)
    else:
        succeed(t, workflow)


def step_failed(
    t: Transition, workflow: Workflow, step: Step, attempt: int, reason: str, *, transient: bool,
    acted: bool = False, retry_after_ms: int | None = None,
) -> None:
    """An attempt failed: retry it after the backoff (or the participant's longer
    `retry_after_ms`), or fail the step for good (undoing it too unless the participant
    refused its first attempt without acting)."""
    if transient and step.retry.allows_retry_after(attempt):
        wait = step.retry.backoff_ms(attempt)
        asked = None
        if retry_after_ms is not None and retry_after_ms > wait:
            # Cut to the step's whole deadline: a longer wait can only end in failure anyway.
            asked, wait = retry_after_ms, min(retry_after_ms, step.deadline_ms)
        retry_at = t.now + wait
        deadline = t.saga.step_deadline
        if deadline is None or retry_at < deadline:
            t.emit(
                ProvisioningStepFailed, step=step.name, attempt=attempt, transient=True,
                reason=reason, next_retry_at=retry_at,
            )
            t.ask(set_timer(t.saga, TimerKind.RETRY, step.name, attempt, retry_at))
            return
        waited = f" (the participant asked to wait {asked} ms)" if asked is not None else ""
        reason = f"{DEADLINE_EXCEEDED} before the next attempt{waited}; last error: {reason}"
    elif transient:
        reason = f"{reason} {GAVE_UP}{attempt} attempts)"
    # Only a participant's "no" to the first attempt is sure to leave nothing behind.
    fail_step_for_good(t, workflow, step.name, attempt, reason, transient=transient,
                       may_have_acted=transient or attempt > 1 or acted)


def fail_step_for_good(
    t: Transition, workflow: Workflow, step: str, attempt: int, reason: str, *, transient: bool,
    may_have_acted: bool = True,
) -> None:
    """The step is over without success: undo it too if it may have acted, then the steps
    before it.

    A step may have acted when an attempt's answer never came (a timeout, a lost reply, the
    deadline, a cancel while it ran) or an earlier attempt failed that way. Its compensation
    then runs first: compensations are idempotent by key and treat "nothing to undo" as done,
    and a participant refuses a late attempt of a step it has compensated.
    """
    t.emit(
        ProvisioningStepFailed, step=step, attempt=attempt, transient=transient, reason=reason,
        next_retry_at=None,
    )
    failed = workflow.step(step)
    if may_have_acted and failed.compensation is not None:
        start_compensation(t, failed, attempt=1)
    else:
        compensate_next(t, workflow)


def succeed(t: Transition, workflow: Workflow) -> None:
    saga = t.saga
    resource_id = saga.outputs[workflow.resource_id_from[1]]
    t.emit(ProvisioningSucceeded, resource_id=resource_id, outputs=saga.outputs)
    t.reply(saga.reply_to, ProvisioningCompleted(
        request_id=saga.request_id, run=saga.run, resource_id=resource_id, occurred_at=t.now,
    ))


# --- compensating --------------------------------------------------------------------------------


def step_to_compensate(saga: SagaState, workflow: Workflow) -> Step | None:
    """The latest completed step that changed something and has not been undone (or given up)."""
    settled = set(saga.compensated_steps) | set(saga.compensation_failed_steps)
    for name in reversed(saga.completed_steps):
        step = workflow.step(name)
        if step.compensation is not None and name not in settled:
            return step
    return None


def compensate_next(t: Transition, workflow: Workflow) -> None:
    """Undo the next completed step, in reverse order; when none is left, the run failed."""
    step = step_to_compensate(t.saga, workflow)
    if step is not None:
        start_compensation(t, step, attempt=1)
    else:
        fail_run(t)


def start_compensation(t: Transition, step: Step, attempt: int) -> None:
    assert step.compensation is not None
    deadline_at = t.now + step.attempt_timeout_ms
    t.emit(
        ProvisioningCompensationStarted, step=step.name, attempt=attempt,
        participant=step.participant, compensation=step.compensation, deadline_at=deadline_at,
    )
    t.ask(compensate_step(t.saga, step))
    t.ask(set_timer(t.saga, TimerKind.COMPENSATION_TIMEOUT, step.name, attempt, deadline_at))


def compensation_succeeded(t: Transition, workflow: Workflow, step: Step, attempt: int) -> None:
    t.emit(ProvisioningStepCompensated, step=step.name, attempt=attempt)
    _after_compensation(t, workflow)


def compensation_failed(
    t: Transition, workflow: Workflow, step: Step, attempt: int, reason: str
) -> None:
    """Retry the compensation after its backoff; once its retries are spent, record the failure
    and go on with the other steps (the seed: log it, continue compensating)."""
    policy = step.compensation_retry
    if policy.allows_retry_after(attempt):
        retry_at = t.now + policy.backoff_ms(attempt)
        t.emit(
            ProvisioningCompensationFailed, step=step.name, attempt=attempt, reason=reason,
            next_retry_at=retry_at,
        )
        t.ask(set_timer(t.saga, TimerKind.COMPENSATION_RETRY, step.name, attempt, retry_at))
        return
    t.emit(
        ProvisioningCompensationFailed, step=step.name, attempt=attempt,
        reason=f"{reason} {GAVE_UP}{attempt} attempts)", next_retry_at=None,
    )
    _after_compensation(t, workflow)


def _after_compensation(t: Transition, workflow: Workflow) -> None:
    """On to the next step to undo, unless the run had already ended: then this was an
    operator's re-attempt of one leftover, and the fold has made the saga FAILED again."""
    if not t.saga.run_ended:
        compensate_next(t, workflow)


def fail_run(t: Transition) -> None:
    saga = t.saga
    reason = saga.reason or "failed"
    t.emit(ProvisioningFailedEvent, reason=reason, failed_step=saga.failed_step)
    t.reply(saga.reply_to, ProvisioningFailed(
        request_id=saga.request_id, run=saga.run, reason=reason, failed_step=saga.failed_step,
        occurred_at=t.now,
    ))


# --- effects from the state ---------------------------------------------------------------------


def execute_step(saga: SagaState, step: Step) -> ExecuteStep:
    """The call of the current attempt of `step`."""
    return ExecuteStep(
        request_id=saga.request_id, run=saga.run, workflow_type=saga.workflow_type,
        tenant_id=saga.tenant_id, step=step.name, participant=step.participant,
        attempt=saga.attempts[step.name],
        idempotency_key=idempotency_key(saga.request_id, saga.run, step.name),
        params=saga.step_params, deadline_at=saga.attempt_deadline,
        trace_parent=saga.trace_parent,
    )


def compensate_step(saga: SagaState, step: Step) -> CompensateStep:
    """The call of the current attempt to undo `step`."""
    assert step.compensation is not None
    return CompensateStep(
        request_id=saga.request_id, run=saga.run, workflow_type=saga.workflow_type,
        tenant_id=saga.tenant_id, step=step.name, participant=step.participant,
        action=step.compensation, attempt=saga.compensation_attempts[step.name],
        idempotency_key=idempotency_key(saga.request_id, saga.run, step.name),
        params=saga.step_params, deadline_at=saga.attempt_deadline,
        trace_parent=saga.trace_parent,
    )


def set_timer(saga: SagaState, kind: TimerKind, step: str, attempt: int, fire_at: int) -> SetTimer:
    return SetTimer(
        request_id=saga.request_id, run=saga.run, kind=kind, step=step, attempt=attempt,
        fire_at=fire_at,
    )
