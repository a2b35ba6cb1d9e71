"""What the service writes is a published release, and a consumer holding only the newest release
decodes all of it (schemas/README.md, "Evolving the schemas").

Two checks, each also run against temporary copies to show that it fails when it must:

- **Drift**: the top-level `schemas/*.avsc` (what the codec writes with) are exactly one set
  under `schemas/released/<n>/`: the same file names and the same bytes. Byte for byte, not by
  Parsing Canonical Form: the canonical form drops `doc`, `default`, `aliases` and logical
  types, and a changed `default` changes what a reader fills in, a changed doc or logical type
  what code generators make of the files. A published set is a copy of the files (`cp`), so
  equal bytes is the rule that leaves nothing to interpret; a reformatted file is a new set.
- **Outside decoder**: a decoder built only from the newest released set's files, with the
  reference `avro` package (none of this repository's code), finds the writer schema of one
  example of every record the service writes by its fingerprint and decodes it.
"""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import avro.io
import avro.name
import avro.schema
import pytest

from schemas import codec, registry
from schemas.codec import Codec
from schemas.examples import EXAMPLES, example

TOP_LEVEL = Path(codec.__file__).resolve().parent
RELEASED = TOP_LEVEL / "released"
MAGIC = b"\xc3\x01"  # single-object encoding, from the Avro specification


def avsc_files(directory: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(directory.glob("*.avsc"))}


def released_sets(released: Path) -> dict[int, Path]:
    """Every `released/<n>/` by number."""
    return {int(p.name): p for p in sorted(released.iterdir()) if p.is_dir() and p.name.isdigit()}


def sets_written(top_level: Path, released: Path) -> list[int]:
    """The released sets whose files are byte for byte the top-level files."""
    written = avsc_files(top_level)
    return [n for n, path in released_sets(released).items() if avsc_files(path) == written]


def drift_report(top_level: Path, released: Path) -> str:
    """Why the top-level files are not exactly one released set ("" when they are)."""
    matches = sets_written(top_level, released)
    if len(matches) == 1:
        return ""
    if matches:
        return f"released sets {matches} are identical: a set is published once"
    sets = released_sets(released)
    if not sets:
        return f"no released set under {released}"
    newest = max(sets)
    written, published = avsc_files(top_level), avsc_files(sets[newest])
    changed = sorted(n for n in written.keys() & published.keys() if written[n] != published[n])
    return (
        f"the schemas the service writes are no released set. Against released/{newest}: "
        f"changed {changed}, only top-level {sorted(written.keys() - published.keys())}, "
        f"only released {sorted(published.keys() - written.keys())}. A consumer holding the "
        f"published files cannot read what is written: release it as a new set "
        f"(`cp schemas/*.avsc schemas/released/{newest + 1}/`, schemas/README.md)."
    )


class UnknownWriterSchema(LookupError):
    pass


@dataclass(frozen=True)
class _Writer:
    name: str
    schema: avro.schema.Schema


class OutsideDecoder:
    """What a consumer outside the service holds: one directory of `.avsc` files and the Avro
    reference implementation.

    The files are parsed as Java's `Schema.Parser` does, each after the named types it refers
    to, into one name space. Fingerprints are taken without the logical types: avro 1.12 keeps
    `{"type":"long"}` for a logical-typed primitive in its canonical form, where the
    specification and Java write `"long"` (schemas/README.md), and would otherwise compute
    another fingerprint for the same schema. Bodies are read with those same schemas, so values
    come out plain (epoch milliseconds, strings), as the examples are written.
    """

    def __init__(self, directory: Path) -> None:
        texts = {path.stem: json.loads(path.read_text()) for path in directory.glob("*.avsc")}
        full_names = {stem: _full_name(schema) for stem, schema in texts.items()}
        refers_to = {stem: {other for other, full in full_names.items()
                            if other != stem and full in set(_strings(schema))}
                     for stem, schema in texts.items()}
        names = avro.name.Names()
        parsed: dict[str, avro.schema.Schema] = {}
        while len(parsed) < len(texts):
            ready = [s for s in sorted(texts) if s not in parsed and refers_to[s] <= parsed.keys()]
            assert ready, f"circular references among {sorted(texts.keys() - parsed.keys())}"
            for stem in ready:
                parsed[stem] = avro.schema.make_avsc_object(_plain(texts[stem]), names)
        referred = set().union(*refers_to.values())
        self.records = {stem: schema for stem, schema in parsed.items()
                        if texts[stem]["type"] == "record" and stem not in referred}
        self._writers = {schema.fingerprint("CRC-64-AVRO"): _Writer(stem, schema)
                         for stem, schema in self.records.items()}

    def decode(self, data: bytes) -> tuple[str, dict[str, Any]]:
        if data[:2] != MAGIC:
            raise ValueError("not single-object encoded")
        writer = self._writers.get(data[2:10])
        if writer is None:
            raise UnknownWriterSchema(f"no schema with fingerprint {data[2:10].hex()}")
        body = io.BytesIO(data[10:])
        value = avro.io.DatumReader(writer.schema, writer.schema).read(
            avro.io.BinaryDecoder(body))
        assert body.tell() == len(data) - 10, "bytes left after the record"
        return writer.name, value


def _full_name(schema: dict[str, Any]) -> str:
    name = schema["name"]
    return name if "." in name else f"{schema.get('namespace', '')}.{name}".lstrip(".")


def _strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, list):
        for item in node:
            yield from _strings(item)
    elif isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)


def _plain(node: Any) -> Any:
    if isinstance(node, list):
        return [_plain(n) for n in node]
    if isinstance(node, dict):
        return {k: _plain(v) for k, v in node.items() if k != "logicalType"}
    return node


def newest_set(released: Path) -> Path:
    sets = released_sets(released)
    assert sets, f"no released set under {released}"
    return sets[max(sets)]


# --- the repository as it is -----------------------------------------------------------------


def test_the_schemas_the_service_writes_are_exactly_one_released_set() -> None:
    assert drift_report(TOP_LEVEL, RELEASED) == ""


def test_the_service_writes_the_newest_released_set() -> None:
    # What the outside decoder below needs; said plainly here, where it fails by fingerprint.
    newest = max(released_sets(RELEASED))

    assert sets_written(TOP_LEVEL, RELEASED) == [newest], (
        f"the service does not write released/{newest}, the newest set: a consumer holding "
        "only that set cannot read what is written (schemas/README.md, Evolving the schemas)")


def test_every_record_the_service_writes_has_an_example() -> None:
    assert set(EXAMPLES) == codec.record_names()


@pytest.mark.parametrize("name", sorted(codec.record_names()))
def test_an_outside_decoder_holding_only_the_newest_release_decodes_it(name: str) -> None:
    outside = OutsideDecoder(newest_set(RELEASED))

    record_name, value = outside.decode(codec.encode(name, EXAMPLES[name]))

    assert record_name == name
    assert value == EXAMPLES[name]


# --- the checks fail when they must: a temporary copy of the schemas ---------------------------


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    """Top-level files as today, published as one set (`released/1`) and nothing else."""
    top = tmp_path / "schemas"
    top.mkdir()
    for path in TOP_LEVEL.glob("*.avsc"):
        shutil.copy(path, top)
    shutil.copytree(top, top / "released" / "1")
    return top


def _edit(path: Path, change: Any) -> None:
    schema = json.loads(path.read_text())
    change(schema)
    path.write_text(json.dumps(schema, indent=2) + "\n")


def _written_by(top: Path, name: str, datum: dict[str, Any]) -> bytes:
    """`datum` as the service's codec writes it with the top-level files of `top`."""
    return Codec(registry.load_directory(top)).encode(name, datum)


def test_the_copy_passes_both_checks(copy: Path) -> None:
    outside = OutsideDecoder(newest_set(copy / "released"))

    assert drift_report(copy, copy / "released") == ""
    for name in sorted(codec.record_names()):
        assert outside.decode(_written_by(copy, name, EXAMPLES[name])) == (name, EXAMPLES[name])


def test_a_field_added_at_the_top_level_only_fails_both_checks(copy: Path) -> None:
    # Compatible by the rules (an optional field with a default), but not released.
    _edit(copy / "ProvisioningSucceeded.avsc", lambda s: s["fields"].append(
        {"name": "resourceUrl", "type": ["null", "string"], "default": None, "doc": "Where."}))
    datum = {**example("ProvisioningSucceeded"), "resourceUrl": "https://x.example/t"}

    report = drift_report(copy, copy / "released")
    with pytest.raises(UnknownWriterSchema):
        OutsideDecoder(newest_set(copy / "released")).decode(
            _written_by(copy, "ProvisioningSucceeded", datum))

    assert "changed ['ProvisioningSucceeded.avsc']" in report
    assert "released/2/" in report


def test_an_enum_symbol_or_a_new_record_at_the_top_level_only_fails_both_checks(
    copy: Path
) -> None:
    _edit(copy / "SlaTier.avsc", lambda s: s["symbols"].append("DIAMOND"))
    (copy / "ProvisioningPaused.avsc").write_text(json.dumps({
        "type": "record", "name": "ProvisioningPaused", "namespace": "io.tjmpaas.provisioning",
        "doc": "Event: paused.", "fields": [{"name": "requestId", "type": "string", "doc": "Id."}],
    }))
    outside = OutsideDecoder(newest_set(copy / "released"))

    report = drift_report(copy, copy / "released")
    for name, datum in (("ProvisionServiceRequest", example("ProvisionServiceRequest")),
                        ("ProvisioningPaused", {"requestId": "r-1"})):
        with pytest.raises(UnknownWriterSchema):
            outside.decode(_written_by(copy, name, datum))

    assert "changed ['SlaTier.avsc']" in report
    assert "only top-level ['ProvisioningPaused.avsc']" in report


def test_a_doc_or_default_changed_at_the_top_level_only_is_drift(copy: Path) -> None:
    # Neither changes the fingerprint (the outside decoder still reads the records), but both
    # change the published contract: what readers fill in, what generated code says.
    _edit(copy / "ProvisioningSucceeded.avsc", lambda s: s.update(doc="Event: done."))

    assert "changed ['ProvisioningSucceeded.avsc']" in drift_report(copy, copy / "released")


def test_a_change_released_as_a_new_set_passes_both_checks(copy: Path) -> None:
    _edit(copy / "ProvisioningSucceeded.avsc", lambda s: s["fields"].append(
        {"name": "resourceUrl", "type": ["null", "string"], "default": None, "doc": "Where."}))
    shutil.copytree(copy, copy / "released" / "2", ignore=shutil.ignore_patterns("released"))
    datum = {**example("ProvisioningSucceeded"), "resourceUrl": "https://x.example/t"}

    decoded = OutsideDecoder(newest_set(copy / "released")).decode(
        _written_by(copy, "ProvisioningSucceeded", datum))

    assert drift_report(copy, copy / "released") == ""
    assert decoded == ("ProvisioningSucceeded", datum)


def test_a_set_released_twice_is_drift(copy: Path) -> None:
    shutil.copytree(copy, copy / "released" / "2", ignore=shutil.ignore_patterns("released"))

    assert "are identical" in drift_report(copy, copy / "released")
