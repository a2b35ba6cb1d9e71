"""Parsing Canonical Form and the CRC-64-AVRO (64-bit Rabin) fingerprint of a schema.

Both follow the Avro specification, so the fingerprint is the one Java's
`SchemaNormalization.parsingFingerprint64` computes for the same schema. The single-object
header carries it as 8 little-endian bytes.
"""

from __future__ import annotations

from typing import Any

from fastavro.schema import to_parsing_canonical_form

# The fingerprint of the empty input, and the polynomial of the table (Avro specification).
EMPTY = 0xC15D213AA4D7A795
_MASK64 = (1 << 64) - 1


def _table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        fp = byte
        for _ in range(8):
            fp = (fp >> 1) ^ (EMPTY & -(fp & 1))
        table.append(fp & _MASK64)
    return tuple(table)


_TABLE = _table()


def crc64_avro(data: bytes) -> int:
    """The CRC-64-AVRO fingerprint of `data`, as an unsigned 64-bit integer."""
    fp = EMPTY
    for byte in data:
        fp = (fp >> 8) ^ _TABLE[(fp ^ byte) & 0xFF]
    return fp


def canonical_form(schema: Any) -> str:
    """The Parsing Canonical Form of a self-contained schema (JSON value)."""
    return to_parsing_canonical_form(schema)


def schema_fingerprint(schema: Any) -> int:
    """CRC-64-AVRO of the schema's Parsing Canonical Form (unsigned)."""
    return crc64_avro(canonical_form(schema).encode("utf-8"))


def to_wire(fingerprint: int) -> bytes:
    """The 8 bytes of the single-object header: little-endian."""
    return fingerprint.to_bytes(8, "little")


def as_java_long(fingerprint: int) -> int:
    """The fingerprint as Java prints it (a signed long)."""
    return int.from_bytes(to_wire(fingerprint), "little", signed=True)
