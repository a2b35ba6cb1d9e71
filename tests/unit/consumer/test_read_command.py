"""The worker's checks of a commands-topic record (`read_command`): whatever arrives, the result
is a saga input or a `CodecError`/`InvalidCommand` with a reason, never another exception."""

from __future__ import annotations

import uuid

import pytest
from hostile import (
    COMMANDS,
    VALID,
    Hostile,
    enum_index_out_of_range,
    hostile_records,
    missing_field,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.commands import InvalidCommand, command_from_params, read_command, to_start_command
from provisioning.errors import CodecError
from provisioning.topics import ReplyTopicRule, TopicLayout
from sagas import OperatorCancel, OperatorRecompensate, OperatorResolve, StartCommand, payload_hash
from schemas import codec
from schemas.examples import EXAMPLES

LIMIT = 64 * 1024
RULE = ReplyTopicRule(TopicLayout(""))


@settings(max_examples=400, deadline=None)
@given(hostile_records)
def test_a_hostile_record_is_a_command_or_a_clear_rejection(record: Hostile) -> None:
    try:
        command = read_command(record.key, record.value, LIMIT, RULE)
    except (CodecError, InvalidCommand) as exc:
        assert str(exc), record.kind
    else:
        assert isinstance(command, StartCommand)
        assert record.key == command.request_id.encode()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000), st.one_of(st.none(), st.binary(max_size=40)))
def test_random_bytes_never_escape_as_another_exception(value: bytes, key: bytes | None) -> None:
    with pytest.raises((CodecError, InvalidCommand)):
        read_command(key, value, LIMIT, RULE)


@pytest.mark.parametrize("record", [
    Hostile(b"k", VALID["ProvisionTenantRequest"][:-3], "truncated"),
    Hostile(b"k", codec.MAGIC + b"\x00" * 8 + b"\x02", "wrong fingerprint"),
    enum_index_out_of_range(),
    missing_field("ProvisionTenantRequest", "billingInfo"),
], ids=lambda r: r.kind)
def test_records_that_can_never_be_valid_are_rejected_by_the_codec(record: Hostile) -> None:
    with pytest.raises(CodecError):
        read_command(record.key, record.value, LIMIT, RULE)


def test_a_command_over_the_size_limit_is_refused_before_decoding() -> None:
    command = {**EXAMPLES["ProvisionTenantRequest"], "tenantName": "x" * LIMIT}
    value = codec.encode("ProvisionTenantRequest", command)

    with pytest.raises(InvalidCommand, match=f"over the limit of {LIMIT}"):
        read_command(command["requestId"].encode(), value, LIMIT, RULE)


def test_the_key_must_be_the_requestid() -> None:
    value = VALID["ProvisionUserRequest"]

    with pytest.raises(InvalidCommand, match="is not the command's requestId"):
        read_command(str(uuid.uuid4()).encode(), value, LIMIT, RULE)


def test_an_operator_command_becomes_the_operator_input() -> None:
    value = codec.encode("ProvisioningOperatorCommand",
                         {**EXAMPLES["ProvisioningOperatorCommand"], "action": "CANCEL"})
    request_id = EXAMPLES["ProvisioningOperatorCommand"]["requestId"]

    command = read_command(request_id.encode(), value, LIMIT, RULE)

    assert isinstance(command, OperatorCancel)
    assert command.request_id == request_id


def test_an_operator_action_this_version_does_not_know_is_refused() -> None:
    value = codec.encode("ProvisioningOperatorCommand",
                         {**EXAMPLES["ProvisioningOperatorCommand"], "action": "UNSUPPORTED"})
    request_id = EXAMPLES["ProvisioningOperatorCommand"]["requestId"]

    with pytest.raises(InvalidCommand, match="not supported"):
        read_command(request_id.encode(), value, LIMIT, RULE)


def _operator_command(**fields: object) -> tuple[bytes, bytes]:
    command = {**EXAMPLES["ProvisioningOperatorCommand"], **fields}
    return (command["requestId"].encode(),
            codec.encode("ProvisioningOperatorCommand", command))


def test_recompensate_and_resolve_name_the_leftover_step() -> None:
    request_id = EXAMPLES["ProvisioningOperatorCommand"]["requestId"]

    again = read_command(*_operator_command(action="RECOMPENSATE", step="setup-billing",
                                            reason=None), LIMIT, RULE)
    resolved = read_command(*_operator_command(action="RESOLVE", step="create-tenant",
                                               reason="tenant deleted by hand"), LIMIT, RULE)

    assert again == OperatorRecompensate(request_id=request_id, operator="ops-ada",
                                         step="setup-billing", reason=None)
    assert resolved == OperatorResolve(request_id=request_id, operator="ops-ada",
                                       step="create-tenant", reason="tenant deleted by hand")


@pytest.mark.parametrize(("fields", "reason"), [
    ({"action": "RECOMPENSATE", "step": None}, "step: RECOMPENSATE needs the leftover step"),
    ({"action": "RESOLVE", "step": None, "reason": "done"}, "step: RESOLVE needs the leftover"),
    ({"action": "RESOLVE", "step": "create-tenant", "reason": None},
     "reason: RESOLVE needs a reason"),
    ({"action": "RESOLVE", "step": "create-tenant", "reason": ""}, "reason: String should"),
    ({"action": "RECOMPENSATE", "step": "Create Tenant"}, "step: String should match"),
    ({"action": "RECOMPENSATE", "step": "x" * 101}, "step: String should have at most 100"),
])
def test_a_leftover_action_without_its_step_or_reason_is_refused(fields: dict,
                                                                  reason: str) -> None:
    with pytest.raises(InvalidCommand, match=reason):
        read_command(*_operator_command(**fields), LIMIT, RULE)


@pytest.mark.parametrize("name", COMMANDS)
@pytest.mark.parametrize("empty_spec", [True, False])
def test_a_command_rebuilt_from_its_saga_params_encodes_and_hashes_the_same(
    name: str, empty_spec: bool,
) -> None:
    """What a retry of a FAILED request sends: its parameters, flattened and back."""
    value = dict(EXAMPLES[name])
    if empty_spec and "resourceSpec" in value:
        value["resourceSpec"] = {}
    start = to_start_command(name, value)

    record_name, rebuilt = command_from_params(
        start.workflow_type, start.request_id, start.params, reply_to=start.reply_to,
        requested_at=value["requestedAt"], known_run=start.known_run,
        known_sequence=start.known_sequence)

    assert record_name == name
    assert to_start_command(name, codec.decode(codec.encode(name, rebuilt)).value) == start
    # Known runs travel beside the request, outside what identifies it.
    assert payload_hash(start.workflow_type, start.params) == payload_hash(
        start.workflow_type, to_start_command(name, {**value, "knownRun": 9,
                                                     "knownSequence": 99}).params)
