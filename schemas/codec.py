"""Avro single-object encoding of the contract's records, and the Kafka headers that go with them.

Wire layout of one record (https://avro.apache.org/docs/current/specification/#single-object-encoding)::

    C3 01 | 8 bytes: CRC-64-AVRO fingerprint of the writer schema, little-endian | Avro binary body

Decoded values use plain Avro types: timestamps are epoch-millisecond ints, UUIDs strings, enum
symbols strings, maps dicts, arrays lists. Encoding accepts the same (and aware datetimes and
`uuid.UUID`s).

Every failure on bad input is a `schemas.errors.CodecError` subclass, never a library's
exception: a consumer catches one type and dead-letters.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

from fastavro import schemaless_reader, schemaless_writer

from schemas import registry
from schemas.errors import (
    InvalidDatum,
    MalformedRecord,
    TruncatedRecord,
    UnexpectedRecord,
    UnknownFingerprint,
    UnknownSchema,
)
from schemas.registry import RecordSchema
from schemas.validation import Check, Mismatch, compile_check

__all__ = [
    "CONTENT_TYPE",
    "HEADER_SIZE",
    "MAGIC",
    "WORKFLOW_TYPE_HEADER",
    "Codec",
    "Decoded",
    "RecordSchema",
    "decode",
    "decode_as",
    "encode",
    "event_type",
    "headers_for",
    "record_names",
    "schema",
]

MAGIC = b"\xc3\x01"
HEADER_SIZE = len(MAGIC) + 8
CONTENT_TYPE = "application/vnd.apache.avro+single-object"
"""The `content-type` header: Avro single-object encoding (no registry, no JSON)."""
WORKFLOW_TYPE_HEADER = "workflow-type"
"""Header of every event: the event's `workflowType`, so a subscriber can skip the workflows it
does not care about without decoding their records."""


@dataclass(frozen=True, slots=True)
class Decoded:
    """A decoded record: its short name, its fields, and the writer schema's fingerprint."""

    record_name: str
    value: dict[str, Any]
    fingerprint: int
    """CRC-64-AVRO of the writer schema as a Java long (`parsingFingerprint64`)."""


@dataclass(frozen=True, slots=True)
class _Writer:
    schema: RecordSchema
    header: bytes
    check: Check
    headers: tuple[tuple[str, bytes], ...]


@dataclass(frozen=True, slots=True)
class _Reader:
    record_name: str
    writer: dict[str, Any]
    reader: dict[str, Any] | None  # None: the writer schema is the current one
    fingerprint: int


class Codec:
    """Encodes with the `current` schemas; decodes records written with those or with any of
    `other_versions` (released sets, older or newer), always into the current shape.

    The module-level functions use `default_codec()`; build one yourself only to work with
    another schema set (tests of an evolution, tools).
    """

    def __init__(
        self,
        current: Mapping[str, RecordSchema],
        other_versions: Iterable[RecordSchema] = (),
    ) -> None:
        self._writers = {name: _writer(s) for name, s in current.items()}
        self._readers: dict[bytes, _Reader] = {}
        for other in other_versions:
            now = current.get(other.name)
            if now is not None:  # a record that no longer exists has no current shape
                self._readers[other.fingerprint_bytes] = _Reader(
                    other.name, other.plain, now.plain, other.java_fingerprint
                )
        for s in current.values():  # last: an identical version needs no resolution
            self._readers[s.fingerprint_bytes] = _Reader(s.name, s.plain, None, s.java_fingerprint)

    def record_names(self) -> frozenset[str]:
        return frozenset(self._writers)

    def schema(self, record_name: str) -> RecordSchema:
        return self._writer(record_name).schema

    def encode(self, record_name: str, datum: Mapping[str, Any], *,
               checked: bool = True) -> bytes:
        """`checked=False` skips the up-front check of the datum (unknown keys, floats for
        ints, malformed UUIDs, naive datetimes: what fastavro lets through or explains badly)
        and runs it only when fastavro refuses the datum, to name the culprit. For data the
        caller's own types make well-formed; about a third cheaper."""
        writer = self._writer(record_name)
        if checked:
            self._check(writer, record_name, datum)
        out = io.BytesIO()
        out.write(writer.header)
        try:
            schemaless_writer(out, writer.schema.parsed, datum)
        except Exception as exc:  # never leak fastavro's errors
            if not checked:
                self._check(writer, record_name, datum)
            raise InvalidDatum(record_name, "", f"{type(exc).__name__}: {exc}") from exc
        return out.getvalue()

    @staticmethod
    def _check(writer: _Writer, record_name: str, datum: Mapping[str, Any]) -> None:
        try:
            writer.check(datum)
        except Mismatch as exc:
            raise InvalidDatum(record_name, exc.path, exc.problem) from None

    def decode(self, data: bytes) -> Decoded:
        return self._decode(data, self._reader(data))

    def fingerprints(self, record_name: str) -> frozenset[bytes]:
        """The header fingerprints (bytes 2..9) under which `record_name` can be read: its
        current schema and every released one."""
        return frozenset(f for f, r in self._readers.items() if r.record_name == record_name)

    def record_name_of(self, data: bytes) -> str:
        """The record the bytes hold, from their header alone (nothing decoded)."""
        return self._reader(data).record_name

    def decode_as(self, data: bytes, record_name: str) -> Decoded:
        self._writer(record_name)
        reader = self._reader(data)
        if reader.record_name != record_name:  # checked before decoding the body: cheap
            raise UnexpectedRecord(record_name, reader.record_name)
        return self._decode(data, reader)

    def event_type(self, record_name: str) -> str:
        return self._writer(record_name).schema.name

    def headers_for(
        self, record_name: str, traceparent: str | None = None, *,
        workflow_type: str | None = None,
    ) -> list[tuple[str, bytes]]:
        headers = list(self._writer(record_name).headers)
        if workflow_type is not None:
            headers.append((WORKFLOW_TYPE_HEADER, workflow_type.encode("utf-8", "replace")))
        if traceparent:
            headers.append(("traceparent", traceparent.encode("ascii", "replace")))
        return headers

    def _writer(self, record_name: str) -> _Writer:
        try:
            return self._writers[record_name]
        except (KeyError, TypeError):
            raise UnknownSchema(str(record_name)) from None

    def _reader(self, data: Any) -> _Reader:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise MalformedRecord(f"expected bytes, got {type(data).__name__}")
        if len(data) < HEADER_SIZE:
            raise TruncatedRecord(f"{len(data)} bytes, shorter than the {HEADER_SIZE}-byte header")
        if data[:2] != MAGIC:
            raise MalformedRecord(f"no single-object marker C3 01 (starts {bytes(data[:2]).hex()})")
        fingerprint = bytes(data[2:HEADER_SIZE])
        try:
            return self._readers[fingerprint]
        except KeyError:
            raise UnknownFingerprint(fingerprint) from None

    @staticmethod
    def _decode(data: bytes | bytearray | memoryview, reader: _Reader) -> Decoded:
        stream = io.BytesIO(data)
        stream.seek(HEADER_SIZE)
        try:
            value = schemaless_reader(stream, reader.writer, reader.reader)
        except Exception as exc:  # EOFError, IndexError, UnicodeDecodeError, ...: all malformed
            raise MalformedRecord(
                f"{reader.record_name} body does not decode: {type(exc).__name__}: {exc}"
            ) from exc
        if not isinstance(value, dict):  # a record schema always reads as a dict
            raise MalformedRecord(f"{reader.record_name} body is not a record")
        if stream.tell() != len(data):
            raise MalformedRecord(
                f"{reader.record_name} body ends at byte {stream.tell()} of {len(data)}: "
                "trailing bytes"
            )
        return Decoded(reader.record_name, value, reader.fingerprint)


def _writer(schema: RecordSchema) -> _Writer:
    return _Writer(
        schema=schema,
        header=MAGIC + schema.fingerprint_bytes,
        check=compile_check(schema.schema),
        headers=(
            ("event-type", schema.name.encode()),
            ("content-type", CONTENT_TYPE.encode()),
        ),
    )


@cache
def default_codec() -> Codec:
    """The codec of this package's schemas; it also reads records of every released set."""
    released = [s for release in registry.released().values() for s in release.values()]
    return Codec(registry.current(), released)


def encode(record_name: str, datum: Mapping[str, Any], *, checked: bool = True) -> bytes:
    """Single-object encoding of `datum` as the current `record_name` schema.

    Raises `UnknownSchema` for a name that is not a top-level record, `InvalidDatum` (naming
    the field) for a datum that does not fit. `checked=False`: see `Codec.encode`.
    """
    return default_codec().encode(record_name, datum, checked=checked)


def decode(data: bytes) -> Decoded:
    """The record in `data`, read with the current schema of its type.

    The writer schema is found by fingerprint among the current and released schemas. Raises
    `TruncatedRecord`, `MalformedRecord` or `UnknownFingerprint`.
    """
    return default_codec().decode(data)


def fingerprints(record_name: str) -> frozenset[bytes]:
    """See `Codec.fingerprints`."""
    return default_codec().fingerprints(record_name)


def record_name_of(data: bytes) -> str:
    """The record name of single-object encoded bytes, read from the header only. Raises
    `MalformedRecord` or `UnknownFingerprint` like `decode`."""
    return default_codec().record_name_of(data)


def decode_as(data: bytes, record_name: str) -> Decoded:
    """Like `decode`, but raises `UnexpectedRecord` unless the record is a `record_name`."""
    return default_codec().decode_as(data, record_name)


def event_type(record_name: str) -> str:
    """The `event-type` header value for a record: its short name, e.g. `ProvisioningSucceeded`."""
    return default_codec().event_type(record_name)


def headers_for(
    record_name: str, traceparent: str | None = None, *, workflow_type: str | None = None
) -> list[tuple[str, bytes]]:
    """Kafka headers of a record: `event-type`, `content-type`, then `workflow-type` and
    `traceparent` if given (events carry `workflow-type`: their `workflowType` field)."""
    return default_codec().headers_for(record_name, traceparent, workflow_type=workflow_type)


def record_names() -> frozenset[str]:
    """Names of the top-level records this codec encodes."""
    return default_codec().record_names()


def schema(record_name: str) -> RecordSchema:
    """The current schema of a record: self-contained JSON, fingerprint, fastavro-parsed."""
    return default_codec().schema(record_name)
