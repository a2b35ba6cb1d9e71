"""The compiled reader of saga states reads what fastavro reads, and leaves the rest to it.

fastavro (through `wire.from_record`) is the reference: every state the worker can write reads
back equal through both paths, and for bytes damaged at random the compiled reader either
refuses them (the generic path then decides) or reads exactly what the generic path reads.
"""

from __future__ import annotations

import dataclasses
import io

import pytest
from fastavro import schemaless_writer
from hypothesis import given, settings
from hypothesis import strategies as st
from saga_values import instances

from consumer import avro_readers, wire
from provisioning.errors import CodecError
from sagas import SagaState
from schemas import codec, registry
from schemas.examples import EXAMPLES

EXAMPLE = wire.from_record(SagaState, EXAMPLES["SagaState"])
COMPILED = wire._reader(SagaState)


def _generic(data: bytes) -> SagaState | type[Exception]:
    try:
        return wire.from_record(SagaState, codec.decode_as(data, "SagaState").value)
    except (CodecError, ValueError, TypeError):  # not a record, or not a SagaState
        return CodecError


def _encodable(state: SagaState) -> bytes | None:
    try:
        return wire.encode(state)
    except CodecError:
        return None


def test_the_state_has_a_compiled_reader() -> None:
    assert COMPILED is not None
    assert COMPILED[0] == codec.MAGIC + codec.schema("SagaState").fingerprint_bytes


@settings(max_examples=200, deadline=None)
@given(instances(SagaState))
def test_every_state_reads_back_equal_through_both_paths(state: SagaState) -> None:
    data = _encodable(state)
    if data is None:
        return  # a state Avro cannot hold (a lone surrogate, a number beyond 64 bits)
    assert COMPILED[1](data) == state
    assert wire.decode_as(SagaState, data) == state
    assert _generic(data) == state


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_damaged_bytes_are_read_as_fastavro_reads_them_or_left_to_it(data: st.DataObject) -> None:
    good = bytearray(wire.encode(data.draw(instances(SagaState).filter(
        lambda s: _encodable(s) is not None))))
    damage = data.draw(st.sampled_from(["flip", "truncate", "extend", "set"]))
    if damage == "flip":
        at = data.draw(st.integers(10, len(good) - 1))
        good[at] ^= data.draw(st.integers(1, 255))
    elif damage == "truncate":
        del good[data.draw(st.integers(10, len(good) - 1)):]
    elif damage == "extend":
        good += data.draw(st.binary(min_size=1, max_size=8))
    else:
        at = data.draw(st.integers(10, len(good) - 1))
        good[at] = data.draw(st.sampled_from([0x00, 0x01, 0x02, 0x03, 0x7F, 0x80, 0xFF]))
    damaged = bytes(good)
    try:
        read = COMPILED[1](damaged)
    except Exception:  # noqa: BLE001 - refused: the generic path decides, checked below
        read = None
    if read is not None:
        assert _generic(damaged) == read
    expected = _generic(damaged)
    if expected is CodecError:
        with pytest.raises((CodecError, ValueError, TypeError)):
            wire.decode_as(SagaState, damaged)
    else:
        assert wire.decode_as(SagaState, damaged) == expected


@pytest.mark.parametrize(("encoded", "n"), [
    # The Avro specification's zig-zag table, and the ends of a long.
    ("00", 0), ("01", -1), ("02", 1), ("03", -2), ("04", 2), ("7f", -64), ("8001", 64),
    ("feffffffffffffffff01", (1 << 63) - 1), ("ffffffffffffffffff01", -(1 << 63)),
])
def test_varints_are_read_as_the_specification_says(encoded: str, n: int) -> None:
    assert avro_readers.read_long(bytes.fromhex(encoded), 0) == (n, len(encoded) // 2)


@pytest.mark.parametrize("encoded", ["ffffffffffffffffffff01", "ffffffffffffffffff7f"])
def test_a_varint_beyond_64_bits_is_left_to_the_generic_path(encoded: str) -> None:
    with pytest.raises(avro_readers.Unreadable):
        avro_readers.read_long(bytes.fromhex(encoded), 0)


def test_a_state_of_an_older_schema_is_read_the_generic_way() -> None:
    old = [s for release in registry.released().values()
           for name, s in release.items() if name == "SagaState"
           and s.fingerprint_bytes != codec.schema("SagaState").fingerprint_bytes]
    assert old, "a released SagaState schema older than the current one"
    record = {k: v for k, v in EXAMPLES["SagaState"].items()
              if k in {f["name"] for f in old[0].schema["fields"]}}
    out = io.BytesIO()
    out.write(codec.MAGIC + old[0].fingerprint_bytes)
    schemaless_writer(out, old[0].parsed, record)
    assert wire.decode_as(SagaState, out.getvalue()) == _generic(out.getvalue())
    assert dataclasses.is_dataclass(wire.decode_as(SagaState, out.getvalue()))
