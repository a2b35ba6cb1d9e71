"""The `.avsc` files follow the contract's conventions (see schemas/README.md)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from schemas import codec, registry

NAMESPACE = "io.tjmpaas.provisioning"
FILES = sorted(registry.SCHEMA_DIR.glob("*.avsc"))
SCHEMAS = {path.stem: json.loads(path.read_text()) for path in FILES}
RECORDS = [name for name, schema in SCHEMAS.items() if schema["type"] == "record"]
ENUMS = [name for name, schema in SCHEMAS.items() if schema["type"] == "enum"]
TIMESTAMP = {"type": "long", "logicalType": "timestamp-millis"}
UUID = {"type": "string", "logicalType": "uuid"}

COMMAND_FIELDS = ["requestId", "requestedBy", "replyTo", "requestedAt"]
EVENT_FIELDS = ["requestId", "sequence", "run", "workflowType", "tenantId", "occurredAt"]
COMMANDS = [n for n in codec.record_names() if n.startswith("Provision") and n.endswith("Request")]
EVENTS = [
    "ProvisioningRequested", "ProvisioningStepStarted", "ProvisioningStepCompleted",
    "ProvisioningStepFailed", "ProvisioningSucceeded", "ProvisioningFailedEvent",
    "ProvisioningStepCompensated", "ProvisioningCompensationFailed", "ProvisioningRejected",
]
SHARED = {"BillingInfo", "SubscriptionPlan", "SlaTier", "ResourceType", "StepAction", "StepOutcome",
          "OperatorAction"}


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_one_documented_named_type_per_file_named_after_it(path: Path) -> None:
    schema = json.loads(path.read_text())

    assert schema["type"] in {"record", "enum"}
    assert schema["name"] == path.stem
    assert schema["namespace"] == NAMESPACE
    assert schema.get("doc", "").strip()


def test_shared_types_have_files_and_are_not_top_level() -> None:
    assert SCHEMAS.keys() >= SHARED
    assert set(SCHEMAS) - SHARED == codec.record_names()


def _inner(field: dict[str, Any]) -> Any:
    """The type of a field, or T for an optional ["null", T]."""
    return field["type"][1] if isinstance(field["type"], list) else field["type"]


@pytest.mark.parametrize("record", RECORDS)
def test_fields_are_documented_camel_case(record: str) -> None:
    for field in SCHEMAS[record]["fields"]:
        assert re.fullmatch(r"[a-z][a-zA-Z0-9]*", field["name"]), field["name"]
        assert field.get("doc", "").strip(), f"{field['name']} has no doc"


@pytest.mark.parametrize("record", RECORDS)
def test_optional_fields_are_null_or_one_type_defaulting_to_null(record: str) -> None:
    for field in SCHEMAS[record]["fields"]:
        if isinstance(field["type"], list):
            assert field["type"][0] == "null" and len(field["type"]) == 2, field["name"]
            assert "default" in field and field["default"] is None, field["name"]


@pytest.mark.parametrize("record", RECORDS)
def test_times_are_timestamp_millis_and_request_ids_uuids(record: str) -> None:
    for field in SCHEMAS[record]["fields"]:
        if field["name"].endswith("At") or field["name"] in {"deadline", "stepDeadline"}:
            assert _inner(field) == TIMESTAMP, field["name"]
        if field["name"] == "requestId":
            assert _inner(field) == UUID


@pytest.mark.parametrize("record", RECORDS)
def test_named_types_are_files_referred_to_by_full_name(record: str) -> None:
    for field in SCHEMAS[record]["fields"]:
        type_ = _inner(field)
        if isinstance(type_, str) and type_.split(".")[-1] in SHARED:
            assert type_ == f"{NAMESPACE}.{type_.split('.')[-1]}", field["name"]
        assert not (isinstance(type_, dict) and type_.get("type") in {"record", "enum"}), (
            f"{field['name']}: a named type defined inline; give it its own file"
        )


@pytest.mark.parametrize("name", ENUMS)
def test_enums_have_a_default_symbol(name: str) -> None:
    assert SCHEMAS[name]["default"] in SCHEMAS[name]["symbols"]


@pytest.mark.parametrize("name", COMMANDS)
def test_commands_start_with_the_common_fields(name: str) -> None:
    assert [f["name"] for f in SCHEMAS[name]["fields"][:4]] == COMMAND_FIELDS


@pytest.mark.parametrize("name", EVENTS)
def test_events_start_with_the_common_fields(name: str) -> None:
    assert [f["name"] for f in SCHEMAS[name]["fields"][:6]] == EVENT_FIELDS


def test_all_commands_are_there() -> None:
    assert len(COMMANDS) == 4


@pytest.mark.parametrize("name", sorted(codec.record_names()))
def test_named_types_are_inlined_at_their_first_use_only(name: str) -> None:
    seen: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, list):
            for branch in node:
                walk(branch)
        elif isinstance(node, str) and "." in node:
            assert node in seen, f"{node} referred to before its definition"
        elif isinstance(node, dict):
            if node.get("type") in {"record", "enum"}:
                full = f"{node.get('namespace', NAMESPACE)}.{node['name']}"
                assert full not in seen, f"{full} defined twice"
                seen.append(full)
                for field in node.get("fields", []):
                    walk(field["type"])
            for key in ("items", "values"):
                if key in node:
                    walk(node[key])

    walk(codec.schema(name).schema)
