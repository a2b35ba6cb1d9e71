"""Strict checks of a datum against a schema, compiled once per record into closures.

fastavro's writer alone lets some mistakes through silently: it drops unknown keys (a misspelt
optional field becomes null), truncates floats written as longs, takes `True` for an int and
any string for a UUID. These checks refuse all of that and name the field at fault.

Accepted Python values: str, int, float, bool, None, mappings (records, maps), lists or tuples
(arrays), enum symbols as str; for `timestamp-millis` an int of epoch milliseconds or an aware
datetime; for `uuid` a canonical UUID string or a `uuid.UUID`.

The happy path builds no strings: a failing check raises `Mismatch`, and each enclosing record,
map or array adds its part of the field path on the way out.
"""

from __future__ import annotations

import datetime
import re
import uuid
from collections.abc import Callable, Mapping
from typing import Any

Check = Callable[[Any], None]
"""Raises `Mismatch` if the value does not fit."""

_LONG = (-(2**63), 2**63 - 1)
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_MISSING = object()


class Mismatch(Exception):
    """A value does not fit its schema. `path` is the dotted field path, `problem` says why."""

    def __init__(self, problem: str, path: str = "") -> None:
        super().__init__(f"{path}: {problem}" if path else problem)
        self.problem = problem
        self.path = path

    def within(self, segment: str) -> Mismatch:
        """The same mismatch, seen from the enclosing value (`segment` is `.name` or `[i]`)."""
        if not self.path or self.path.startswith("["):
            return Mismatch(self.problem, segment.lstrip(".") + self.path)
        return Mismatch(self.problem, f"{segment.lstrip('.')}.{self.path}")


def compile_check(schema: Mapping[str, Any]) -> Check:
    """A check for a self-contained schema (named types inlined at their first use)."""
    return _compile(schema, "", {})


def _compile(node: Any, namespace: str, named: dict[str, Check]) -> Check:
    if isinstance(node, list):
        return _union([_compile(b, namespace, named) for b in node], node)
    if isinstance(node, str):
        if node in _PRIMITIVE_CHECKS:
            return _PRIMITIVE_CHECKS[node]
        full = node if "." in node else f"{namespace}.{node}".lstrip(".")
        return lambda value: named[full](value)  # bound late: the type may be recursive
    kind = node["type"]
    if kind == "record":
        return _record(node, namespace, named)
    if kind == "enum":
        return _register(node, namespace, named, _enum(node["symbols"]))
    if kind == "fixed":
        return _register(node, namespace, named, _fixed(node["size"]))
    if kind == "array":
        return _array(_compile(node["items"], namespace, named))
    if kind == "map":
        return _map(_compile(node["values"], namespace, named))
    logical = _LOGICAL_CHECKS.get((kind, node.get("logicalType")))
    return logical or _compile(kind, namespace, named)


def _full_name(node: Mapping[str, Any], namespace: str) -> str:
    name = node["name"]
    return name if "." in name else f"{node.get('namespace', namespace)}.{name}".lstrip(".")


def _register(
    node: Mapping[str, Any], namespace: str, named: dict[str, Check], check: Check
) -> Check:
    named[_full_name(node, namespace)] = check
    return check


def _record(node: Mapping[str, Any], namespace: str, named: dict[str, Check]) -> Check:
    full = _full_name(node, namespace)
    fields: list[tuple[str, Check, bool]] = []
    known: set[str] = set()

    def check(value: Any) -> None:
        if not isinstance(value, Mapping):
            raise Mismatch(f"expected a record (mapping), got {_kind(value)}")
        present = 0
        for name, field_check, has_default in fields:
            item = value.get(name, _MISSING)
            if item is _MISSING:
                if not has_default:
                    raise Mismatch("missing, and the field has no default", name)
                continue
            present += 1
            try:
                field_check(item)
            except Mismatch as exc:
                raise exc.within(f".{name}") from None
        if present != len(value):
            extra = ", ".join(sorted(repr(k) for k in value if k not in known))
            raise Mismatch(f"unknown field(s) {extra}")

    named[full] = check  # before the fields: they may refer to this record
    inner_namespace = full.rpartition(".")[0]
    for f in node["fields"]:
        fields.append((f["name"], _compile(f["type"], inner_namespace, named), "default" in f))
        known.add(f["name"])
    return check


def _union(branches: list[Check], schema: list[Any]) -> Check:
    others = [b for b, s in zip(branches, schema, strict=True) if s != "null"]
    if len(others) == 1 and len(branches) == 2:  # the common ["null", T]: T's own complaint
        (only,) = others

        def optional(value: Any) -> None:
            if value is not None:
                only(value)

        return optional

    def any_branch(value: Any) -> None:
        for branch in branches:
            try:
                branch(value)
                return
            except Mismatch:
                continue
        raise Mismatch(f"{_kind(value)} fits none of the union's branches")

    return any_branch


def _enum(symbols: list[str]) -> Check:
    allowed = frozenset(symbols)

    def check(value: Any) -> None:
        if not (isinstance(value, str) and value in allowed):
            raise Mismatch(f"{value!r} is not one of {', '.join(symbols)}")

    return check


def _fixed(size: int) -> Check:
    def check(value: Any) -> None:
        if not (isinstance(value, bytes | bytearray) and len(value) == size):
            raise Mismatch(f"expected {size} bytes, got {_kind(value)}")

    return check


def _array(items: Check) -> Check:
    def check(value: Any) -> None:
        if not isinstance(value, list | tuple):
            raise Mismatch(f"expected an array (list), got {_kind(value)}")
        for index, item in enumerate(value):
            try:
                items(item)
            except Mismatch as exc:
                raise exc.within(f"[{index}]") from None

    return check


def _map(values: Check) -> Check:
    def check(value: Any) -> None:
        if not isinstance(value, Mapping):
            raise Mismatch(f"expected a map (mapping), got {_kind(value)}")
        for key, item in value.items():
            if not isinstance(key, str):
                raise Mismatch(f"map key {key!r} is not a string")
            try:
                values(item)
            except Mismatch as exc:
                raise exc.within(f"[{key!r}]") from None

    return check


def _primitive(accepts: Callable[[Any], bool], expected: str) -> Check:
    def check(value: Any) -> None:
        if not accepts(value):
            raise Mismatch(f"expected {expected}, got {_kind(value)}")

    return check


def _integer(bits: int) -> Check:
    low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1

    def check(value: Any) -> None:
        if type(value) is not int or not low <= value <= high:
            raise Mismatch(f"expected a {bits}-bit int, got {_kind(value)}")

    return check


def _check_string(value: Any) -> None:
    if not isinstance(value, str):
        raise Mismatch(f"expected a string, got {_kind(value)}")


def _check_timestamp(value: Any) -> None:
    if type(value) is int and _LONG[0] <= value <= _LONG[1]:
        return
    if isinstance(value, datetime.datetime) and value.tzinfo is not None:
        return  # a naive datetime is refused: its zone would be a guess
    raise Mismatch(f"expected epoch milliseconds (int) or an aware datetime, got {_kind(value)}")


def _check_uuid(value: Any) -> None:
    if isinstance(value, uuid.UUID) or (isinstance(value, str) and _UUID.match(value)):
        return
    raise Mismatch(f"expected a UUID (8-4-4-4-12 hex digits), got {_kind(value)}")


def _kind(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 40 else text[:37] + '...'}"


_PRIMITIVE_CHECKS: dict[str, Check] = {
    "null": _primitive(lambda v: v is None, "null"),
    "boolean": _primitive(lambda v: type(v) is bool, "a boolean"),
    "int": _integer(32),
    "long": _integer(64),
    "float": _primitive(lambda v: type(v) in (int, float), "a number"),
    "double": _primitive(lambda v: type(v) in (int, float), "a number"),
    "bytes": _primitive(lambda v: isinstance(v, bytes | bytearray), "bytes"),
    "string": _check_string,
}

_LOGICAL_CHECKS: dict[tuple[str, str | None], Check] = {
    ("long", "timestamp-millis"): _check_timestamp,
    ("string", "uuid"): _check_uuid,
}
