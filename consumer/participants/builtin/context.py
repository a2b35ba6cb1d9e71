"""What a step function gets (one call, its open transaction) and how it says "impossible".

A step function reads parameters through `StepContext`, runs its statements (`sql.py`)
through `ctx.db`, already inside the call's transaction, and returns its output. It raises
`StepRejected` when the request can never succeed as given; the participant turns that into a
permanent failure, rolls the function's work back and records the reason under the key.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import sqlalchemy as sa

from consumer.participants.base import StepCall
from consumer.participants.builtin.reference import ReferenceData
from consumer.participants.builtin.sql import Registry, compiled

StepOutput = Mapping[str, str]


class StepRejected(Exception):
    """The step cannot succeed with these inputs or this registry state (permanent)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class LockSpace:
    """First halves of two-part advisory locks, so different kinds of lock never collide."""

    STEP_CALL = 1  # one idempotency key at a time (written out in migration 0006)
    QUOTA = 2  # one allocation per subscription and resource type at a time


@dataclass(frozen=True, slots=True)
class StepContext:
    db: Registry
    call: StepCall
    reference: ReferenceData  # plans and SLA tiers, kept for a while (reference.py)

    @property
    def key(self) -> str:
        """The call's idempotency key; rows it creates carry it as `created_by_key`."""
        return self.call.idempotency_key

    def param(self, name: str) -> str:
        value = self.call.params.get(name)
        if value is None or not value.strip():
            raise StepRejected(f"missing parameter {name}")
        return value.strip()

    def optional(self, name: str) -> str | None:
        value = self.call.params.get(name)
        return value.strip() if value and value.strip() else None

    def id_param(self, name: str, what: str) -> uuid.UUID:
        """A parameter naming one of our rows by uuid; anything else names nothing we know."""
        value = self.param(name)
        parsed = parse_uuid(value)
        if parsed is None:
            raise StepRejected(f"unknown {what} {value}")
        return parsed

    def params_under(self, prefix: str) -> dict[str, str]:
        """A flattened sub-record: for "resourceSpec", `resourceSpec.sizeGb` -> `sizeGb`."""
        start = f"{prefix}."
        params = self.call.params
        return {k.removeprefix(start): v for k, v in params.items() if k.startswith(start)}

    def lock(self, space: int, name: str) -> None:
        """Wait for, then hold until commit, the advisory lock on `name` in `space`."""
        self.db.execute(_ADVISORY_XACT_LOCK, {"space": space, "name": name})


_ADVISORY_XACT_LOCK = compiled(sa.text("SELECT pg_advisory_xact_lock(:space, hashtext(:name))"))


def parse_uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


StepFunction = Callable[[StepContext], StepOutput]
