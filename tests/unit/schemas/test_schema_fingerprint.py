"""Parsing Canonical Form and CRC-64-AVRO against the Avro project's own test vectors.

The vectors are Apache Avro's `share/test/data/schema-tests.txt` (input, canonical form,
fingerprint as Java prints the `long`), which Java's unit tests check with a direct
implementation of the algorithm. Every language's implementation must agree with them.
"""

from __future__ import annotations

import json

import avro.schema
import pytest
from fastavro.schema import fingerprint as fastavro_fingerprint

from schemas import codec
from schemas.fingerprint import (
    EMPTY,
    as_java_long,
    canonical_form,
    crc64_avro,
    schema_fingerprint,
    to_wire,
)

# (input schema, canonical form, fingerprint as a Java long or None where the file has none)
AVRO_VECTORS: list[tuple[str, str, int | None]] = [
    ('"null"', '"null"', 7195948357588979594),
    ('{"type":"null"}', '"null"', None),
    ('"boolean"', '"boolean"', -6970731678124411036),
    ('{"type":"boolean"}', '"boolean"', None),
    ('"int"', '"int"', 8247732601305521295),
    ('{"type":"int"}', '"int"', None),
    ('"long"', '"long"', -3434872931120570953),
    ('{"type":"long"}', '"long"', None),
    ('"float"', '"float"', 5583340709985441680),
    ('{"type":"float"}', '"float"', None),
    ('"double"', '"double"', -8181574048448539266),
    ('{"type":"double"}', '"double"', None),
    ('"bytes"', '"bytes"', 5746618253357095269),
    ('{"type":"bytes"}', '"bytes"', None),
    ('"string"', '"string"', -8142146995180207161),
    ('{"type":"string"}', '"string"', None),
    ("[  ]", "[]", -1241056759729112623),
    ('[ "int"  ]', '["int"]', -5232228896498058493),
    ('[ "int" , {"type":"boolean"} ]', '["int","boolean"]', 5392556393470105090),
    (
        '{"fields":[], "type":"record", "name":"foo"}',
        '{"name":"foo","type":"record","fields":[]}',
        -4824392279771201922,
    ),
    (
        '{"fields":[], "type":"record", "name":"foo", "namespace":"x.y"}',
        '{"name":"x.y.foo","type":"record","fields":[]}',
        5916914534497305771,
    ),
    (
        '{"fields":[], "type":"record", "name":"a.b.foo", "namespace":"x.y"}',
        '{"name":"a.b.foo","type":"record","fields":[]}',
        -4616218487480524110,
    ),
    (
        '{"fields":[], "type":"record", "name":"foo", "doc":"Useful info"}',
        '{"name":"foo","type":"record","fields":[]}',
        -4824392279771201922,
    ),
    (
        '{"fields":[], "type":"record", "name":"foo", "aliases":["foo","bar"]}',
        '{"name":"foo","type":"record","fields":[]}',
        -4824392279771201922,
    ),
    (
        '{"fields":[], "type":"record", "name":"foo", "doc":"foo", "aliases":["foo","bar"]}',
        '{"name":"foo","type":"record","fields":[]}',
        -4824392279771201922,
    ),
    (
        '{"fields":[{"type":{"type":"boolean"}, "name":"f1"}], "type":"record", "name":"foo"}',
        '{"name":"foo","type":"record","fields":[{"name":"f1","type":"boolean"}]}',
        7843277075252814651,
    ),
    (
        # The file's default is the string "true", which fastavro rightly refuses for a
        # boolean; a valid default changes neither the canonical form nor the fingerprint.
        '{ "fields":[{"type":"boolean", "aliases":[], "name":"f1", "default":true},'
        ' {"order":"descending","name":"f2","doc":"Hello","type":"int"}],'
        ' "type":"record", "name":"foo"}',
        '{"name":"foo","type":"record","fields":[{"name":"f1","type":"boolean"},'
        '{"name":"f2","type":"int"}]}',
        -4860222112080293046,
    ),
    (
        '{"type":"enum", "name":"foo", "symbols":["A1"]}',
        '{"name":"foo","type":"enum","symbols":["A1"]}',
        -6342190197741309591,
    ),
    (
        '{"namespace":"x.y.z", "type":"enum", "name":"foo", "doc":"foo bar",'
        ' "symbols":["A1", "A2"]}',
        '{"name":"x.y.z.foo","type":"enum","symbols":["A1","A2"]}',
        -4448647247586288245,
    ),
    (
        '{"name":"foo","type":"fixed","size":15}',
        '{"name":"foo","type":"fixed","size":15}',
        1756455273707447556,
    ),
    (
        '{"namespace":"x.y.z", "type":"fixed", "name":"foo", "doc":"foo bar", "size":32}',
        '{"name":"x.y.z.foo","type":"fixed","size":32}',
        -3064184465700546786,
    ),
    ('{ "items":{"type":"null"}, "type":"array"}', '{"type":"array","items":"null"}',
     -589620603366471059),
    ('{ "values":"string", "type":"map"}', '{"type":"map","values":"string"}',
     -8732877298790414990),
    (
        '{"name":"PigValue","type":"record",'
        ' "fields":[{"name":"value", "type":["null", "int", "long", "PigValue"]}]}',
        '{"name":"PigValue","type":"record","fields":[{"name":"value",'
        '"type":["null","int","long","PigValue"]}]}',
        -1759257747318642341,
    ),
]


@pytest.mark.parametrize(("schema", "canonical", "java_long"), AVRO_VECTORS)
def test_avro_vectors(schema: str, canonical: str, java_long: int | None) -> None:
    assert canonical_form(json.loads(schema)) == canonical
    if java_long is not None:
        assert as_java_long(crc64_avro(canonical.encode())) == java_long
        assert as_java_long(schema_fingerprint(json.loads(schema))) == java_long


def test_the_empty_input_fingerprints_to_the_seed() -> None:
    assert crc64_avro(b"") == EMPTY == 0xC15D213AA4D7A795


def test_int_fingerprint_bytes_as_in_avro_python_tests() -> None:
    # avro's own Python tests give "int" as these header bytes.
    assert to_wire(crc64_avro(b'"int"')).hex() == "8f5c393f1ad57572"


def test_logical_types_are_not_part_of_the_canonical_form() -> None:
    # [STRIP] keeps only type, name, fields, symbols, items, values and size.
    timestamp = {"type": "long", "logicalType": "timestamp-millis"}
    request_id = {"type": "string", "logicalType": "uuid"}

    assert canonical_form(timestamp) == '"long"'
    assert canonical_form(request_id) == '"string"'
    assert canonical_form(["null", timestamp]) == '["null","long"]'


def test_a_named_type_is_defined_once_then_referred_to_by_full_name() -> None:
    enum = {"type": "enum", "name": "E", "namespace": "n", "symbols": ["A"], "default": "A"}
    schema = {
        "type": "record", "name": "R", "namespace": "n",
        "fields": [{"name": "a", "type": enum}, {"name": "b", "type": ["null", "n.E"]}],
    }

    assert canonical_form(schema) == (
        '{"name":"n.R","type":"record","fields":[{"name":"a","type":'
        '{"name":"n.E","type":"enum","symbols":["A"]}},{"name":"b","type":["null","n.E"]}]}'
    )


@pytest.mark.parametrize("name", sorted(codec.record_names()))
def test_three_implementations_agree_on_our_fingerprints(name: str) -> None:
    record = codec.schema(name)
    ours = record.fingerprint_bytes
    form = record.canonical_form

    assert ours == bytes.fromhex(fastavro_fingerprint(form, "CRC-64-AVRO"))
    # avro parses the canonical form back (it is a schema) and fingerprints it itself.
    assert ours == avro.schema.parse(form).fingerprint("CRC-64-AVRO")
    assert avro.schema.parse(form).canonical_form == form
