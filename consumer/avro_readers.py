"""Avro readers compiled per saga type: a record's bytes straight to the dataclass.

The counterpart of `consumer/avro_writers.py` for the one record the worker reads in bulk, the
saga's state: a restore decodes every running saga's snapshot, and a finished saga kept encoded
is decoded when something asks for it. The generic path (fastavro into a dict, then
`wire.from_record`) walks the schema for every record; here it is walked once into the source
of a function that reads the fields in order and builds the dataclass.

A compiled reader is strict: any byte sequence it does not read exactly as the schema says
(a truncated body, a negative length, a union branch other than null and the value, a
negative block count, a varint of more than ten bytes, invalid UTF-8, trailing bytes) makes it
raise, and the caller goes the generic way, which reads what Avro allows and explains what it
refuses. Whatever it reads, fastavro reads the same (property test:
`tests/unit/consumer/test_avro_readers.py`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from consumer.avro_writers import PRIMITIVES, kind_of


class Unreadable(ValueError):
    """Bytes the compiled reader leaves to the generic path."""


def read_long(data: bytes, pos: int) -> tuple[int, int]:
    """The zig-zag varint at `pos` and the position after it."""
    byte = data[pos]
    n, shift, pos = byte & 0x7F, 7, pos + 1
    while byte & 0x80:
        if shift > 63:
            raise Unreadable("a varint of more than ten bytes")
        byte = data[pos]
        pos += 1
        n |= (byte & 0x7F) << shift
        shift += 7
    if n >> 64:
        raise Unreadable("a varint beyond 64 bits")
    return (n >> 1) ^ -(n & 1), pos


def compile_reader(schema: Mapping[str, Any],
                   attributes: Mapping[str, tuple[str, Callable[[Any], Any] | None]],
                   build: Callable[..., Any], offset: int,
                   name: str = "read") -> Callable[[bytes], Any] | None:
    """A function `bytes -> build(**fields)` reading the record `schema` from `offset` to the
    end. A record field named in `attributes` becomes that keyword, its value (not null)
    passed through the converter given with it; the other fields are read and dropped.
    None when the schema holds a type this module does not compile."""
    lines = ["def {name}(data):", "    size = len(data)", f"    pos = {offset}", "    f = {}"]
    namespace: dict[str, Any] = {"build": build, "read_long": read_long,
                                 "Unreadable": Unreadable}
    for i, field in enumerate(schema["fields"]):
        attribute, convert = attributes.get(field["name"], (None, None))
        body = _field(field["type"], "v")
        if body is None:
            return None
        lines += ["    " + line for line in body]
        if attribute is None:
            continue
        if convert is None:
            lines.append(f"    f[{attribute!r}] = v")
        else:
            namespace[f"convert_{i}"] = convert
            lines.append(f"    f[{attribute!r}] = v if v is None else convert_{i}(v)")
    lines += ["    if pos != size:", "        raise Unreadable('trailing bytes')",
              "    return build(**f)"]
    source = "\n".join(lines).replace("{name}", name)
    exec(compile(source, f"<avro reader of {schema.get('name')}>", "exec"), namespace)  # noqa: S102
    reader: Callable[[bytes], Any] = namespace[name]
    reader.source = source  # type: ignore[attr-defined]
    return reader


def _varint(target: str) -> list[str]:
    """Lines reading a varint into `target`: one byte inline, more through `read_long`."""
    return ["b = data[pos]",
            "if b < 0x80:",
            f"    {target} = (b >> 1) ^ -(b & 1)",
            "    pos += 1",
            "else:",
            f"    {target}, pos = read_long(data, pos)"]


def _primitive(kind: str, target: str) -> list[str]:
    if kind == "string":
        return [*_varint("n"),
                "end = pos + n",
                "if n < 0 or end > size:",
                "    raise Unreadable('a string beyond the record')",
                f"{target} = data[pos:end].decode()",
                "pos = end"]
    if kind == "boolean":
        return ["b = data[pos]",
                "if b > 1:",
                "    raise Unreadable('a boolean other than 0 or 1')",
                f"{target} = b == 1",
                "pos += 1"]
    return _varint(target)  # int, long


def _field(avro_type: Any, target: str) -> list[str] | None:
    kind = kind_of(avro_type)
    if kind in PRIMITIVES:
        return _primitive(kind, target)
    if kind == "null-union":
        branch = kind_of(avro_type[1])
        if branch not in PRIMITIVES:
            return None
        return ["b = data[pos]",
                "if b == 0:",
                f"    {target} = None",
                "    pos += 1",
                "elif b == 2:",
                "    pos += 1",
                *("    " + line for line in _primitive(branch, target)),
                "else:",
                "    raise Unreadable('a union branch that is not there')"]
    if kind in ("map", "array"):
        items = kind_of(avro_type["values" if kind == "map" else "items"])
        if items not in PRIMITIVES:
            return None
        entry = ([*_primitive("string", "k"), *_primitive(items, "x"), "c[k] = x"]
                 if kind == "map" else [*_primitive(items, "x"), "c.append(x)"])
        return [f"c = {'{}' if kind == 'map' else '[]'}",
                "while True:",
                *("    " + line for line in _varint("count")),
                "    if count == 0:",
                "        break",
                "    if count < 0:",  # a block with its byte size: left to fastavro
                "        raise Unreadable('a block with a byte count')",
                "    for _i in range(count):",
                *("        " + line for line in entry),
                f"{target} = c"]
    return None

