"""The wire format is plain Avro: the reference `avro` package reads and writes it, given only
the `.avsc` files (parsed the way Java's `Schema.Parser` does: shared types first)."""

from __future__ import annotations

import datetime
import io
import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import avro.io
import avro.name
import avro.schema
import pytest

from schemas import codec
from schemas.examples import EXAMPLES

SCHEMA_DIR = Path(codec.__file__).parent
RECORDS = sorted(codec.record_names())
_REFERENCE = re.compile(r'"(io\.tjmpaas\.provisioning\.\w+)"')


def _strip_logical_types(node: Any) -> Any:
    if isinstance(node, list):
        return [_strip_logical_types(n) for n in node]
    if isinstance(node, dict):
        return {k: _strip_logical_types(v) for k, v in node.items() if k != "logicalType"}
    return node


@cache
def avro_schemas(strip_logical_types: bool = False) -> dict[str, avro.schema.Schema]:
    """Every `.avsc` file parsed by avro into one name space, each after those it refers to."""
    texts = {p.stem: p.read_text() for p in SCHEMA_DIR.glob("*.avsc")}
    needs = {
        stem: {ref.rsplit(".", 1)[1] for ref in _REFERENCE.findall(text)}
        for stem, text in texts.items()
    }
    names = avro.name.Names()
    parsed: dict[str, avro.schema.Schema] = {}
    while len(parsed) < len(texts):
        ready = [s for s in sorted(texts) if s not in parsed and needs[s] <= parsed.keys()]
        assert ready, f"circular references among {set(texts) - parsed.keys()}"
        for stem in ready:
            schema = json.loads(texts[stem])
            if strip_logical_types:
                schema = _strip_logical_types(schema)
            parsed[stem] = avro.schema.make_avsc_object(schema, names)
    return parsed


def _plain(value: Any) -> Any:
    """avro's logical-type values as the codec's plain ones (epoch-millisecond ints)."""
    if isinstance(value, datetime.datetime):
        return (value - datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)) // datetime.timedelta(
            milliseconds=1
        )
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _logical(value: Any, schema: avro.schema.Schema) -> Any:
    """A plain datum as avro's writer wants it: datetimes for timestamp-millis."""
    if isinstance(schema, avro.schema.RecordSchema):
        return {f.name: _logical(value[f.name], f.type) for f in schema.fields if f.name in value}
    if isinstance(schema, avro.schema.UnionSchema):
        if value is None:
            return None
        return _logical(value, next(s for s in schema.schemas if s.type != "null"))
    if getattr(schema, "logical_type", None) == "timestamp-millis":
        return datetime.datetime.fromtimestamp(value / 1000, tz=datetime.UTC)
    return value


@pytest.mark.parametrize("name", RECORDS)
def test_header_fingerprint_is_avros(name: str) -> None:
    # avro 1.12 writes a logical-typed primitive as {"type":"long"} in the canonical form,
    # where the specification ([PRIMITIVES], [STRIP]) and Java write "long". Without the
    # logical types its canonical form is the specification's, so that is what it fingerprints.
    data = codec.encode(name, EXAMPLES[name])
    stripped = avro_schemas(strip_logical_types=True)[name]

    assert data[2:10] == stripped.fingerprint("CRC-64-AVRO")
    assert stripped.canonical_form == codec.schema(name).canonical_form


@pytest.mark.parametrize("name", RECORDS)
def test_avros_canonical_form_differs_only_by_that_quirk(name: str) -> None:
    quirk = avro_schemas()[name].canonical_form
    for primitive in ("long", "string"):
        quirk = quirk.replace(f'{{"type":"{primitive}"}}', f'"{primitive}"')

    assert quirk == codec.schema(name).canonical_form


@pytest.mark.parametrize("name", RECORDS)
def test_avro_decodes_what_the_codec_encodes(name: str) -> None:
    data = codec.encode(name, EXAMPLES[name])
    body = io.BytesIO(data[10:])
    schema = avro_schemas()[name]

    value = avro.io.DatumReader(schema, schema).read(avro.io.BinaryDecoder(body))

    assert body.tell() == len(data) - 10  # the whole body, nothing left over
    assert _plain(value) == EXAMPLES[name]


@pytest.mark.parametrize("name", RECORDS)
def test_the_codec_decodes_what_avro_encodes(name: str) -> None:
    schema = avro_schemas()[name]
    body = io.BytesIO()
    avro.io.DatumWriter(schema).write(_logical(EXAMPLES[name], schema), avro.io.BinaryEncoder(body))
    header = b"\xc3\x01" + avro_schemas(strip_logical_types=True)[name].fingerprint("CRC-64-AVRO")

    decoded = codec.decode(header + body.getvalue())

    assert decoded.record_name == name
    assert decoded.value == EXAMPLES[name]


@pytest.mark.parametrize("name", RECORDS)
def test_the_self_contained_schema_is_what_avro_builds_from_the_files(name: str) -> None:
    # The same schema object (canonical form, docs, defaults, logical types) as parsing the
    # files one by one: a Java producer gets the same fingerprint from the same files.
    from_files = avro_schemas()[name]
    self_contained = avro.schema.parse(json.dumps(codec.schema(name).schema))

    assert self_contained.to_json() == from_files.to_json()
