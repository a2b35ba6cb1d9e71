"""Errors of the contract package. Every codec failure is a `CodecError`: a consumer catches
that one type. Every error of the package is a `SchemaError`.

Defined here, importing nothing else of the service: other services vendor `schemas/` alone.
The service builds on these (`provisioning.errors.CodecError` is `CodecError`), never the
other way round.
"""

from __future__ import annotations


class SchemaError(Exception):
    """Base of every error the contract package raises on purpose."""


class SchemaDefinitionError(SchemaError):
    """An `.avsc` file is unreadable or inconsistent: the package itself is broken."""


class CodecError(SchemaError):
    """Bytes could not be encoded to, or decoded from, the Avro wire format."""


class UnknownSchema(CodecError):
    """The record name is not a top-level record of the contract."""

    def __init__(self, record_name: str) -> None:
        super().__init__(f"no top-level record named {record_name!r} in the schemas")
        self.record_name = record_name


class InvalidDatum(CodecError):
    """A datum does not fit its record's schema; `field` is the dotted path of the culprit."""

    def __init__(self, record_name: str, field: str, problem: str) -> None:
        where = f"{record_name}.{field}" if field else record_name
        super().__init__(f"cannot encode {where}: {problem}")
        self.record_name = record_name
        self.field = field
        self.problem = problem


class MalformedRecord(CodecError):
    """The bytes are not a single-object encoded record this codec can read."""


class TruncatedRecord(MalformedRecord):
    """The bytes end before the header does."""


class UnknownFingerprint(CodecError):
    """The writer schema is not one of ours (a newer or foreign producer).

    Not a `MalformedRecord`: the bytes may be fine, we just lack the writer schema.
    """

    def __init__(self, fingerprint: bytes) -> None:
        java_long = int.from_bytes(fingerprint, "little", signed=True)
        super().__init__(
            f"unknown writer schema fingerprint {fingerprint.hex()} "
            f"(CRC-64-AVRO as a Java long: {java_long})"
        )
        self.fingerprint = fingerprint


class UnexpectedRecord(CodecError):
    """The bytes hold a valid record, but not of the type the caller expected."""

    def __init__(self, expected: str, actual: str) -> None:
        super().__init__(f"expected a {expected} record, got {actual}")
        self.expected = expected
        self.actual = actual
