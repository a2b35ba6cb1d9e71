"""Avro writers compiled per saga type: a dataclass straight to its record's bytes.

Encoding is the worker's largest single cost per saga (every event and state snapshot; measured
on the no-op bench: a third of the poll loop's CPU). The generic path builds a dict of the
dataclass (`wire.to_record`) and hands it to fastavro, which walks the schema for every record
and resolves every `["null", X]` union by validating the value against each branch. Here the
schema is walked once per type instead, into the source of one Python function that reads the
dataclass's attributes in the record's field order and appends their Avro binary encoding
(https://avro.apache.org/docs/1.11.1/specification/#binary-encoding): zig-zag varints for
`int` and `long`, length-prefixed UTF-8 for `string`, one block for a non-empty map or array.

Only the types the saga records use are compiled (string, int, long, boolean, null-unions of
those, maps and arrays of them); `compile_writer` returns None for any other schema and the
caller keeps the generic path. A compiled writer raises on any value it cannot write as the
schema says (a wrong type, a lone surrogate, an integer beyond 64 bits); the caller then goes
the generic way, which explains the failure. Its bytes equal fastavro's for every value both
accept (property test: `tests/unit/consumer/test_avro_writers.py`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

_LONG_MIN, _LONG_MAX = -(1 << 63), (1 << 63) - 1
# Zig-zag varints of the small numbers (string lengths, counts, attempts, sequence numbers).
_SMALL_LIMIT = 1 << 13


def _varint(zigzag: int) -> bytes:
    out = bytearray()
    while zigzag > 0x7F:
        out.append((zigzag & 0x7F) | 0x80)
        zigzag >>= 7
    out.append(zigzag)
    return bytes(out)


_SMALL = tuple(_varint((n << 1) ^ (n >> 63)) for n in range(_SMALL_LIMIT)) + tuple(
    _varint((n << 1) ^ (n >> 63)) for n in range(-_SMALL_LIMIT, 0))


# The large numbers written lately: timestamps, which repeat within a millisecond across a
# transition's events and state (the clock is read once per input). Emptied when full.
_RECENT: dict[int, bytes] = {}
_RECENT_LIMIT = 4096


def write_long(n: int) -> bytes:
    """`n` as Avro's zig-zag varint (int and long alike); OverflowError beyond 64 bits."""
    if -_SMALL_LIMIT <= n < _SMALL_LIMIT:
        return _SMALL[n]  # negative n indexes the table's second half
    found = _RECENT.get(n)
    if found is None:
        if not _LONG_MIN <= n <= _LONG_MAX:
            raise OverflowError(f"{n} does not fit an Avro long")
        if len(_RECENT) >= _RECENT_LIMIT:
            _RECENT.clear()
        found = _RECENT[n] = _varint((n << 1) ^ (n >> 63))
    return found


PRIMITIVES = ("string", "int", "long", "boolean")


def compile_writer(schema: Mapping[str, Any], attributes: Mapping[str, str], header: bytes,
                   name: str = "write") -> Callable[[Any], bytes] | None:
    """A function `obj -> header + Avro body` for the record `schema`, reading each field
    from the attribute `attributes[field name]` of `obj`; None when the schema holds a type
    this module does not compile or a field without an attribute."""
    lines = ["def {name}(o):", "    buf = bytearray(HEADER)", "    add = buf.extend"]
    for field in schema["fields"]:
        attribute = attributes.get(field["name"])
        body = _field(field["type"], f"o.{attribute}") if attribute else None
        if body is None:
            return None
        lines += ["    " + line for line in body]
    lines.append("    return bytes(buf)")
    source = "\n".join(lines).replace("{name}", name)
    namespace: dict[str, Any] = {"HEADER": header, "write_long": write_long,
                                 "SMALL": _SMALL, "LIMIT": _SMALL_LIMIT}
    exec(compile(source, f"<avro writer of {schema.get('name')}>", "exec"), namespace)  # noqa: S102
    writer: Callable[[Any], bytes] = namespace[name]
    writer.source = source  # type: ignore[attr-defined]  # shown by tests when bytes differ
    return writer


def _field(avro_type: Any, value: str) -> list[str] | None:
    """Source lines appending the encoding of `value` (an expression) of type `avro_type`."""
    kind = kind_of(avro_type)
    if kind in PRIMITIVES:
        return [f"v = {value}", *_primitive(kind, "v")]
    if kind == "null-union":
        branch = kind_of(avro_type[1])
        if branch not in PRIMITIVES:
            return None
        return [f"v = {value}",
                "if v is None:",
                "    add(b'\\x00')",
                "else:",
                *("    " + line for line in _union_branch(branch, "v"))]
    if kind in ("map", "array"):
        items = kind_of(avro_type["values" if kind == "map" else "items"])
        if items not in PRIMITIVES:
            return None
        loop = ("for k, x in v.items():" if kind == "map" else "for x in v:")
        keys = _primitive("string", "k") if kind == "map" else []
        return [f"v = {value}",
                "if len(v):",
                "    add(write_long(len(v)))",
                f"    {loop}",
                *("        " + line for line in keys),
                *("        " + line for line in _primitive(items, "x")),
                "add(b'\\x00')"]
    return None


def _union_branch(kind: str, value: str) -> list[str]:
    # fastavro's union resolution refuses a bool for a long (and any non-str for a string):
    # so does this writer, which then leaves the value to the generic path.
    guard = [f"if {value} is True or {value} is False:", "    raise TypeError('bool')"] \
        if kind in ("int", "long") else []
    return [*guard, "add(b'\\x02')", *_primitive(kind, value)]


def _primitive(kind: str, value: str) -> list[str]:
    if kind == "string":
        # A length below the table's limit is looked up here: no call (a third faster).
        return [f"b = {value}.encode()", "n = len(b)",
                "add(SMALL[n] if n < LIMIT else write_long(n))", "add(b)"]
    if kind == "boolean":
        return [f"if {value} is True:", "    add(b'\\x01')",
                f"elif {value} is False:", "    add(b'\\x00')",
                "else:", "    raise TypeError('not a bool')"]
    return [f"add(write_long({value}.__index__()))"]  # int, long: no float, no str


def kind_of(avro_type: Any) -> str | None:
    """What the compiled writers and readers make of a field's type: a primitive's name, "map",
    "array" or "null-union" (`["null", X]`); None for any other type."""
    if isinstance(avro_type, str):
        return avro_type if avro_type in PRIMITIVES else None
    if isinstance(avro_type, list):
        if len(avro_type) == 2 and avro_type[0] == "null":
            return "null-union"
        return None
    if isinstance(avro_type, dict):
        kind = avro_type.get("type")
        if kind in ("map", "array"):
            return kind
        if kind in ("string", "long", "int") and avro_type.get("logicalType") in (
                None, "uuid", "timestamp-millis"):
            return kind  # a uuid is written as its string, a timestamp as its long
    return None
