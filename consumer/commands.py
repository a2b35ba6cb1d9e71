"""From a decoded Avro command to the saga's `StartCommand`, or a clear reason why not.

Avro already guarantees types; these models add what Avro cannot say: formats (UUIDs,
e-mail addresses, currency codes), sizes, and the names of steps' inputs. A command that fails
here never reaches a saga: the worker sends it to the DLQ with the reason.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from provisioning.errors import CodecError, ProvisioningError
from provisioning.topics import ReplyTopicRule
from sagas import (
    OperatorCancel,
    OperatorRecompensate,
    OperatorResolve,
    OperatorResume,
    OperatorRetry,
    StartCommand,
)
from schemas import codec

# Free text is any printable text: no control characters (PostgreSQL refuses NUL in text, and
# terminals and logs should show what operators read).
PRINTABLE = r"^[^\x00-\x1f\x7f]*$"
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200,
                                        pattern=PRINTABLE)]
Identifier = Annotated[
    str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@-]*$")
]
_MAILBOX = r"[^@\s\x00-\x1f\x7f]"
Email = Annotated[str, StringConstraints(
    max_length=254, pattern=rf"^{_MAILBOX}{{1,64}}@{_MAILBOX}+\.{_MAILBOX}+$")]
Topic = Annotated[str, StringConstraints(max_length=249, pattern=r"^[A-Za-z0-9._-]+$")]
SpecKey = Annotated[str, StringConstraints(max_length=64, pattern=r"^[A-Za-z][A-Za-z0-9_]*$")]
SpecValue = Annotated[str, StringConstraints(max_length=256, pattern=PRINTABLE)]
Reason = Annotated[str, StringConstraints(min_length=1, max_length=1000, pattern=PRINTABLE)]
# A workflow step's name, as in sagas/workflows.py (validate-entity, create-tenant, ...).
StepName = Annotated[str, StringConstraints(min_length=1, max_length=100,
                                            pattern=r"^[a-z][a-z0-9-]*$")]
# Who asked: a token's subject, whatever the identity provider's format ("auth0|42", a mail).
Principal = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=PRINTABLE)]


class InvalidCommand(ProvisioningError):
    """The command is well-formed Avro but not a valid provisioning request.

    `answer_to` is (requestId, replyTo) when both can be read from it and the worker may write
    to that topic: the caller waiting there gets a `ProvisioningFailed` with the reason.
    """

    answer_to: tuple[str, str] | None = None


class _Command(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    requestId: uuid.UUID
    requestedBy: Principal
    replyTo: Topic | None = None
    requestedAt: Any = None
    knownRun: Annotated[int, Field(ge=1)] | None = None
    knownSequence: Annotated[int, Field(ge=1)] | None = None


class BillingInfo(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    accountName: Name
    billingEmail: Email
    currency: Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
    paymentMethod: Name | None = None


class ProvisionTenantRequest(_Command):
    entityId: Identifier
    tenantName: Name | None = None
    subscriptionPlan: str
    billingInfo: BillingInfo


class ProvisionServiceRequest(_Command):
    tenantId: Identifier
    serviceName: Identifier
    slaTier: str


class ProvisionUserRequest(_Command):
    tenantId: Identifier
    email: Email
    roleName: Identifier


class ProvisionResourceRequest(_Command):
    tenantId: Identifier
    serviceName: Identifier
    resourceType: str
    resourceSpec: Annotated[dict[SpecKey, SpecValue], Field(max_length=32)]


WORKFLOW_OF_RECORD: dict[str, tuple[str, type[_Command]]] = {
    "ProvisionTenantRequest": ("tenant", ProvisionTenantRequest),
    "ProvisionServiceRequest": ("service", ProvisionServiceRequest),
    "ProvisionUserRequest": ("user", ProvisionUserRequest),
    "ProvisionResourceRequest": ("resource", ProvisionResourceRequest),
}


OperatorInput = (
    OperatorCancel | OperatorRetry | OperatorResume | OperatorRecompensate | OperatorResolve
)
M = TypeVar("M", bound=BaseModel)


def read_command(key: bytes | None, value: bytes, max_bytes: int,
                 reply_topics: ReplyTopicRule) -> StartCommand | OperatorInput:
    """One record of the commands topic, checked: a saga's start or an operator's action.

    Raises `CodecError` (not Avro of a known schema) or `InvalidCommand` (too large, not a
    command, invalid fields, a key that is not its requestId, a `replyTo` the worker may not
    write to) and nothing else: the worker dead-letters both.
    """
    try:
        return _checked_command(key, value, max_bytes, reply_topics)
    except InvalidCommand as exc:
        exc.answer_to = _answer_to(value, reply_topics)
        raise


def _checked_command(key: bytes | None, value: bytes, max_bytes: int,
                     reply_topics: ReplyTopicRule) -> StartCommand | OperatorInput:
    if len(value) > max_bytes:
        raise InvalidCommand(f"the command is {len(value)} bytes, over the limit of {max_bytes}")
    decoded = codec.decode(value)
    if decoded.record_name == "ProvisioningOperatorCommand":
        command: StartCommand | OperatorInput = to_operator_input(decoded.value)
    else:
        command = to_start_command(decoded.record_name, decoded.value)
    if key != command.request_id.encode():
        raise InvalidCommand(f"key {key!r} is not the command's requestId {command.request_id}")
    reply_to = getattr(command, "reply_to", None)
    if reply_to is not None:
        problem = reply_topics.problem(reply_to)
        if problem is not None:
            raise InvalidCommand(problem)
    return command


class _Answerable(BaseModel):
    """What a refused command must hold for its caller to be answered."""

    requestId: uuid.UUID
    replyTo: Topic


def _answer_to(value: bytes, reply_topics: ReplyTopicRule) -> tuple[str, str] | None:
    """(requestId, replyTo) of a refused command when both are readable and the topic is one
    the worker may write to; None otherwise (nothing readable: nobody to answer)."""
    try:
        fields = codec.decode(value).value
        answerable = _Answerable.model_validate({"requestId": fields.get("requestId"),
                                                 "replyTo": fields.get("replyTo")})
    except (CodecError, ValidationError):
        return None
    if reply_topics.problem(answerable.replyTo) is not None:
        return None
    return str(answerable.requestId), answerable.replyTo


class OperatorCommand(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    requestId: uuid.UUID
    operator: Principal
    action: str
    reason: Reason | None = None
    requestedAt: Any = None
    step: StepName | None = None


def to_operator_input(value: Mapping[str, Any]) -> OperatorInput:
    """An operator's CANCEL, RETRY, RESUME, RECOMPENSATE or RESOLVE as the saga's input."""
    command = _validated(OperatorCommand, value)
    request_id, operator, reason = str(command.requestId), command.operator, command.reason
    if command.action in ("RECOMPENSATE", "RESOLVE"):
        return _leftover_action(command)
    if command.action == "CANCEL":
        return OperatorCancel(request_id=request_id, operator=operator,
                              reason=reason or "no reason given")
    if command.action == "RETRY":
        return OperatorRetry(request_id=request_id, operator=operator, reason=reason)
    if command.action == "RESUME":
        return OperatorResume(request_id=request_id, operator=operator, reason=reason)
    raise InvalidCommand(f"operator action {command.action} is not supported")


def _leftover_action(command: OperatorCommand) -> OperatorRecompensate | OperatorResolve:
    """RECOMPENSATE and RESOLVE name the leftover step; RESOLVE says why, for the audit trail
    (nothing checks the cleaning but the operator's word)."""
    if command.step is None:
        raise InvalidCommand(f"invalid command: step: {command.action} needs the leftover step")
    request_id, operator = str(command.requestId), command.operator
    if command.action == "RECOMPENSATE":
        return OperatorRecompensate(request_id=request_id, operator=operator, step=command.step,
                                    reason=command.reason)
    if command.reason is None:
        raise InvalidCommand("invalid command: reason: RESOLVE needs a reason")
    return OperatorResolve(request_id=request_id, operator=operator, step=command.step,
                           reason=command.reason)


# How a command travels, not what it asks for: left out of the parameters (and so of the
# payload hash that tells a resend from a conflicting request).
ENVELOPE = frozenset({"requestId", "replyTo", "requestedAt", "knownRun", "knownSequence"})


def to_start_command(record_name: str, value: Mapping[str, Any]) -> StartCommand:
    """Validate a decoded command and flatten its parameters for the saga."""
    try:
        workflow_type, model = WORKFLOW_OF_RECORD[record_name]
    except KeyError:
        raise InvalidCommand(f"{record_name} is not a provisioning command") from None
    if "resourceType" in value and value["resourceType"] == "UNSUPPORTED":
        raise InvalidCommand("resourceType UNSUPPORTED: this service does not know that type")
    command = _validated(model, value)
    params = flatten(command.model_dump(exclude=ENVELOPE, exclude_none=True))
    return StartCommand(
        request_id=str(command.requestId),
        workflow_type=workflow_type,
        tenant_id=getattr(command, "tenantId", None),
        params=params,
        requested_by=command.requestedBy,
        reply_to=command.replyTo,
        known_run=command.knownRun,
        known_sequence=command.knownSequence,
    )


def flatten(value: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested records and maps become dotted keys: billingInfo.currency, resourceSpec.sizeGb."""
    flat: dict[str, str] = {}
    for key, item in value.items():
        name = f"{prefix}{key}"
        if isinstance(item, Mapping):
            flat.update(flatten(item, f"{name}."))
        elif item is not None:
            flat[name] = str(item.value if hasattr(item, "value") else item)
    return flat


RECORD_OF_WORKFLOW = {workflow: record for record, (workflow, _) in WORKFLOW_OF_RECORD.items()}


def unflatten(params: Mapping[str, str]) -> dict[str, Any]:
    """The inverse of `flatten`: dotted keys back into nested mappings."""
    nested: dict[str, Any] = {}
    for key, value in params.items():
        *parents, leaf = key.split(".")
        node = nested
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
    return nested


def command_from_params(
    workflow_type: str, request_id: str, params: Mapping[str, str], *,
    reply_to: str | None, requested_at: int, known_run: int | None = None,
    known_sequence: int | None = None,
) -> tuple[str, dict[str, Any]]:
    """Rebuild a command from a saga's flattened parameters (to resend a failed request).

    The parameters hold everything the payload hash covers, so the rebuilt command hashes the
    same and the worker treats it as the same request: a FAILED one starts its next run
    (after `known_run` and `known_sequence` if the worker has forgotten it).
    """
    record_name = RECORD_OF_WORKFLOW[workflow_type]
    # An empty map flattens to nothing: it comes back empty (resourceSpec {} of a resource).
    fields = codec.schema(record_name).schema["fields"]
    maps: dict[str, dict[str, str]] = {
        f["name"]: {} for f in fields
        if isinstance(f["type"], dict) and f["type"].get("type") == "map"}
    command = {**maps, **unflatten(params), "requestId": request_id, "replyTo": reply_to,
               "requestedAt": requested_at, "knownRun": known_run,
               "knownSequence": known_sequence}
    return record_name, command


def _validated(model: type[M], value: Mapping[str, Any]) -> M:
    try:
        return model.model_validate(dict(value))
    except ValidationError as exc:
        raise InvalidCommand(_describe(exc)) from None


def _describe(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors()[:5]:
        where = ".".join(str(p) for p in error["loc"]) or "command"
        parts.append(f"{where}: {error['msg']}")
    return "invalid command: " + "; ".join(parts)
