"""`decide(state, input, now) -> (state, effects)`: the one transition function of every saga.

The life of a saga (one per requestId):

1. A `StartCommand` with a new requestId starts run 1 on the latest version of its workflow
   (`sagas/workflows.py`): `ProvisioningRequested`, a `ProvisioningStarted` reply, and the
   first step. The run keeps that workflow version to its end, whatever is deployed meanwhile.
2. Each step attempt is a `ProvisioningStepStarted` event, an `ExecuteStep` effect (idempotency
   key `<requestId>:<run>:<step>`, the same for every attempt) and two timers: the attempt's
   timeout and, on the first attempt, the step's deadline.
3. A success (`StepResult` SUCCEEDED) completes the step and starts the next one; after the
   last, `ProvisioningSucceeded` carries the resource id and the outputs of the run's steps,
   and the saga is COMPLETED.
4. A transient failure, or an attempt that times out, is retried after the step's backoff (or
   the wait the participant asked for, `StepResult.retry_after_ms`, when longer): a
   `ProvisioningStepFailed` naming the next attempt's time, and a RETRY timer. Retries are
   timers in the state, never sleeps. A retry that would start after the step's deadline is
   not made: the step fails for good.
5. A permanent failure, spent retries, the step's deadline or an operator's cancel fail the
   step for good (`ProvisioningStepFailed` without a next attempt): the saga turns COMPENSATING
   and undoes its completed steps in reverse order, one at a time. Each compensation attempt
   is a `ProvisioningCompensationStarted` event, a `CompensateStep` effect and a timeout timer;
   a failed attempt is a `ProvisioningCompensationFailed` naming the next attempt's time, and
   once the compensation's retries are spent, one without: it is recorded and skipped. Then
   `ProvisioningFailedEvent` ends the run FAILED with the reason and the failed step.
   The steps whose undo was given up are the run's leftovers (`uncompensated_steps`, with the
   reason of the last attempt), which an operator must clean: `OperatorRecompensate` tries a
   leftover's compensation again (one fresh attempt under the same idempotency key; the saga
   is COMPENSATING for it, then FAILED again without a second terminal event), and
   `OperatorResolve` records that it was cleaned by hand. Both apply to a FAILED saga and a
   step that is a leftover; anything else is ignored.
   The failed step itself is compensated first when its participant may have acted: an
   attempt whose answer never came (a timeout, a lost reply, the deadline, a cancel while it
   ran), an earlier attempt that failed so, or a success that could not be recorded
   (`StepResult.acted`). Only a participant's refusal of the first attempt is sure to have
   left nothing. Every call also carries `deadline_at`, after which the participant should
   give up.
6. The same command again (same payload hash) runs nothing while the saga runs (reply
   Started) or after it completed (reply Completed, same resource id); after it FAILED it
   starts the next run, unless leftovers remain: then it is rejected (code "uncompensated")
   until an operator clears them, as an operator's RETRY is ignored. Another payload under the
   same requestId is rejected as a conflict.

Every change of state is an event (folded by `sagas/replay.py`), numbered by a per-saga
sequence; a transition that changed the state ends with `PersistState`.

Results and timers are at-least-once and may be late: one that does not name the current run,
step and attempt of a saga waiting for exactly that is stale, and `decide` returns the state
unchanged (the same object) with no effects. Timers are therefore never cancelled. An input
of another requestId than the state's is ignored the same way.

Pure: no I/O and no clock; `now` is the caller's time in epoch milliseconds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sagas.effects import (
    Effect,
    ProvisioningCompleted,
    ProvisioningFailed,
    ProvisioningResponse,
    ProvisioningStarted,
)
from sagas.events import ProvisioningOperatorAction, ProvisioningRejected
from sagas.inputs import (
    CompensationResult,
    OperatorCancel,
    OperatorRecompensate,
    OperatorResolve,
    OperatorResume,
    OperatorRetry,
    Outcome,
    SagaInput,
    StartCommand,
    StepResult,
    TimerFired,
    TimerKind,
)
from sagas.outcomes import CANCELLED_BY
from sagas.state import SagaState, Status, payload_hash
from sagas.transitions import (
    DEADLINE_EXCEEDED,
    Transition,
    compensate_step,
    compensation_failed,
    compensation_succeeded,
    execute_step,
    fail_step_for_good,
    set_timer,
    start_compensation,
    start_run,
    start_step,
    step_failed,
    step_succeeded,
)
from sagas.workflows import DEFAULT_REGISTRY, Step, Workflow, WorkflowRegistry

Decision = tuple[SagaState | None, tuple[Effect, ...]]


def decide(
    state: SagaState | None,
    saga_input: SagaInput,
    now: int,
    *,
    registry: WorkflowRegistry = DEFAULT_REGISTRY,
) -> Decision:
    """The saga's next state and the effects to perform, for one input at time `now`."""
    if state is not None and saga_input.request_id != state.request_id:
        return state, ()  # another saga's input: not this state's business
    t = Transition(state, now)
    if isinstance(saga_input, StartCommand):
        _on_command(t, saga_input, registry)
    elif state is not None:
        workflow = registry.get(state.workflow_type, state.workflow_version)
        handler = _HANDLERS[type(saga_input)]
        handler(t, state, saga_input, workflow, registry)
    return t.result()


# --- commands ----------------------------------------------------------------------------------


def _on_command(t: Transition, command: StartCommand, registry: WorkflowRegistry) -> None:
    state = t.state
    command_hash = payload_hash(command.workflow_type, command.params)
    if state is not None and command_hash != state.payload_hash:
        reason = (f"conflict: requestId {command.request_id} was already used with a different "
                  "payload; nothing was run")
        _reject(t, command, "conflict", reason)
        return
    if state is not None and state.status is not Status.FAILED:
        # A duplicate of a request that is running or done: answer it, run nothing.
        t.reply(command.reply_to, _status_response(state, t.now))
        return
    problem = _invalid(command, registry)
    if problem is not None:
        _reject(t, command, "invalid", f"invalid command: {problem}")
        return
    if state is not None and state.uncompensated_steps:
        _reject(t, command, "uncompensated", _held_by_leftovers(state))
        return
    run, first_sequence = (state.run + 1, state.sequence + 1) if state is not None else (1, 1)
    if state is None and command.known_run is not None:
        # Forgotten after the idempotency window, known to the sender: continue after it.
        run, first_sequence = command.known_run + 1, (command.known_sequence or 0) + 1
    start_run(
        t, registry.latest(command.workflow_type),
        request_id=command.request_id,
        run=run,
        tenant_id=command.tenant_id,
        params=command.params,
        payload_hash=command_hash,
        requested_by=command.requested_by,
        reply_to=command.reply_to,
        trace_parent=command.trace_parent,
        first_sequence=first_sequence,
    )


def _invalid(command: StartCommand, registry: WorkflowRegistry) -> str | None:
    if not registry.knows(command.workflow_type):
        return f"unknown workflow type {command.workflow_type!r}"
    missing = registry.latest(command.workflow_type).missing_params(command.params)
    if missing:
        return f"missing parameters: {', '.join(missing)}"
    return None


def _reject(t: Transition, command: StartCommand, code: str, reason: str) -> None:
    """Refuse a command: an event and a Failed reply, nothing run, nothing else changed."""
    if t.state is not None:
        t.emit(ProvisioningRejected, reason=reason, code=code)
        run = t.state.run
    else:
        # No saga exists to number the event in: sequence 0, as the worker's DLQ does.
        run = 0
        t.record(ProvisioningRejected(
            request_id=command.request_id, sequence=0, run=run,
            workflow_type=command.workflow_type, tenant_id=command.tenant_id,
            occurred_at=t.now, reason=reason, code=code,
        ))
    t.reply(command.reply_to, ProvisioningFailed(
        request_id=command.request_id, run=run, reason=reason, failed_step=None,
        occurred_at=t.now,
    ))


def _held_by_leftovers(state: SagaState) -> str:
    # What the last run left may clash with a new one (an entity already a tenant) or be
    # duplicated by it (a second schema): it is cleaned first.
    return (f"not run again: run {state.run} left {', '.join(state.uncompensated_steps)} "
            "not compensated; an operator must re-attempt or resolve them first")


def _status_response(state: SagaState, now: int) -> ProvisioningResponse:
    if state.status is Status.COMPLETED:
        assert state.resource_id is not None
        return ProvisioningCompleted(
            request_id=state.request_id, run=state.run, resource_id=state.resource_id,
            occurred_at=now,
        )
    return ProvisioningStarted(request_id=state.request_id, run=state.run, occurred_at=now)


# --- participants' answers ------------------------------------------------------------------------


def _on_step_result(
    t: Transition, state: SagaState, result: StepResult, workflow: Workflow, _: WorkflowRegistry
) -> None:
    if not _awaits(state, Status.IN_PROGRESS, result.run, result.step, result.attempt):
        return
    step = workflow.step(result.step)
    if result.outcome is Outcome.SUCCEEDED:
        step_succeeded(t, workflow, step, result.attempt, result.output)
    else:
        reason = result.reason or result.outcome.value.lower().replace("_", " ")
        step_failed(
            t, workflow, step, result.attempt, reason,
            transient=result.outcome is Outcome.TRANSIENT_FAILURE, acted=result.acted,
            retry_after_ms=result.retry_after_ms,
        )


def _on_compensation_result(
    t: Transition,
    state: SagaState,
    result: CompensationResult,
    workflow: Workflow,
    _: WorkflowRegistry,
) -> None:
    if not _awaits(state, Status.COMPENSATING, result.run, result.step, result.attempt):
        return
    step = workflow.step(result.step)
    if result.succeeded:
        compensation_succeeded(t, workflow, step, result.attempt)
    else:
        compensation_failed(t, workflow, step, result.attempt, result.reason or "failed")


def _awaits(state: SagaState, status: Status, run: int, step: str, attempt: int) -> bool:
    """Is the saga waiting for the answer of exactly this attempt?"""
    return (
        state.status is status
        and state.run == run
        and state.current_step == step
        and state.current_attempt == attempt
        and state.attempt_in_flight
    )


# --- timers --------------------------------------------------------------------------------------


def _on_timer(
    t: Transition, state: SagaState, timer: TimerFired, workflow: Workflow, _: WorkflowRegistry
) -> None:
    if state.run != timer.run or state.current_step != timer.step:
        return
    step = workflow.step(timer.step)
    match timer.kind:
        case TimerKind.RETRY:
            if _waits_to_retry(state, Status.IN_PROGRESS, timer.attempt):
                start_step(t, step, timer.attempt + 1)
        case TimerKind.ATTEMPT_TIMEOUT:
            if _timed_out(state, Status.IN_PROGRESS, timer, t.now):
                _attempt_timed_out(t, state, workflow, step, timer.attempt)
        case TimerKind.STEP_DEADLINE:
            # Whether an attempt is in flight or a retry is waiting: the step is over.
            if state.status is Status.IN_PROGRESS and _due(state.step_deadline, t.now):
                fail_step_for_good(
                    t, workflow, step.name, state.current_attempt, DEADLINE_EXCEEDED,
                    transient=False,
                )
        case TimerKind.COMPENSATION_RETRY:
            if _waits_to_retry(state, Status.COMPENSATING, timer.attempt):
                start_compensation(t, step, timer.attempt + 1)
        case TimerKind.COMPENSATION_TIMEOUT:
            if _timed_out(state, Status.COMPENSATING, timer, t.now):
                reason = f"no answer within {step.attempt_timeout_ms} ms"
                compensation_failed(t, workflow, step, timer.attempt, reason)


def _timed_out(state: SagaState, status: Status, timer: TimerFired, now: int) -> bool:
    """Is the attempt this timer watches still unanswered, and its time up?"""
    return _awaits(state, status, timer.run, timer.step, timer.attempt) and _due(
        state.attempt_deadline, now
    )


def _attempt_timed_out(
    t: Transition, state: SagaState, workflow: Workflow, step: Step, attempt: int
) -> None:
    if state.step_deadline is not None and t.now >= state.step_deadline:
        # The attempt's time was cut to the step's deadline: no retry can follow.
        fail_step_for_good(t, workflow, step.name, attempt, DEADLINE_EXCEEDED, transient=False)
    else:
        step_failed(
            t, workflow, step, attempt, f"no answer within {step.attempt_timeout_ms} ms",
            transient=True,
        )


def _waits_to_retry(state: SagaState, status: Status, attempt: int) -> bool:
    return state.status is status and state.waiting_for_retry and state.current_attempt == attempt


def _due(deadline: int | None, now: int) -> bool:
    # A timer is only a reminder: the deadline in the state decides (None: nothing to compare).
    return deadline is None or now >= deadline


# --- operators -----------------------------------------------------------------------------------


def _on_operator_retry(
    t: Transition,
    state: SagaState,
    retry: OperatorRetry,
    _: Workflow,
    registry: WorkflowRegistry,
) -> None:
    if state.status is not Status.FAILED or state.uncompensated_steps:
        return  # leftovers are cleared before the next run (see _held_by_leftovers)
    t.emit(ProvisioningOperatorAction, operator=retry.operator, action="RETRY",
           reason=retry.reason)
    start_run(
        t, registry.latest(state.workflow_type),
        request_id=state.request_id,
        run=state.run + 1,
        # The command's tenant, not one a failed tenant provisioning created and deleted.
        tenant_id=state.params.get("tenantId"),
        params=state.params,
        payload_hash=state.payload_hash,
        requested_by=retry.operator,
        reply_to=state.reply_to,
        trace_parent=state.trace_parent,
    )


def _on_operator_cancel(
    t: Transition,
    state: SagaState,
    cancel: OperatorCancel,
    workflow: Workflow,
    _: WorkflowRegistry,
) -> None:
    if state.status is not Status.IN_PROGRESS or state.current_step is None:
        return
    t.emit(ProvisioningOperatorAction, operator=cancel.operator, action="CANCEL",
           reason=cancel.reason)
    # The step under way is abandoned (its late result will be stale); what completed is undone.
    fail_step_for_good(
        t, workflow, state.current_step, state.current_attempt,
        f"{CANCELLED_BY}{cancel.operator}: {cancel.reason}", transient=False,
    )


def _on_operator_resume(
    t: Transition,
    state: SagaState,
    resume_: OperatorResume,
    workflow: Workflow,
    _: WorkflowRegistry,
) -> None:
    """A fresh attempt of what the saga waits on, now: the same idempotency key, so a
    participant that did the work already answers with its first result."""
    if not state.is_running or state.current_step is None:
        return
    t.emit(ProvisioningOperatorAction, operator=resume_.operator, action="RESUME",
           reason=resume_.reason)
    step = workflow.step(state.current_step)
    if state.status is Status.COMPENSATING:
        start_compensation(t, step, state.current_attempt + 1)
    else:
        start_step(t, step, state.current_attempt + 1)


def _is_leftover(state: SagaState, step: str) -> bool:
    """Is `step` a leftover of a run that is over (not while it or a re-attempt runs)?"""
    return state.status is Status.FAILED and step in state.uncompensated_steps


def _on_operator_recompensate(
    t: Transition,
    state: SagaState,
    recompensate: OperatorRecompensate,
    workflow: Workflow,
    _: WorkflowRegistry,
) -> None:
    """One fresh attempt to undo a leftover, under the step's idempotency key (a participant
    that did undo it already answers so); when it settles the saga is FAILED again, the step
    compensated or still a leftover with the new reason."""
    if not _is_leftover(state, recompensate.step):
        return
    t.emit(ProvisioningOperatorAction, operator=recompensate.operator, action="RECOMPENSATE",
           reason=recompensate.reason, step=recompensate.step)
    step = workflow.step(recompensate.step)
    start_compensation(t, step, state.compensation_attempts.get(step.name, 0) + 1)


def _on_operator_resolve(
    t: Transition,
    state: SagaState,
    resolve_: OperatorResolve,
    _: Workflow,
    __: WorkflowRegistry,
) -> None:
    """The operator cleaned the leftover by hand: the audit record takes it off the list."""
    if not _is_leftover(state, resolve_.step):
        return
    t.emit(ProvisioningOperatorAction, operator=resolve_.operator, action="RESOLVE",
           reason=resolve_.reason, step=resolve_.step)


_HANDLERS: dict[type, Callable[[Transition, SagaState, Any, Workflow, WorkflowRegistry], None]] = {
    StepResult: _on_step_result,
    CompensationResult: _on_compensation_result,
    TimerFired: _on_timer,
    OperatorRetry: _on_operator_retry,
    OperatorCancel: _on_operator_cancel,
    OperatorResume: _on_operator_resume,
    OperatorRecompensate: _on_operator_recompensate,
    OperatorResolve: _on_operator_resolve,
}


# --- after a restart -----------------------------------------------------------------------------


def resume(
    state: SagaState, now: int, *, registry: WorkflowRegistry = DEFAULT_REGISTRY
) -> tuple[Effect, ...]:
    """What a worker that restored `state` from the state topic must do to continue it.

    Timers live in memory only, so they are set again from the state; the attempt in flight is
    issued again with the same attempt number and idempotency key (the participant answers a
    repeat with its first result), unless its time is already up, in which case its timeout
    fires at once and the attempt counts as timed out. Terminal sagas need nothing.
    """
    if not state.is_running or state.current_step is None:
        return ()
    workflow = registry.get(state.workflow_type, state.workflow_version)
    step = workflow.step(state.current_step)
    attempt = state.current_attempt
    compensating = state.status is Status.COMPENSATING
    effects: list[Effect] = []
    if not compensating and state.step_deadline is not None:
        effects.append(set_timer(state, TimerKind.STEP_DEADLINE, step.name, 1, state.step_deadline))
    if state.waiting_for_retry:
        kind = TimerKind.COMPENSATION_RETRY if compensating else TimerKind.RETRY
        assert state.next_retry_at is not None
        effects.append(set_timer(state, kind, step.name, attempt, state.next_retry_at))
        return tuple(effects)
    timeout_at = state.attempt_deadline
    if timeout_at is None:  # a snapshot written before attempt deadlines were recorded
        timeout_at = now + step.attempt_timeout_ms
    if timeout_at > now:
        effects.append(compensate_step(state, step) if compensating else execute_step(state, step))
    kind = TimerKind.COMPENSATION_TIMEOUT if compensating else TimerKind.ATTEMPT_TIMEOUT
    effects.append(set_timer(state, kind, step.name, attempt, timeout_at))
    return tuple(effects)
