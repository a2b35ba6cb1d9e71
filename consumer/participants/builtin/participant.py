"""The built-in participant: each step call is one transaction on the registry.

In that transaction the call
1. limits its statements to the caller's deadline, waits for the advisory lock on its
   idempotency key and reads the key's records (both actions), all in one statement
   (`provisioning_start_step_call`, migration 0006; a concurrent duplicate waits there, then
   finds the first one's record: two calls with one key never both act),
2. returns the recorded outcome when the key (for this action) was handled before,
3. otherwise runs the step function and records the outcome in `step_executions`, so the work
   and its record commit together or not at all.

A permanent failure (`StepRejected`, or a constraint the request violates) rolls the
transaction back and is recorded in a second one (taking the lock again): a repeat gets the
same answer. Refusals are rare, so the common path pays no savepoint (measured: a savepoint and
its release were two of the ten statements a step cost). Transient failures (database
unreachable, timeouts, deadlocks, anything unexpected) roll everything back and are not
recorded, so the saga's retry runs the step afresh. `call` never raises.

Thread-safe: the participant keeps no state but the engine and the reference data; each call
takes its own connection from the engine's pool and runs its statements, compiled once
(`sql.py`), on that connection's psycopg cursor: the ORM's session and SQLAlchemy's execution
layer cost more CPU than the steps' SQL (measured in the README's performance section).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
import sqlalchemy as sa
from psycopg.types.json import Jsonb

from consumer.participants.base import Action, Outcome, StepCall, StepOutcome
from consumer.participants.builtin import resource, service, tenant, user
from consumer.participants.builtin.context import (
    StepContext,
    StepFunction,
    StepRejected,
)
from consumer.participants.builtin.models import StepExecution
from consumer.participants.builtin.reference import ReferenceData
from consumer.participants.builtin.sql import Registry, compiled, insert

log = logging.getLogger(__name__)

STEPS_BY_WORKFLOW = {
    "tenant": tenant.STEPS,
    "service": service.STEPS,
    "user": user.STEPS,
    "resource": resource.STEPS,
}
DISPATCH: dict[tuple[str, str, Action], StepFunction] = {
    (workflow, step, action): function
    for workflow, steps in STEPS_BY_WORKFLOW.items()
    for (step, action), function in steps.items()
}

DEFAULT_TIME_LIMIT_MS = 30_000  # for calls without a deadline
MAX_TIME_LIMIT_MS = 300_000

# Constraints a request can run into, in the words of the request.
CONFLICTS = {
    "uq_tenant_service_subscriptions_active":
        "the tenant already has an active subscription to this service",
    "uq_tenants_entity_id": "the entity is already a tenant",
    "uq_billing_accounts_tenant_id": "the tenant already has a billing account",
    "uq_memberships_tenant_id_user_id": "the user is already a member of the tenant",
    "uq_service_instances_subscription_id": "the subscription's resources already exist",
    "uq_rate_limits_subscription_id": "the subscription already has rate limits",
    "uq_monitoring_configs_resource_id": "the resource is already monitored",
    "fk_resources_tenant_id": "the tenant still has allocated resources; release them first",
    "fk_resources_subscription_id":
        "the subscription still has allocated resources; release them first",
    "ck_billing_accounts_currency": "billingInfo.currency must be a three-letter currency code",
}
DATABASE_UNAVAILABLE = (
    psycopg.OperationalError,  # includes timeouts, lock timeouts, deadlocks, a dropped connection
    psycopg.InterfaceError,
    sa.exc.OperationalError,  # from the pool: connection refused
    sa.exc.InterfaceError,
    sa.exc.DisconnectionError,
    sa.exc.TimeoutError,  # no pooled connection in time
)


class BuiltinParticipant:
    """Runs the four workflows' steps against the registry tables (see the module doc)."""

    def __init__(self, engine: sa.Engine, clock: Callable[[], float] = time.time,
                 concurrency: int | None = None) -> None:
        """`concurrency`: calls that run at once (None: as many as the pool has connections).
        The rest wait here, asleep, until one ends or their deadline passes: a step thread
        waiting for the interpreter lock costs CPU, one waiting for a permit does not."""
        self._engine = engine
        self._clock = clock
        self._reference = ReferenceData()
        permits = concurrency or engine.pool.size()  # type: ignore[attr-defined]
        self._permits = threading.BoundedSemaphore(permits)

    def call(self, call: StepCall) -> StepOutcome:
        function = DISPATCH.get((call.workflow_type, call.step, call.action))
        if function is None:
            return StepOutcome.permanent(
                f"no built-in {call.action.lower()} for step {call.step} of {call.workflow_type}"
            )
        try:
            return self._run(call, function)
        except DATABASE_UNAVAILABLE as exc:
            log.warning("registry unavailable", extra=_log_fields(call, exc))
            return StepOutcome.transient(f"database unavailable: {_first_line(exc)}")
        except Exception as exc:  # noqa: BLE001 - the contract: report, never raise
            log.exception("built-in step failed unexpectedly", extra=_log_fields(call, exc))
            return StepOutcome.transient(f"unexpected {type(exc).__name__}: {_first_line(exc)}")

    def _run(self, call: StepCall, function: StepFunction) -> StepOutcome:
        time_left_ms = self._time_left_ms(call)
        if time_left_ms <= 0:
            return StepOutcome.transient("the call's deadline passed before it started")
        if not self._permits.acquire(blocking=False):
            if not self._permits.acquire(timeout=time_left_ms / 1000):
                return StepOutcome.transient("the call's deadline passed while it waited its turn")
            time_left_ms = self._time_left_ms(call)  # less by the wait
        try:
            if time_left_ms <= 0:
                return StepOutcome.transient("the call's deadline passed while it waited its turn")
            return self._run_transaction(call, function, time_left_ms)
        finally:
            self._permits.release()

    def _run_transaction(self, call: StepCall, function: StepFunction,
                         time_left_ms: int) -> StepOutcome:
        connection = self._engine.raw_connection()  # the pool's; returned (rolled back) below
        driver: psycopg.Connection[Any] = connection.driver_connection  # type: ignore[assignment]
        try:
            return self._transaction(connection, Registry(driver), call, function, time_left_ms)
        except (psycopg.OperationalError, psycopg.InterfaceError):
            if driver.closed:
                # The server dropped it: so it did every connection made before (a restart).
                connection.invalidate()
                self._engine.dispose(close=False)
            raise
        finally:
            connection.close()

    def _transaction(self, connection: Any, db: Registry, call: StepCall,
                     function: StepFunction, time_left_ms: int) -> StepOutcome:
        recorded = _begin_call(db, call, time_left_ms)
        if recorded is not None:
            connection.rollback()
            return recorded
        output, refusal = _attempt(db, call, function, self._reference)
        if refusal is None and self._time_left_ms(call) > 0:
            outcome = StepOutcome(Outcome.SUCCEEDED, output)
            db.execute(_RECORD, _record(call, outcome))
            connection.commit()
            return outcome
        # A refusal, or the caller stopped waiting: the step's work is rolled back.
        connection.rollback()
        if refusal is None:
            return StepOutcome.transient("the call's deadline passed before it could commit")
        # The refusal, recorded under the key (lock taken again).
        recorded = _begin_call(db, call, max(1, self._time_left_ms(call)))
        if recorded is not None:
            connection.rollback()
            return recorded
        db.execute(_RECORD, _record(call, refusal))
        connection.commit()
        return refusal

    def _time_left_ms(self, call: StepCall) -> int:
        if call.deadline_at is None:
            return DEFAULT_TIME_LIMIT_MS
        return min(call.deadline_at - int(self._clock() * 1000), MAX_TIME_LIMIT_MS)


def _begin_call(db: Registry, call: StepCall, time_left_ms: int) -> StepOutcome | None:
    """Limit the transaction's statements to the caller's deadline (a statement or a lock
    wait that would outlive it is cancelled: the call is a transient failure), take the key's
    lock, then read its records: the outcome of this action if it was recorded, or the refusal
    of a late execution of a step the saga has already undone."""
    records = {row.action: row for row in db.execute(
        _START_STEP_CALL, {"key": call.idempotency_key, "timeout": str(int(time_left_ms))})}
    mine = records.get(call.action.value)
    if mine is not None:
        return StepOutcome(Outcome(mine.outcome), dict(mine.output), mine.reason)
    if call.action is Action.EXECUTE and Action.COMPENSATE.value in records:
        # A late retry of a step the saga has already undone must not redo it.
        return StepOutcome.permanent("the step was already compensated; not executing it again")
    return None


# One round trip (migration 0006): the limits, the lock on the key (space
# `LockSpace.STEP_CALL`), then the key's records, read by a statement of the function whose
# snapshot is taken after the lock, so a duplicate that committed while this call waited is seen.
_START_STEP_CALL = compiled(sa.text("SELECT action, outcome, output, reason "
                                    "FROM provisioning_start_step_call(:key, :timeout)"))


def _attempt(db: Registry, call: StepCall, function: StepFunction,
             reference: ReferenceData) -> tuple[dict[str, str], StepOutcome | None]:
    """Run the step: its output and no refusal when it succeeded, else the refusal to record
    (its work must be rolled back)."""
    try:
        output = function(StepContext(db, call, reference))
    except StepRejected as rejected:
        return {}, StepOutcome.permanent(rejected.reason)
    except psycopg.IntegrityError as exc:
        return {}, StepOutcome.permanent(_describe_violation(exc))
    except psycopg.DataError as exc:
        return {}, StepOutcome.permanent(f"invalid value: {_first_line(exc)}")
    return {k: str(v) for k, v in output.items()}, None


_RECORD = insert(StepExecution, "id", "idempotency_key", "action", "request_id", "run",
                 "workflow_type", "step", "outcome", "output", "reason")


def _record(call: StepCall, outcome: StepOutcome) -> dict[str, object]:
    """The values of `_RECORD` for this call's outcome."""
    return {
        "id": uuid.uuid4(), "idempotency_key": call.idempotency_key,
        "action": call.action.value, "request_id": call.request_id,
        "run": call.run, "workflow_type": call.workflow_type, "step": call.step,
        "outcome": outcome.outcome.value, "output": Jsonb(dict(outcome.output)),
        "reason": outcome.reason,
    }


def _describe_violation(exc: psycopg.IntegrityError) -> str:
    diag = getattr(exc, "diag", None)
    constraint = getattr(diag, "constraint_name", None)
    if constraint in CONFLICTS:
        return CONFLICTS[constraint]
    detail = getattr(diag, "message_primary", None) or _first_line(exc)
    return f"rejected by the registry ({constraint or 'constraint'}): {detail}"


def _first_line(exc: BaseException) -> str:
    original = getattr(exc, "orig", None) or exc
    text = str(original).strip()
    return text.splitlines()[0] if text else type(original).__name__


def _log_fields(call: StepCall, exc: BaseException) -> dict[str, object]:
    return {
        "request_id": call.request_id, "workflow_type": call.workflow_type,
        "tenant_id": call.tenant_id, "step": call.step, "action": call.action.value,
        "error": type(exc).__name__,
    }
