"""What operators see of each saga transition: the seed's log points and the metrics.

The worker hands every transition's events (and the saga state after them) to `SagaObserver`.
It logs one JSON line per event that matters to a person (started, step started, completed or
failed, compensation, succeeded, failed) with request_id, workflow_type, tenant_id, step,
attempt, duration_ms, outcome, and updates the Prometheus metrics of `provisioning.metrics`.

Counting happens when a transition is made, before its transaction commits: after an aborted
transaction (rare: the worker rewinds and makes the transitions again) a count can be high.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

from provisioning import metrics
from sagas import (
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
    SagaState,
)
from sagas.outcomes import FAILED, SUCCEEDED, RunOutcome, failed_run
from sagas.workflows import DEFAULT_REGISTRY, UnknownWorkflow, WorkflowRegistry

log = logging.getLogger("provisioning.saga")


class SagaObserver:
    def __init__(self, registry: WorkflowRegistry = DEFAULT_REGISTRY) -> None:
        # When each attempt in flight started: (request_id, step, attempt, compensating) -> ms.
        self._started: dict[tuple[str, str, int, bool], int] = {}
        self._registry = registry  # which steps only check: a refusal there is a business rule
        # Exported at 0 from the start: a series that appears at 1 is invisible to increase(),
        # and the alert on it would miss the first compensation given up after each restart.
        for workflow in registry:
            for step in workflow.steps:
                if step.compensation is not None:
                    _child(metrics.COMPENSATION_FAILURES, workflow.type, step.name)

    def transition(self, events: Iterable[Any], state: SagaState | None) -> None:
        for event in events:
            handler = _HANDLERS.get(type(event))
            if handler is not None:
                handler(self, event, state)

    # --- per event ----------------------------------------------------------------------------

    def _requested(self, e: ProvisioningRequested, state: SagaState | None) -> None:
        _child(metrics.REQUESTS, e.workflow_type).inc()
        _log("provisioning started", e, run=e.run, requested_by=e.requested_by)

    def _step_started(self, e: ProvisioningStepStarted, state: SagaState | None) -> None:
        self._started[(e.request_id, e.step, e.attempt, False)] = e.occurred_at
        _log("step started", e, step=e.step, attempt=e.attempt, participant=e.participant)

    def _step_completed(self, e: ProvisioningStepCompleted, state: SagaState | None) -> None:
        duration = self._attempt_ended(e, e.step, e.attempt, False, "success")
        _log("step completed", e, step=e.step, attempt=e.attempt, duration_ms=duration,
             outcome="success")

    def _step_failed(self, e: ProvisioningStepFailed, state: SagaState | None) -> None:
        status = "transient_failure" if e.transient else "permanent_failure"
        duration = self._attempt_ended(e, e.step, e.attempt, False, status)
        if e.next_retry_at is not None:
            _child(metrics.RETRIES, e.workflow_type, e.step).inc()
        _log("step failed", e, level=logging.WARNING, step=e.step, attempt=e.attempt,
             duration_ms=duration, outcome=status, reason=e.reason,
             will_retry=e.next_retry_at is not None)

    def _compensation_started(self, e: ProvisioningCompensationStarted,
                              state: SagaState | None) -> None:
        self._started[(e.request_id, e.step, e.attempt, True)] = e.occurred_at
        _log("compensation started", e, step=e.step, attempt=e.attempt,
             compensation=e.compensation)

    def _compensated(self, e: ProvisioningStepCompensated, state: SagaState | None) -> None:
        self._attempt_ended(e, e.step, e.attempt, True, None)
        _child(metrics.COMPENSATIONS, e.workflow_type, e.step).inc()
        _log("step compensated", e, step=e.step, attempt=e.attempt, outcome="compensated")

    def _compensation_failed(self, e: ProvisioningCompensationFailed,
                             state: SagaState | None) -> None:
        self._attempt_ended(e, e.step, e.attempt, True, None)
        if e.next_retry_at is None:  # given up: a leftover an operator must clean
            _child(metrics.COMPENSATION_FAILURES, e.workflow_type, e.step).inc()
        _log("compensation failed", e, level=logging.ERROR if e.next_retry_at is None
             else logging.WARNING, step=e.step, attempt=e.attempt, reason=e.reason,
             will_retry=e.next_retry_at is not None)

    def _succeeded(self, e: ProvisioningSucceeded, state: SagaState | None) -> None:
        duration = _run_duration_ms(e, state)
        if duration is not None:
            _child(metrics.DURATION, e.workflow_type, "success").observe(duration / 1000)
        _child(metrics.OUTCOMES, e.workflow_type, SUCCEEDED).inc()
        _log("provisioning succeeded", e, duration_ms=duration, outcome="success",
             resource_id=e.resource_id)

    def _failed(self, e: ProvisioningFailedEvent, state: SagaState | None) -> None:
        ended = self._outcome_of(e, state)
        duration = _run_duration_ms(e, state)
        status = "failed" if ended.outcome == FAILED else ended.outcome
        if duration is not None:
            _child(metrics.DURATION, e.workflow_type, status).observe(duration / 1000)
        _child(metrics.OUTCOMES, e.workflow_type, ended.outcome).inc()
        _child(metrics.FAILURES, e.workflow_type, e.failed_step or "none", ended.code).inc()
        _log("provisioning failed", e, level=logging.WARNING, duration_ms=duration,
             outcome=ended.outcome, code=ended.code, failed_step=e.failed_step, reason=e.reason)

    def _outcome_of(self, e: ProvisioningFailedEvent, state: SagaState | None) -> RunOutcome:
        version = state.workflow_version if state is not None else None
        try:
            workflow = (self._registry.get(e.workflow_type, version) if version is not None
                        else self._registry.latest(e.workflow_type))
        except UnknownWorkflow:
            return RunOutcome(FAILED, "unknown")
        return failed_run(workflow, e.failed_step, e.reason)

    def _rejected(self, e: ProvisioningRejected, state: SagaState | None) -> None:
        _log("command rejected", e, level=logging.WARNING, outcome="rejected", code=e.code,
             reason=e.reason)

    def _operator(self, e: ProvisioningOperatorAction, state: SagaState | None) -> None:
        _child(metrics.OPERATOR_ACTIONS, e.action).inc()
        _log("operator action", e, operator=e.operator, action=e.action, reason=e.reason)

    def _attempt_ended(self, e: Any, step: str, attempt: int, compensating: bool,
                       status: str | None) -> int | None:
        started = self._started.pop((e.request_id, step, attempt, compensating), None)
        if started is None:
            return None  # started before this worker restored the saga
        duration = max(0, e.occurred_at - started)
        if status is not None:
            _child(metrics.STEP_DURATION, e.workflow_type, step, status).observe(duration / 1000)
        return duration

    def forget(self, request_ids: Iterable[str]) -> None:
        """Drop attempt start times of sagas that left this worker."""
        gone = set(request_ids)
        for key in [k for k in self._started if k[0] in gone]:
            del self._started[key]


@lru_cache(maxsize=4096)
def _child(metric: Any, *labels: str) -> Any:
    """The labelled child of a metric, looked up once: labels() is costly per event."""
    return metric.labels(*labels)


def _run_duration_ms(e: Any, state: SagaState | None) -> int | None:
    if state is None or state.run != e.run:
        return None
    return max(0, e.occurred_at - state.started_at)


def _log(message: str, e: Any, level: int = logging.INFO, **fields: Any) -> None:
    if not log.isEnabledFor(level):  # the fields are not even gathered (two per step)
        return
    log.log(level, message, extra={
        "request_id": e.request_id, "workflow_type": e.workflow_type,
        "tenant_id": e.tenant_id, "sequence": e.sequence,
        **{k: v for k, v in fields.items() if v is not None},
    })


_HANDLERS = {
    ProvisioningRequested: SagaObserver._requested,
    ProvisioningStepStarted: SagaObserver._step_started,
    ProvisioningStepCompleted: SagaObserver._step_completed,
    ProvisioningStepFailed: SagaObserver._step_failed,
    ProvisioningCompensationStarted: SagaObserver._compensation_started,
    ProvisioningStepCompensated: SagaObserver._compensated,
    ProvisioningCompensationFailed: SagaObserver._compensation_failed,
    ProvisioningSucceeded: SagaObserver._succeeded,
    ProvisioningFailedEvent: SagaObserver._failed,
    ProvisioningRejected: SagaObserver._rejected,
    ProvisioningOperatorAction: SagaObserver._operator,
}
