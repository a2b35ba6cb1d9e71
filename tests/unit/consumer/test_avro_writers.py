"""The compiled writers of saga records write what fastavro writes, and refuse what it refuses.

fastavro is the reference here: for every saga type the worker writes, random values (lone
surrogates and integers beyond 64 bits among them) either encode to the same bytes through the
compiled writer (`wire.encode`) as through `to_record` and fastavro, or fail on both paths.
"""

from __future__ import annotations

import dataclasses
import typing

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from saga_values import instances

from consumer import avro_writers, wire
from provisioning.errors import CodecError
from sagas import SagaState, events
from sagas.effects import ProvisioningCompleted, ProvisioningFailed, ProvisioningStarted
from schemas import codec
from schemas.examples import EXAMPLES

EVENTS = [cls for cls in vars(events).values()
          if isinstance(cls, type) and dataclasses.is_dataclass(cls)
          and issubclass(cls, events.SagaEvent) and cls is not events.SagaEvent]
# Every record the worker writes by `wire.encode` on its hot path: events, replies, the state.
WRITTEN = [SagaState, ProvisioningStarted, ProvisioningCompleted, ProvisioningFailed, *EVENTS]

def _by_fastavro(obj: typing.Any) -> bytes | type[Exception]:
    try:
        return codec.encode(type(obj).__name__, wire.to_record(obj), checked=False)
    except CodecError:
        return CodecError


def _by_wire(obj: typing.Any) -> bytes | type[Exception]:
    try:
        return wire.encode(obj)
    except CodecError:
        return CodecError


def test_every_record_the_worker_writes_has_a_compiled_writer() -> None:
    missing = [cls.__name__ for cls in WRITTEN if wire._writer(cls) is None]
    assert missing == []


@pytest.mark.parametrize("cls", WRITTEN, ids=lambda cls: cls.__name__)
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_compiled_writer_writes_what_fastavro_writes(cls: type, data: st.DataObject) -> None:
    obj = data.draw(instances(cls))
    assert _by_wire(obj) == _by_fastavro(obj), wire._writer(cls).source


@pytest.mark.parametrize(("n", "encoded"), [
    # The zig-zag varints of the Avro specification's table, and the ends of a long.
    (0, "00"), (-1, "01"), (1, "02"), (-2, "03"), (2, "04"), (-64, "7f"), (64, "8001"),
    (8191, "fe7f"), (8192, "808001"), (-8193, "818001"),
    ((1 << 63) - 1, "feffffffffffffffff01"), (-(1 << 63), "ffffffffffffffffff01"),
])
def test_longs_are_written_as_the_specification_says(n: int, encoded: str) -> None:
    assert avro_writers.write_long(n).hex() == encoded


@pytest.mark.parametrize("n", [1 << 63, -(1 << 63) - 1])
def test_a_long_beyond_64_bits_is_refused(n: int) -> None:
    with pytest.raises(OverflowError):
        avro_writers.write_long(n)


@pytest.mark.parametrize("field_type", [
    {"type": "enum", "name": "E", "symbols": ["A"]},
    ["null", "string", "long"],
    {"type": "record", "name": "R", "fields": []},
    {"type": "map", "values": {"type": "array", "items": "string"}},
    "double",
])
def test_a_type_the_writers_do_not_compile_leaves_the_record_to_fastavro(field_type) -> None:
    schema = {"type": "record", "name": "X", "fields": [{"name": "f", "type": field_type}]}
    assert avro_writers.compile_writer(schema, {"f": "f"}, header=b"") is None


def test_a_record_field_without_an_attribute_leaves_the_record_to_fastavro() -> None:
    schema = {"type": "record", "name": "X", "fields": [{"name": "f", "type": "string"}]}
    assert avro_writers.compile_writer(schema, {}, header=b"") is None


def test_a_value_the_writer_cannot_write_is_explained_by_the_generic_path() -> None:
    state = wire.from_record(SagaState, EXAMPLES["SagaState"])
    broken = dataclasses.replace(state, workflow_type=None)  # a string field without one
    with pytest.raises(CodecError, match="workflowType"):
        wire.encode(broken)
