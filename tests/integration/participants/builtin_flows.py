"""Drives the built-in participant the way the saga engine does, one step call at a time.

A `Flow` is one saga run: its params are the command's flattened parameters plus the outputs
of the steps that succeeded so far, its keys are `<requestId>:<run>:<step>`, and its step
order and compensations come from the saga engine's workflow table.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import sqlalchemy as sa

from consumer.participants.base import Action, Outcome, Participant, StepCall, StepOutcome
from consumer.participants.builtin.registry import add_entity
from sagas.workflows import DEFAULT_REGISTRY, Workflow


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@dataclass
class Flow:
    participant: Participant
    workflow_type: str
    params: dict[str, str]
    request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    run: int = 1
    completed: list[str] = field(default_factory=list)

    @property
    def workflow(self) -> Workflow:
        return DEFAULT_REGISTRY.latest(self.workflow_type)

    @property
    def steps(self) -> list[str]:
        return [step.name for step in self.workflow.steps]

    def key(self, step: str) -> str:
        return f"{self.request_id}:{self.run}:{step}"

    def step_call(self, step: str, action: Action = Action.EXECUTE, **changes: str) -> StepCall:
        return StepCall(
            request_id=self.request_id, run=self.run, workflow_type=self.workflow_type,
            tenant_id=self.params.get("tenantId"), step=step, action=action, attempt=1,
            idempotency_key=self.key(step), params={**self.params, **changes},
        )

    def execute(self, step: str, **changes: str) -> StepOutcome:
        outcome = self.participant.call(self.step_call(step, **changes))
        if outcome.outcome is Outcome.SUCCEEDED:
            self.params.update(outcome.output)
            self.completed.append(step)
        return outcome

    def compensate(self, step: str) -> StepOutcome:
        return self.participant.call(self.step_call(step, Action.COMPENSATE))

    def execute_all(self, until: str | None = None) -> Flow:
        """Run the steps in order (through `until`, inclusive); every one must succeed."""
        for step in self.steps:
            outcome = self.execute(step)
            assert outcome.outcome is Outcome.SUCCEEDED, f"{step}: {outcome.reason}"
            if step == until:
                break
        return self

    def compensate_all(self) -> None:
        """Undo the completed steps that change something, latest first, as the saga does."""
        for name in reversed(self.completed):
            if self.workflow.step(name).compensation is None:
                continue
            outcome = self.compensate(name)
            assert outcome.outcome is Outcome.SUCCEEDED, f"undo {name}: {outcome.reason}"
        self.completed.clear()


def tenant_flow(
    participant: Participant, engine: sa.Engine, plan: str = "BUSINESS",
    requested_by: str | None = None, register_entity: bool = True,
) -> Flow:
    entity_id = unique("entity")
    if register_entity:
        add_entity(engine, entity_id, "Acme Widgets")
    return Flow(participant, "tenant", {
        "entityId": entity_id,
        "tenantName": "Acme Widgets",
        "subscriptionPlan": plan,
        "billingInfo.accountName": "Acme Widgets Ltd",
        "billingInfo.billingEmail": "billing@acme.example",
        "billingInfo.currency": "EUR",
        "billingInfo.paymentMethod": "pm_card_visa_4242",
        "requestedBy": requested_by or unique("user"),
    })


def service_flow(
    participant: Participant, tenant_id: str, service: str = "CartService", tier: str = "GOLD",
) -> Flow:
    return Flow(participant, "service", {
        "tenantId": tenant_id, "serviceName": service, "slaTier": tier, "requestedBy": "svc-cart",
    })


def user_flow(
    participant: Participant, tenant_id: str, requested_by: str, email: str | None = None,
    role: str = "member",
) -> Flow:
    return Flow(participant, "user", {
        "tenantId": tenant_id, "email": email or f"{unique('jane')}@acme.example",
        "roleName": role, "requestedBy": requested_by,
    })


def resource_flow(
    participant: Participant, tenant_id: str, resource_type: str = "DATABASE",
    service: str = "CartService", **spec: str,
) -> Flow:
    params = {
        "tenantId": tenant_id, "serviceName": service, "resourceType": resource_type,
        "requestedBy": "svc-cart",
    }
    params.update({f"resourceSpec.{k}": v for k, v in spec.items()})
    return Flow(participant, "resource", params)


def schema_owner(engine: sa.Engine, schema: str) -> str | None:
    with engine.connect() as connection:
        return connection.scalar(
            sa.text("SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = :name"),
            {"name": schema},
        )


def role_exists(engine: sa.Engine, role: str) -> bool:
    with engine.connect() as connection:
        return connection.scalar(
            sa.text("SELECT count(*) FROM pg_roles WHERE rolname = :name"), {"name": role}
        ) == 1


def count_rows(engine: sa.Engine, table: str, **where: object) -> int:
    """Rows of a registry table matching column = value for each keyword."""
    conditions = " AND ".join(f"{column} = :{column}" for column in where) or "TRUE"
    with engine.connect() as connection:
        return connection.scalar(
            sa.text(f"SELECT count(*) FROM {table} WHERE {conditions}"), where
        )


def at_once(calls: list[Callable[[], StepOutcome]]) -> list[StepOutcome]:
    """Run the calls on their own threads, released together."""
    barrier = threading.Barrier(len(calls))
    results: list[StepOutcome | None] = [None] * len(calls)

    def run(index: int) -> None:
        barrier.wait()
        results[index] = calls[index]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert all(r is not None for r in results), "a call did not finish"
    return results  # type: ignore[return-value]
