"""Loading a directory of `.avsc` files into self-contained, parsed record schemas.

Each file holds one named type (record or enum), and its file name is the type's name. Records
refer to shared types (`BillingInfo`, `SlaTier`, ...) by full name; loading inlines a named type
at its first use and refers to it by full name afterwards, depth first in field order. That is
the schema Java's `Schema.Parser` builds from the same files, so both compute the same
fingerprint.

A record that no other file refers to is a top-level record: something that travels on its own
on a topic. The others (`BillingInfo`) only exist inside a top-level record.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import fastavro

from schemas.errors import SchemaDefinitionError
from schemas.fingerprint import as_java_long, canonical_form, crc64_avro, to_wire

SCHEMA_DIR = Path(__file__).resolve().parent
RELEASED_DIR = SCHEMA_DIR / "released"

_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
_NAMED = frozenset({"record", "enum", "fixed"})


@dataclass(frozen=True, eq=False)
class RecordSchema:
    """One top-level record: its self-contained schema, fingerprint and parsed forms."""

    name: str
    full_name: str
    schema: Mapping[str, Any] = field(repr=False)
    """Self-contained JSON schema (docs and logical types kept)."""
    canonical_form: str = field(repr=False)
    fingerprint: int
    """CRC-64-AVRO of `canonical_form`, unsigned."""
    parsed: dict[str, Any] = field(repr=False)
    """fastavro's parsed `schema`, for writing (accepts datetimes and UUIDs too)."""
    plain: dict[str, Any] = field(repr=False)
    """Parsed `schema` without logical types, for reading: timestamps stay epoch-millisecond
    ints and UUIDs strings. The bytes and the canonical form are the same as `parsed`."""

    @property
    def fingerprint_bytes(self) -> bytes:
        """The fingerprint as it appears in the single-object header."""
        return to_wire(self.fingerprint)

    @property
    def java_fingerprint(self) -> int:
        """The fingerprint as Java's `SchemaNormalization.parsingFingerprint64` returns it."""
        return as_java_long(self.fingerprint)


def load_directory(directory: Path) -> dict[str, RecordSchema]:
    """The top-level records of a directory of `.avsc` files, by short name."""
    named = _read_named_types(directory)
    pulled: set[str] = set()
    expanded = {
        full_name: _expand(full_name, "", named, set(), pulled)
        for full_name, schema in named.items()
        if schema["type"] == "record"
    }
    return {
        schema["name"]: _record_schema(full_name, schema)
        for full_name, schema in expanded.items()
        if full_name not in pulled
    }


@cache
def current() -> Mapping[str, RecordSchema]:
    """The records this package writes: the `.avsc` files next to this module."""
    return load_directory(SCHEMA_DIR)


@cache
def released() -> Mapping[int, Mapping[str, RecordSchema]]:
    """Every released schema set (`released/<n>/`), by release number, oldest first."""
    if not RELEASED_DIR.is_dir():
        return {}
    versions = sorted(int(p.name) for p in RELEASED_DIR.iterdir() if p.name.isdigit())
    return {v: load_directory(RELEASED_DIR / str(v)) for v in versions}


def _read_named_types(directory: Path) -> dict[str, dict[str, Any]]:
    named: dict[str, dict[str, Any]] = {}
    for path in sorted(directory.glob("*.avsc")):
        try:
            schema = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise SchemaDefinitionError(f"{path}: {exc}") from exc
        if not isinstance(schema, dict) or schema.get("type") not in _NAMED:
            raise SchemaDefinitionError(f"{path}: not a named type (record, enum or fixed)")
        if schema.get("name") != path.stem:
            raise SchemaDefinitionError(f"{path}: names {schema.get('name')!r}, not {path.stem!r}")
        named[_full_name(schema["name"], schema.get("namespace", ""))] = schema
    if not named:
        raise SchemaDefinitionError(f"no .avsc files in {directory}")
    return named


def _full_name(name: str, namespace: str) -> str:
    return name if "." in name or not namespace else f"{namespace}.{name}"


def _expand(
    node: Any, namespace: str, named: dict[str, dict[str, Any]], defined: set[str], pulled: set[str]
) -> Any:
    """`node` with every named type inlined at its first use in `defined`'s schema.

    `pulled` collects the names inlined from another file: those are not top-level records.
    """
    if isinstance(node, list):
        return [_expand(branch, namespace, named, defined, pulled) for branch in node]
    if isinstance(node, str):
        if node in _PRIMITIVES:
            return node
        full = _full_name(node, namespace)
        if full in defined:
            return full
        if full not in named:
            raise SchemaDefinitionError(f"unknown type {node!r}")
        if defined:  # a reference from inside another type, not the type's own expansion
            pulled.add(full)
        return _expand(named[full], namespace, named, defined, pulled)
    if not isinstance(node, dict):
        raise SchemaDefinitionError(f"not a schema: {node!r}")
    kind = node.get("type")
    if kind in _NAMED:
        return _expand_named(node, namespace, named, defined, pulled)
    if kind == "array":
        return {**node, "items": _expand(node["items"], namespace, named, defined, pulled)}
    if kind == "map":
        return {**node, "values": _expand(node["values"], namespace, named, defined, pulled)}
    if isinstance(kind, str | list | dict) and kind not in _PRIMITIVES:
        return _expand(kind, namespace, named, defined, pulled)  # {"type": "SomeName"}
    return dict(node)  # a primitive, possibly with a logical type


def _expand_named(
    node: dict[str, Any], namespace: str, named: dict[str, dict[str, Any]], defined: set[str],
    pulled: set[str],
) -> dict[str, Any]:
    full = _full_name(node["name"], node.get("namespace", namespace))
    if full in defined:
        raise SchemaDefinitionError(f"{full} is defined twice")
    defined.add(full)  # before the fields, so a recursive reference is a name
    if node["type"] != "record":
        return dict(node)
    inner_namespace = full.rpartition(".")[0]
    fields = [
        {**f, "type": _expand(f["type"], inner_namespace, named, defined, pulled)}
        for f in node["fields"]
    ]
    return {**node, "fields": fields}


def _record_schema(full_name: str, schema: dict[str, Any]) -> RecordSchema:
    try:
        parsed = _parse(schema)
        plain = _parse(_without_logical_types(schema))
        form = canonical_form(schema)
    except Exception as exc:  # fastavro raises several types for a bad schema
        raise SchemaDefinitionError(f"{full_name}: {exc}") from exc
    return RecordSchema(
        name=schema["name"],
        full_name=full_name,
        schema=schema,
        canonical_form=form,
        fingerprint=crc64_avro(form.encode("utf-8")),
        parsed=parsed,
        plain=plain,
    )


def _parse(schema: dict[str, Any]) -> dict[str, Any]:
    parsed = fastavro.parse_schema(schema)
    if not isinstance(parsed, dict):
        raise SchemaDefinitionError(f"{schema.get('name')} does not parse to a record")
    return parsed


def _without_logical_types(node: Any) -> Any:
    if isinstance(node, list):
        return [_without_logical_types(item) for item in node]
    if isinstance(node, dict):
        return {k: _without_logical_types(v) for k, v in node.items() if k != "logicalType"}
    return node
