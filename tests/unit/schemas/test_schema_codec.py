"""Encoding and decoding every record of the contract, headers, and refusals of bad datums."""

from __future__ import annotations

import datetime
import io
import uuid
from typing import Any

import pytest
from fastavro import schemaless_writer
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import codec
from schemas.errors import CodecError, InvalidDatum, UnexpectedRecord, UnknownSchema
from schemas.examples import EXAMPLES, example

CONTRACT = frozenset(
    {
        "ProvisionTenantRequest",
        "ProvisionServiceRequest",
        "ProvisionUserRequest",
        "ProvisionResourceRequest",
        "ProvisioningStarted",
        "ProvisioningCompleted",
        "ProvisioningFailed",
        "ProvisioningRequested",
        "ProvisioningOperatorAction",
        "ProvisioningOperatorCommand",
        "ProvisioningStepStarted",
        "ProvisioningStepCompleted",
        "ProvisioningStepFailed",
        "ProvisioningSucceeded",
        "ProvisioningFailedEvent",
        "ProvisioningCompensationStarted",
        "ProvisioningStepCompensated",
        "ProvisioningCompensationFailed",
        "ProvisioningRejected",
        "SagaState",
        "StepRequest",
        "StepReply",
    }
)
RECORDS = sorted(CONTRACT)


def test_the_top_level_records_are_the_contract() -> None:
    assert codec.record_names() == CONTRACT


def test_every_record_has_an_example() -> None:
    assert set(EXAMPLES) == CONTRACT


@pytest.mark.parametrize("name", RECORDS)
def test_round_trip(name: str) -> None:
    data = codec.encode(name, EXAMPLES[name])

    decoded = codec.decode(data)

    assert decoded == codec.Decoded(name, EXAMPLES[name], codec.schema(name).java_fingerprint)
    assert codec.decode_as(data, name) == decoded


@pytest.mark.parametrize("name", RECORDS)
def test_layout_is_marker_fingerprint_then_plain_avro_body(name: str) -> None:
    data = codec.encode(name, EXAMPLES[name])
    body = io.BytesIO()
    schemaless_writer(body, codec.schema(name).parsed, EXAMPLES[name])

    assert data[:2] == b"\xc3\x01"
    assert data[2:10] == codec.schema(name).fingerprint.to_bytes(8, "little")
    assert data[10:] == body.getvalue()


def test_omitted_fields_take_their_defaults() -> None:
    datum = example("ProvisioningStepCompleted")
    del datum["output"], datum["tenantId"]

    value = codec.decode(codec.encode("ProvisioningStepCompleted", datum)).value

    assert value["output"] == {}
    assert value["tenantId"] is None


def test_datetimes_and_uuid_objects_encode_as_plain_values() -> None:
    datum = example("StepReply")
    request_id = uuid.UUID(datum["requestId"])
    at = datetime.datetime.fromtimestamp(datum["occurredAt"] / 1000, tz=datetime.UTC)
    datum.update(requestId=request_id, occurredAt=at)

    assert codec.decode(codec.encode("StepReply", datum)).value == EXAMPLES["StepReply"]


def test_tuples_encode_as_arrays() -> None:
    datum = example("SagaState")
    datum["completedSteps"] = tuple(datum["completedSteps"])

    value = codec.decode(codec.encode("SagaState", datum)).value

    assert value["completedSteps"] == EXAMPLES["SagaState"]["completedSteps"]


@pytest.mark.parametrize("wrap", [bytes, bytearray, memoryview])
def test_decode_takes_any_bytes_like(wrap: Any) -> None:
    data = codec.encode("StepReply", EXAMPLES["StepReply"])

    assert codec.decode(wrap(data)).value == EXAMPLES["StepReply"]


def test_decode_as_another_record_is_refused_before_decoding() -> None:
    data = codec.encode("StepReply", EXAMPLES["StepReply"])

    with pytest.raises(UnexpectedRecord, match="expected a SagaState record, got StepReply"):
        codec.decode_as(data, "SagaState")


@pytest.mark.parametrize("name", ["BillingInfo", "SlaTier", "Nope", "", "io.tjmpaas.provisioning"])
def test_only_top_level_records_have_a_codec(name: str) -> None:
    data = codec.encode("StepReply", EXAMPLES["StepReply"])

    for call in (
        lambda: codec.encode(name, {}),
        lambda: codec.decode_as(data, name),
        lambda: codec.event_type(name),
        lambda: codec.headers_for(name),
        lambda: codec.schema(name),
    ):
        with pytest.raises(UnknownSchema):
            call()


@pytest.mark.parametrize("name", RECORDS)
def test_headers_name_the_record_and_the_encoding(name: str) -> None:
    assert codec.event_type(name) == name
    assert codec.headers_for(name) == [
        ("event-type", name.encode()),
        ("content-type", b"application/vnd.apache.avro+single-object"),
    ]


def test_traceparent_header_when_given() -> None:
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

    headers = codec.headers_for("ProvisioningSucceeded", traceparent)
    headers.append(("mine", b"x"))  # callers may extend the list: it must be their own

    assert headers[2] == ("traceparent", traceparent.encode())
    assert len(codec.headers_for("ProvisioningSucceeded")) == 2


def test_workflow_type_header_when_given() -> None:
    # schemas/README.md, Headers: every event carries `workflow-type`, its workflowType field.
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

    headers = codec.headers_for("ProvisioningSucceeded", traceparent, workflow_type="tenant")

    assert headers == [
        ("event-type", b"ProvisioningSucceeded"),
        ("content-type", b"application/vnd.apache.avro+single-object"),
        ("workflow-type", b"tenant"),
        ("traceparent", traceparent.encode()),
    ]
    assert codec.WORKFLOW_TYPE_HEADER == "workflow-type"


_DELETE = object()
_NAIVE = datetime.datetime(2025, 11, 28, 12, 0)

# (record, dotted path in its example, new value or _DELETE, field the error must name)
BAD_DATUMS: list[tuple[str, str, Any, str]] = [
    ("ProvisionTenantRequest", "entityId", _DELETE, "entityId"),
    ("ProvisionTenantRequest", "billingInfo.currency", _DELETE, "billingInfo.currency"),
    ("ProvisionTenantRequest", "billingInfo.currency", 978, "billingInfo.currency"),
    ("ProvisionTenantRequest", "requestedBy", None, "requestedBy"),
    ("ProvisionTenantRequest", "tenantNme", "typo", ""),
    ("ProvisionTenantRequest", "billingInfo.iban", "DE89", "billingInfo"),
    ("ProvisionTenantRequest", "billingInfo", "Acme", "billingInfo"),
    ("ProvisionTenantRequest", "subscriptionPlan", "GOLD", "subscriptionPlan"),
    ("ProvisionTenantRequest", "requestId", "not-a-uuid", "requestId"),
    ("ProvisionTenantRequest", "requestId", uuid.uuid4().hex, "requestId"),
    ("ProvisionTenantRequest", "requestedAt", _NAIVE, "requestedAt"),
    ("ProvisionTenantRequest", "requestedAt", 1.7e12, "requestedAt"),
    ("ProvisionTenantRequest", "tenantName", 42, "tenantName"),
    ("ProvisionServiceRequest", "slaTier", None, "slaTier"),
    ("ProvisionResourceRequest", "resourceSpec.sizeGb", 20, "resourceSpec['sizeGb']"),
    ("ProvisionResourceRequest", "resourceSpec", {1: "x"}, "resourceSpec"),
    ("ProvisionResourceRequest", "resourceSpec", [("a", "b")], "resourceSpec"),
    ("ProvisioningStepFailed", "run", True, "run"),
    ("ProvisioningStepFailed", "transient", 1, "transient"),
    ("ProvisioningStepFailed", "sequence", 1.0, "sequence"),
    ("ProvisioningStepFailed", "sequence", 2**63, "sequence"),
    ("ProvisioningStepFailed", "attempt", 2**31, "attempt"),
    ("ProvisioningStepFailed", "nextRetryAt", "soon", "nextRetryAt"),
    ("SagaState", "completedSteps", ["a", 3], "completedSteps[1]"),
    ("SagaState", "completedSteps", "validate-entity", "completedSteps"),
    ("SagaState", "attempts.x", True, "attempts['x']"),
    ("StepReply", "outcome", "succeeded", "outcome"),
]


def _changed(name: str, path: str, value: Any) -> dict[str, Any]:
    datum = example(name)
    *parents, leaf = path.split(".")
    target = datum
    for key in parents:
        target = target[key]
    if value is _DELETE:
        del target[leaf]
    else:
        target[leaf] = value
    return datum


@pytest.mark.parametrize(("name", "path", "value", "field"), BAD_DATUMS)
def test_invalid_datum_names_the_field(name: str, path: str, value: Any, field: str) -> None:
    with pytest.raises(InvalidDatum) as raised:
        codec.encode(name, _changed(name, path, value))

    assert raised.value.record_name == name
    assert raised.value.field == field
    assert name in str(raised.value)


@pytest.mark.parametrize("datum", [None, [], "x", 3, b"\x00"])
def test_a_datum_that_is_not_a_mapping_is_invalid(datum: Any) -> None:
    with pytest.raises(InvalidDatum):
        codec.encode("StepReply", datum)


_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True),
    st.text(max_size=20),
    st.binary(max_size=8),
    st.lists(st.text(max_size=5), max_size=3),
    st.dictionaries(st.text(max_size=5), st.one_of(st.text(max_size=5), st.integers()), max_size=3),
)


@settings(max_examples=300, deadline=None)
@given(name=st.sampled_from(RECORDS), data=st.data())
def test_random_datums_encode_or_raise_invalid_datum(name: str, data: st.DataObject) -> None:
    keys = [f["name"] for f in codec.schema(name).schema["fields"]] + ["unexpected"]
    datum = {**EXAMPLES[name], **data.draw(st.dictionaries(st.sampled_from(keys), _VALUES))}

    try:
        encoded = codec.encode(name, datum)
    except InvalidDatum:
        return
    except CodecError as exc:  # pragma: no cover - reported with its type
        pytest.fail(f"{type(exc).__name__} instead of InvalidDatum: {exc}")
    assert codec.decode(encoded).value == datum


def test_an_unchecked_encoding_still_names_the_field_that_does_not_fit() -> None:
    """`checked=False` skips the up-front check, not the explanation of a refusal."""
    wrong_type = {**EXAMPLES["ProvisioningStepFailed"], "attempt": "two"}
    with pytest.raises(InvalidDatum) as refused:
        codec.encode("ProvisioningStepFailed", wrong_type, checked=False)
    assert refused.value.field == "attempt"
    unencodable = {**EXAMPLES["ProvisioningStepFailed"], "reason": "lost \ud800 surrogate"}
    with pytest.raises(InvalidDatum):
        codec.encode("ProvisioningStepFailed", unencodable, checked=False)
    assert codec.decode(codec.encode("ProvisioningStepFailed", EXAMPLES["ProvisioningStepFailed"],
                                     checked=False)).value == EXAMPLES["ProvisioningStepFailed"]
