"""The worker and the DLQ redrive held to the hand-written table of invalid commands."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from invalid_commands import REDRIVE, WORKER, InvalidCommand, rows

from consumer.commands import InvalidCommand as Refused
from consumer.commands import read_command, unflatten
from provisioning.dlq_admin import NotRedriven, apply_changes, checked_value
from provisioning.errors import CodecError
from provisioning.settings import Settings
from provisioning.topics import ReplyTopicRule, TopicLayout
from schemas import codec
from schemas.examples import EXAMPLES

SETTINGS = Settings(topic_prefix="prod")


def changed(row: InvalidCommand) -> dict[str, Any]:
    """The table's valid example with the row's changes merged in."""
    command = copy.deepcopy(EXAMPLES[row.record])
    for name, value in unflatten(row.changes).items():
        if isinstance(value, dict):
            command[name] = {**command.get(name, {}), **value}
        else:
            command[name] = value
    return command


@pytest.mark.parametrize("row", rows(WORKER), ids=str)
def test_the_worker_refuses_it_with_the_reason(row: InvalidCommand) -> None:
    command = changed(row)
    value = codec.encode(row.record, command)
    rule = ReplyTopicRule(TopicLayout("prod"), None)

    with pytest.raises((Refused, CodecError)) as refused:
        read_command(command["requestId"].encode(), value, 64 * 1024, rule)
    assert row.says in str(refused.value)


@pytest.mark.parametrize("row", rows(REDRIVE), ids=str)
def test_a_redrive_with_that_change_is_refused_with_the_reason(row: InvalidCommand) -> None:
    with pytest.raises(NotRedriven) as refused:
        command = apply_changes(row.record, EXAMPLES[row.record], row.changes)
        checked_value(SETTINGS, "0:7", row.record, command)
    assert row.says in str(refused.value)


@pytest.mark.parametrize("record", ["ProvisionTenantRequest", "ProvisionServiceRequest",
                                    "ProvisionUserRequest", "ProvisionResourceRequest"])
def test_the_unchanged_examples_pass_every_door(record: str) -> None:
    command = EXAMPLES[record]
    rule = ReplyTopicRule(TopicLayout("prod"), None)
    read_command(command["requestId"].encode(), codec.encode(record, command), 64 * 1024, rule)
    checked_value(SETTINGS, "0:7", record, apply_changes(record, command, {}))
