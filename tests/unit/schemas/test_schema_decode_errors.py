"""Whatever bytes arrive, decoding raises a CodecError subclass and nothing else."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import codec
from schemas.errors import CodecError, MalformedRecord, TruncatedRecord, UnknownFingerprint
from schemas.examples import EXAMPLES

RECORDS = sorted(codec.record_names())
VALID = {name: codec.encode(name, EXAMPLES[name]) for name in RECORDS}
HEADERS = sorted({data[:10] for data in VALID.values()})


def _decode_or_codec_error(data: Any) -> None:
    """Decoding may succeed (a mutation can be valid Avro); if it fails, only as a CodecError."""
    with contextlib.suppress(CodecError):
        codec.decode(data)


@pytest.mark.parametrize("data", [b"", b"\xc3", b"\xc3\x01", b"\xc3\x01" + b"\x00" * 7])
def test_shorter_than_the_header_is_truncated(data: bytes) -> None:
    with pytest.raises(TruncatedRecord):
        codec.decode(data)


@pytest.mark.parametrize("marker", [b"\x00\x00", b"\xc3\x00", b"\x01\xc3", b"{\""])
def test_without_the_marker_is_malformed(marker: bytes) -> None:
    data = VALID["StepReply"]

    with pytest.raises(MalformedRecord, match="marker"):
        codec.decode(marker + data[2:])


def test_an_unknown_fingerprint_is_named_in_hex() -> None:
    data = b"\xc3\x01" + bytes.fromhex("0123456789abcdef") + VALID["StepReply"][10:]

    with pytest.raises(UnknownFingerprint, match="0123456789abcdef") as raised:
        codec.decode(data)

    assert raised.value.fingerprint == bytes.fromhex("0123456789abcdef")


def test_trailing_bytes_are_malformed() -> None:
    with pytest.raises(MalformedRecord, match="trailing"):
        codec.decode(VALID["StepReply"] + b"\x00")


@pytest.mark.parametrize("name", RECORDS)
def test_every_cut_of_the_body_is_malformed(name: str) -> None:
    data = VALID[name]
    for end in range(10, len(data)):
        with pytest.raises(MalformedRecord):
            codec.decode(data[:end])


def test_header_of_one_record_with_body_of_another_is_malformed() -> None:
    data = VALID["SagaState"][:10] + VALID["ProvisioningStarted"][10:]

    with pytest.raises(MalformedRecord):
        codec.decode(data)


def test_invalid_utf8_in_a_string_is_malformed() -> None:
    header = VALID["ProvisioningStarted"][:10]
    body = b"\x04\xff\xfe" + b"\x02\x02"  # requestId: 2 bytes that are not UTF-8

    with pytest.raises(MalformedRecord, match="UnicodeDecodeError"):
        codec.decode(header + body)


def test_an_enum_index_out_of_range_is_malformed() -> None:
    execute = codec.encode("StepReply", {**EXAMPLES["StepReply"], "action": "EXECUTE"})
    compensate = codec.encode("StepReply", {**EXAMPLES["StepReply"], "action": "COMPENSATE"})
    (index,) = [i for i, (a, b) in enumerate(zip(execute, compensate, strict=True)) if a != b]
    data = bytearray(execute)
    data[index] = 0x7E  # zigzag 63: StepAction has 2 symbols

    with pytest.raises(MalformedRecord):
        codec.decode(bytes(data))


@pytest.mark.parametrize("data", [None, "c3 01", 42, ["\xc3"]])
def test_not_bytes_at_all_is_malformed(data: Any) -> None:
    with pytest.raises(MalformedRecord):
        codec.decode(data)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=64))
def test_random_bytes(data: bytes) -> None:
    _decode_or_codec_error(data)


@settings(max_examples=500, deadline=None)
@given(st.sampled_from(HEADERS), st.binary(max_size=700))
def test_random_body_behind_a_known_header(header: bytes, body: bytes) -> None:
    _decode_or_codec_error(header + body)


@settings(max_examples=1000, deadline=None)
@given(
    st.sampled_from(RECORDS),
    st.lists(
        st.tuples(
            st.sampled_from(["flip", "insert", "delete"]),
            st.integers(min_value=0, max_value=10_000),
            st.integers(min_value=0, max_value=255),
        ),
        min_size=1,
        max_size=4,
    ),
)
def test_mutations_of_valid_records(name: str, mutations: list[tuple[str, int, int]]) -> None:
    data = bytearray(VALID[name])
    for kind, position, byte in mutations:
        index = position % (len(data) + 1)
        if kind == "insert":
            data.insert(index, byte)
        elif index < len(data):
            if kind == "flip":
                data[index] ^= byte or 1
            else:
                del data[index]
    _decode_or_codec_error(bytes(data))


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(RECORDS), st.sampled_from(RECORDS), st.binary(max_size=700))
def test_decode_as_raises_only_codec_errors(name: str, expected: str, tail: bytes) -> None:
    with contextlib.suppress(CodecError):
        codec.decode_as(VALID[name][: 10 + len(tail) % 50] + tail, expected)
