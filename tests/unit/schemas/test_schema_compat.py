"""The current schemas against every released set: nothing removed, data readable both ways.

A released set (`schemas/released/<n>/`) is a copy of the `.avsc` files as published. Data
written with it must be readable with the current schemas (backward), and data written with
the current schemas readable with it (forward): producers and consumers upgrade independently.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path
from typing import Any

import avro.schema
import pytest
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType
from fastavro import schemaless_reader, schemaless_writer

from schemas import codec, registry
from schemas.codec import Codec
from schemas.errors import UnknownFingerprint
from schemas.examples import EXAMPLES, example
from schemas.registry import RecordSchema

RELEASES = registry.released()
PAIRS = [
    pytest.param(version, name, id=f"{version}-{name}")
    for version, records in RELEASES.items()
    for name in sorted(records)
]


def _avro(schema: RecordSchema) -> avro.schema.Schema:
    return avro.schema.parse(json.dumps(schema.schema))


def _write(schema: RecordSchema, datum: dict[str, Any]) -> bytes:
    out = io.BytesIO()
    schemaless_writer(out, schema.plain, datum)
    return out.getvalue()


def _read(data: bytes, writer: RecordSchema, reader: RecordSchema) -> dict[str, Any]:
    stream = io.BytesIO(data)
    value = schemaless_reader(stream, writer.plain, reader.plain)
    assert stream.tell() == len(data)
    assert isinstance(value, dict)
    return value


def _fit(datum: dict[str, Any], schema: RecordSchema) -> dict[str, Any]:
    """The example reduced to the fields `schema` has (an older set may have fewer)."""
    names = {f["name"] for f in schema.schema["fields"]}
    return {k: v for k, v in datum.items() if k in names}


def test_there_is_a_first_release_and_releases_are_numbered_without_gaps() -> None:
    assert list(RELEASES) == list(range(1, len(RELEASES) + 1))


@pytest.mark.parametrize("version", list(RELEASES))
def test_no_released_record_has_disappeared(version: int) -> None:
    assert set(RELEASES[version]) <= codec.record_names()


@pytest.mark.parametrize(("version", "name"), PAIRS)
def test_avro_finds_the_schemas_compatible_both_ways(version: int, name: str) -> None:
    released, current = _avro(RELEASES[version][name]), _avro(codec.schema(name))
    checker = ReaderWriterCompatibilityChecker()

    backward = checker.get_compatibility(reader=current, writer=released)
    forward = checker.get_compatibility(reader=released, writer=current)

    assert backward.compatibility is SchemaCompatibilityType.compatible, backward.messages
    assert forward.compatibility is SchemaCompatibilityType.compatible, forward.messages


@pytest.mark.parametrize(("version", "name"), PAIRS)
def test_released_data_reads_with_the_current_schema(version: int, name: str) -> None:
    released, current = RELEASES[version][name], codec.schema(name)
    datum = _fit(EXAMPLES[name], released)

    value = _read(_write(released, datum), writer=released, reader=current)

    assert _fit(value, released) == datum


@pytest.mark.parametrize(("version", "name"), PAIRS)
def test_current_data_reads_with_the_released_schema(version: int, name: str) -> None:
    released, current = RELEASES[version][name], codec.schema(name)

    value = _read(_write(current, EXAMPLES[name]), writer=current, reader=released)

    assert value == _fit(EXAMPLES[name], released)


@pytest.mark.parametrize(("version", "name"), PAIRS)
def test_the_codec_decodes_records_of_every_release(version: int, name: str) -> None:
    released = RELEASES[version][name]
    body = _write(released, _fit(EXAMPLES[name], released))
    data = b"\xc3\x01" + released.fingerprint_bytes + body

    decoded = codec.decode(data)

    assert decoded.record_name == name
    assert _fit(decoded.value, released) == _fit(EXAMPLES[name], released)


# An evolution done by the rules, to show what the codec does with it.


def _evolved_set(tmp_path: Path) -> dict[str, RecordSchema]:
    for path in registry.SCHEMA_DIR.glob("*.avsc"):
        shutil.copy(path, tmp_path)
    succeeded = json.loads((tmp_path / "ProvisioningSucceeded.avsc").read_text())
    succeeded["fields"].append(
        {"name": "resourceUrl", "type": ["null", "string"], "default": None, "doc": "Where."}
    )
    (tmp_path / "ProvisioningSucceeded.avsc").write_text(json.dumps(succeeded))
    tier = json.loads((tmp_path / "SlaTier.avsc").read_text())
    tier["symbols"].append("DIAMOND")
    (tmp_path / "SlaTier.avsc").write_text(json.dumps(tier))
    return registry.load_directory(tmp_path)


def test_evolved_codec_reads_current_records_with_defaults(tmp_path: Path) -> None:
    evolved = Codec(_evolved_set(tmp_path), other_versions=registry.current().values())

    value = evolved.decode(codec.encode("ProvisioningSucceeded", EXAMPLES["ProvisioningSucceeded"]))

    assert value.value == {**EXAMPLES["ProvisioningSucceeded"], "resourceUrl": None}


def test_a_reader_given_a_newer_set_reads_its_records_in_its_own_shape(tmp_path: Path) -> None:
    evolved_set = _evolved_set(tmp_path)
    evolved = Codec(evolved_set)
    reader = Codec(registry.current(), other_versions=evolved_set.values())
    request = {**example("ProvisionServiceRequest"), "slaTier": "DIAMOND"}
    succeeded = {**example("ProvisioningSucceeded"), "resourceUrl": "https://x.example/t"}

    service = reader.decode(evolved.encode("ProvisionServiceRequest", request)).value
    done = reader.decode(evolved.encode("ProvisioningSucceeded", succeeded)).value

    assert service["slaTier"] == "BRONZE"  # the enum's default stands in for an unknown symbol
    assert done == EXAMPLES["ProvisioningSucceeded"]  # the new field is skipped


def test_a_reader_without_the_newer_set_cannot_read_its_records(tmp_path: Path) -> None:
    evolved = Codec(_evolved_set(tmp_path))
    data = evolved.encode("ProvisioningSucceeded", EXAMPLES["ProvisioningSucceeded"])

    with pytest.raises(UnknownFingerprint):
        codec.decode(data)
