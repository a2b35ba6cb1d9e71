"""What callers send and receive. Commands follow the Avro schemas (`schemas/`), minus what the
API fills in itself: `requestedBy` is the token's subject, `requestedAt` the time of the call and
`tenantId` the caller's tenant. Enumerations are read from the schemas, so they cannot drift.
"""

from __future__ import annotations

import enum
import json
import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from consumer.commands import (
    BillingInfo,
    Email,
    Identifier,
    Name,
    Reason,
    SpecKey,
    SpecValue,
    StepName,
    Topic,
)
from schemas.registry import SCHEMA_DIR


def _enum(name: str, exclude: tuple[str, ...] = ()) -> type[enum.StrEnum]:
    schema = json.loads((SCHEMA_DIR / f"{name}.avsc").read_text())
    symbols = [s for s in schema["symbols"] if s not in exclude]
    return enum.StrEnum(name, {s: s for s in symbols})


SubscriptionPlan = _enum("SubscriptionPlan")
SlaTier = _enum("SlaTier")
ResourceType = _enum("ResourceType", exclude=("UNSUPPORTED",))


class _Command(BaseModel):
    model_config = ConfigDict(extra="forbid")

    requestId: uuid.UUID | None = Field(
        None, description="Idempotency key; generated when absent. The same requestId with the "
        "same body is the same request; with another body it is refused with 409.")
    replyTo: Topic | None = Field(None, description="Kafka topic for the seed's responses.")


class TenantRequest(_Command):
    entityId: Identifier
    tenantName: Name | None = None
    subscriptionPlan: SubscriptionPlan  # type: ignore[valid-type]
    billingInfo: BillingInfo


class _TenantScoped(_Command):
    tenantId: Identifier | None = Field(
        None, description="Optional; when given it must equal X-Tenant-ID.")


class ServiceRequest(_TenantScoped):
    serviceName: Identifier
    slaTier: SlaTier  # type: ignore[valid-type]


class UserRequest(_TenantScoped):
    email: Email
    roleName: Identifier


class ResourceRequest(_TenantScoped):
    serviceName: Identifier
    resourceType: ResourceType  # type: ignore[valid-type]
    resourceSpec: Annotated[dict[SpecKey, SpecValue], Field(max_length=32)] = {}


class Accepted(BaseModel):
    requestId: str
    status: str
    statusUrl: str
    eventsUrl: str


class UncompensatedStep(BaseModel):
    """A leftover: a step whose compensation was given up, so what it did may still exist."""

    step: str
    reason: str = Field(description="Why the last attempt to undo it failed.")
    since: datetime = Field(description="When its compensation was first given up.")


class RequestStatus(BaseModel):
    requestId: str
    workflowType: str
    tenantId: str | None
    status: str
    run: int
    currentStep: str | None
    completedSteps: list[str]
    compensatedSteps: list[str]
    failedStep: str | None
    reason: str | None
    resourceId: str | None
    attempts: int
    createdAt: datetime
    updatedAt: datetime
    finishedAt: datetime | None
    uncompensatedSteps: list[UncompensatedStep] = Field(
        default_factory=list,
        description="Steps whose undo gave up: an operator re-attempts (…/recompensate) or "
        "resolves (…/resolve) each; until then a FAILED request is not run again.")


class AuditEvent(BaseModel):
    sequence: int
    run: int
    type: str
    step: str | None
    attempt: int | None
    occurredAt: datetime
    details: dict[str, Any]


class AuditTrail(BaseModel):
    requestId: str
    events: list[AuditEvent]


class OperatorRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Reason | None = None


class Recompensation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    step: StepName = Field(description="The uncompensated step to try to undo again.")
    reason: Reason | None = None


class Resolution(BaseModel):
    model_config = ConfigDict(extra="forbid")

    step: StepName = Field(description="The uncompensated step cleaned up by hand.")
    reason: Reason = Field(description="What was done; recorded in the audit trail.")


class Redrive(BaseModel):
    """An operator's fix of a dead-lettered command: field values by dotted name."""

    model_config = ConfigDict(extra="forbid")

    changes: Annotated[dict[Annotated[str, Field(max_length=100)],
                            Annotated[str, Field(max_length=1000)]],
                       Field(max_length=50)] = {}


class DeadLetterSummary(BaseModel):
    ref: str
    key: str | None
    timestampMs: int | None
    reason: str | None
    errorClass: str | None
    recordName: str | None
    command: dict[str, Any] | None


class Redriven(BaseModel):
    requestId: str
    redrivenFrom: str
