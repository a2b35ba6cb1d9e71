"""Direct access to the registry for operators (`provisioning registry ...`) and tests.

Entities come from Entity Management; until that service feeds the registry, an operator
registers them here (`provisioning registry add-entity --id ... --name ...`).
"""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert

from consumer.participants.base import Action, Outcome, StepOutcome
from consumer.participants.builtin.models import Base, Entity, StepExecution

ENTITY_STATUSES = ("eligible", "tenant", "ineligible")


def add_entity(engine: sa.Engine, entity_id: str, name: str) -> uuid.UUID:
    """Register an entity as eligible, or rename one already there (its status is kept, so an
    entity that became a tenant stays one). Returns the entity's registry id."""
    entity_id, name = entity_id.strip(), name.strip()
    if not entity_id or not name:
        raise ValueError("an entity needs a non-empty id and name")
    statement = (
        insert(Entity)
        .values(id=uuid.uuid4(), external_id=entity_id, name=name)
        .on_conflict_do_update(
            index_elements=[Entity.external_id],
            set_={"name": name, "updated_at": sa.func.now()},
        )
        .returning(Entity.id)
    )
    with engine.begin() as connection:
        return connection.execute(statement).scalar_one()


def set_entity_status(engine: sa.Engine, entity_id: str, status: str) -> None:
    """Mark an entity eligible or ineligible (e.g. after a compliance check)."""
    if status not in ENTITY_STATUSES:
        raise ValueError(f"status must be one of {', '.join(ENTITY_STATUSES)}")
    with engine.begin() as connection:
        updated = connection.execute(
            sa.update(Entity)
            .where(Entity.external_id == entity_id)
            .values(status=status, updated_at=sa.func.now())
        ).rowcount
    if updated == 0:
        raise LookupError(f"unknown entity {entity_id}")


def entity_status(engine: sa.Engine, entity_id: str) -> str | None:
    with engine.connect() as connection:
        return connection.scalar(
            sa.select(Entity.status).where(Entity.external_id == entity_id)
        )


def recorded_outcome(engine: sa.Engine, idempotency_key: str, action: Action) -> StepOutcome | None:
    """What the participant recorded for this key and action (None: nothing, or transient)."""
    with engine.connect() as connection:
        row = connection.execute(
            sa.select(StepExecution.outcome, StepExecution.output, StepExecution.reason).where(
                StepExecution.idempotency_key == idempotency_key,
                StepExecution.action == action.value,
            )
        ).one_or_none()
    return None if row is None else StepOutcome(Outcome(row.outcome), dict(row.output), row.reason)


def rows_created_by(engine: sa.Engine, idempotency_key: str) -> dict[str, int]:
    """How many rows of each table the step call with this key created (and still exist)."""
    tables = [t for t in Base.metadata.sorted_tables if "created_by_key" in t.c]
    with engine.connect() as connection:
        found = {
            table.name: connection.scalar(
                sa.select(sa.func.count())
                .select_from(table)
                .where(table.c.created_by_key == idempotency_key)
            )
            for table in tables
        }
    return {name: count for name, count in found.items() if count}
