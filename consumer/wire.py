"""Between the pure saga types (snake_case dataclasses) and their Avro records (camelCase).

The Avro records in `schemas/` mirror the saga types field for field, so one generic mapping
serves events, replies and the state snapshot: a field `request_id` is the record field
`requestId`; tuples become arrays, mappings become maps, enums their value.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import types
import typing
from collections.abc import Callable, Mapping
from functools import cache
from typing import Any, TypeVar

from consumer.avro_readers import compile_reader
from consumer.avro_writers import compile_writer
from schemas import codec

T = TypeVar("T")


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def to_record(obj: Any) -> dict[str, Any]:
    """A saga dataclass as the datum of its Avro record."""
    record = {}
    for name, key, plain in _plainers(type(obj)):
        value = getattr(obj, name)
        record[key] = value if plain is None or value is None else plain(value)
    return record


@cache
def _plainers(cls: type) -> tuple[tuple[str, str, Any], ...]:
    """Per field: its name, its record key and what makes its value plain (None: nothing to
    do, as for most fields), worked out once per type from its annotation: encoding is the
    worker's hottest path (measured: a third of its CPU with the generic conversion)."""
    return _per_field(cls, _plainer)


def _per_field(cls: type, conversion: Any) -> tuple[tuple[str, str, Any], ...]:
    """Per field of `cls`: its name, its record key and `conversion` of its annotation."""
    hints = _hints(cls)
    return tuple((f.name, camel(f.name), conversion(hints[f.name]))
                 for f in dataclasses.fields(cls))


def _optional_of(hint: Any) -> Any | None:
    """X of an annotation `X | None`; None for any other annotation (a union of several
    types is not narrowed)."""
    if typing.get_origin(hint) not in (typing.Union, types.UnionType):
        return None
    inner = [a for a in typing.get_args(hint) if a is not type(None)]
    return inner[0] if len(inner) == 1 else None


def _plainer(hint: Any) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        inner = _optional_of(hint)
        return _plain if inner is None else _plainer(inner)
    if hint in (str, int, float, bool):
        return None
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return _enum_value
    args = typing.get_args(hint)
    if origin is tuple and args[:1] == (str,):
        return list
    if _is_mapping(origin) and len(args) == 2 and args[1] in (str, int):
        return dict
    return _plain


def _enum_value(value: enum.Enum) -> Any:
    return value.value


def _is_mapping(origin: Any) -> bool:
    return isinstance(origin, type) and issubclass(origin, Mapping)


def encode(obj: Any) -> bytes:
    """Single-object encoding of a saga event, reply or state under its class's record name,
    by the writer compiled for its class (`consumer/avro_writers.py`). A value that writer
    cannot write goes the generic way, which names the culprit (`codec.encode`, without the
    up-front check: the saga's own types make well-formed data)."""
    writer = _writer(type(obj))
    if writer is not None:
        try:
            return writer(obj)
        except Exception:  # noqa: BLE001, S110 - explained (or written) by the generic path
            pass
    return codec.encode(type(obj).__name__, to_record(obj), checked=False)


@cache
def _writer(cls: type) -> Callable[[Any], bytes] | None:
    """The compiled writer of a saga type whose every record field is one of its
    attributes, written as it is (no enum, tuple or mapping conversion beyond what the
    writer does itself); None for any other type or record."""
    try:
        schema = codec.schema(cls.__name__)
    except codec.UnknownSchema:
        return None
    hints = _hints(cls)
    fields = _per_field(cls, _plainer)
    for name, _, plain in fields:
        # A str enum is written as its text (StrEnum.encode); a tuple or a mapping as the
        # writer iterates it; anything else (another enum, a nested value) goes generic.
        if plain is _enum_value and not issubclass(_optional_of(hints[name]) or hints[name], str):
            return None
        if plain not in (None, list, dict, _enum_value):
            return None
    return compile_writer(schema.schema, {key: name for name, key, _ in fields},
                          header=codec.MAGIC + schema.fingerprint_bytes,
                          name=f"write_{cls.__name__}")


def from_record(cls: type[T], record: Mapping[str, Any]) -> T:
    """A saga dataclass from a decoded Avro record (fields missing in old records default)."""
    values = {}
    for name, key, convert in _converters(cls):
        if key in record:
            value = record[key]
            values[name] = None if value is None else convert(value)
    return cls(**values)


def decode_as(cls: type[T], data: bytes) -> T:
    """Single-object encoded `data` of `cls`'s record as a `cls`: by the reader compiled for
    it (`consumer/avro_readers.py`) when the bytes are of the current schema, the generic way
    otherwise (a released older schema, or bytes the reader leaves to it; `CodecError` when
    they are no such record)."""
    compiled = _reader(cls)
    if compiled is not None and data[:codec.HEADER_SIZE] == compiled[0]:
        try:
            return compiled[1](data)  # type: ignore[no-any-return]
        except Exception:  # noqa: BLE001, S110 - read (or refused) by the generic path
            pass
    return from_record(cls, codec.decode_as(data, cls.__name__).value)


@cache
def _reader(cls: type) -> tuple[bytes, Callable[[bytes], Any]] | None:
    """The header of `cls`'s current record and the reader compiled for it, if it compiles."""
    schema = codec.schema(cls.__name__)
    attributes = {key: (name, None if convert is _identity else convert)
                  for name, key, convert in _converters(cls)}
    reader = compile_reader(schema.schema, attributes, cls, offset=codec.HEADER_SIZE,
                            name=f"read_{cls.__name__}")
    return None if reader is None else (codec.MAGIC + schema.fingerprint_bytes, reader)


@cache
def _converters(cls: type) -> tuple[tuple[str, str, Any], ...]:
    """Per field: its name, its record key and the function that types a decoded value, worked
    out once per class (restoring thousands of states made the per-value lookups dominate)."""
    return _per_field(cls, _converter)


def _converter(hint: Any) -> Any:
    """The function that types a decoded value of a field annotated `hint`."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        inner = _optional_of(hint)
        return _identity if inner is None else _converter(inner)
    if hint in (str, int, float, bool, typing.Any):
        return _identity
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return hint
    if origin is tuple:
        return tuple
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return functools.partial(from_record, hint)
    if _is_mapping(origin):
        return dict if origin in (dict, Mapping) else origin
    if isinstance(hint, type) and issubclass(hint, Mapping) and hint is not dict:
        return hint
    return _identity


def _identity(value: Any) -> Any:
    return value


def _plain(value: Any) -> Any:
    if value is None or type(value) in (str, int, float, bool):
        return value  # most fields: nothing to convert
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)
