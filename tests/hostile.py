"""Hostile command records, as hypothesis strategies: what a broken or malicious producer could
put on the commands topic.

Each strategy draws a `Hostile(key, value, kind)`. Most kinds can never be a valid command
(random bytes, truncations, wrong fingerprints, enum indexes out of range, fields missing from
the writer, values over the size limit); a few can happen to be one (a mutated byte inside a
string, generated field values). Tests decide which by running the worker's own checks.
"""

from __future__ import annotations

import copy
import io
import uuid
from dataclasses import dataclass
from typing import Any

from fastavro import parse_schema, schemaless_writer
from hypothesis import strategies as st

from schemas import codec
from schemas.examples import EXAMPLES

COMMANDS = ("ProvisionTenantRequest", "ProvisionServiceRequest", "ProvisionUserRequest",
            "ProvisionResourceRequest")
VALID = {name: codec.encode(name, EXAMPLES[name]) for name in COMMANDS}


@dataclass(frozen=True)
class Hostile:
    key: bytes | None
    value: bytes
    kind: str


def _key_of(value: bytes) -> bytes:
    """The requestId the record claims, when it still decodes; else a fresh one."""
    try:
        return str(codec.decode(value).value["requestId"]).encode()
    except Exception:  # noqa: BLE001 - hostile bytes: anything goes
        return str(uuid.uuid4()).encode()


def _fresh(name: str, **changes: Any) -> dict[str, Any]:
    return {**EXAMPLES[name], "requestId": str(uuid.uuid4()), **changes}


def _with_writer(name: str, change_schema: Any, datum: dict[str, Any]) -> bytes:
    """`datum` written with a changed copy of `name`'s schema, under the real header: what a
    producer with a wrong schema (but the right fingerprint) sends."""
    schema = copy.deepcopy(dict(codec.schema(name).schema))
    change_schema(schema)
    out = io.BytesIO()
    schemaless_writer(out, parse_schema(schema), datum)
    return codec.MAGIC + codec.schema(name).fingerprint_bytes + out.getvalue()


def _drop_field(field: str) -> Any:
    def change(schema: dict[str, Any]) -> None:
        schema["fields"] = [f for f in schema["fields"] if f["name"] != field]
    return change


def _extra_plan(schema: dict[str, Any]) -> None:
    plan = next(f for f in schema["fields"] if f["name"] == "subscriptionPlan")
    plan["type"] = {**plan["type"], "symbols": [*plan["type"]["symbols"], "GALACTIC"]}


names = st.sampled_from(COMMANDS)

random_bytes = st.binary(max_size=400).map(lambda b: Hostile(None, b, "random bytes"))
behind_the_marker = st.binary(max_size=400).map(
    lambda b: Hostile(str(uuid.uuid4()).encode(), codec.MAGIC + b, "random body"))
truncated = names.flatmap(lambda n: st.integers(0, len(VALID[n]) - 1).map(
    lambda end: Hostile(_key_of(VALID[n]), VALID[n][:end], "truncated")))
wrong_fingerprint = st.tuples(names, st.binary(min_size=8, max_size=8)).map(
    lambda t: Hostile(_key_of(VALID[t[0]]), codec.MAGIC + t[1] + VALID[t[0]][10:],
                      "wrong fingerprint"))


@st.composite
def mutated(draw: st.DrawFn) -> Hostile:
    name = draw(names)
    data = bytearray(codec.encode(name, _fresh(name)))
    at = draw(st.integers(codec.HEADER_SIZE, len(data) - 1))
    patch = draw(st.binary(min_size=1, max_size=4))
    data[at:at + len(patch)] = patch
    return Hostile(_key_of(bytes(data)), bytes(data), "mutated body")


huge_string = st.tuples(st.sampled_from(["requestedBy", "entityId", "tenantName"]),
                        st.integers(300, 200_000)).map(
    lambda t: _huge("ProvisionTenantRequest", t[0], t[1]))


def _huge(name: str, field: str, size: int) -> Hostile:
    datum = _fresh(name, **{field: "x" * size})
    return Hostile(datum["requestId"].encode(), codec.encode(name, datum), f"huge {field}")


def enum_index_out_of_range() -> Hostile:
    datum = _fresh("ProvisionTenantRequest", subscriptionPlan="GALACTIC")
    return Hostile(datum["requestId"].encode(),
                   _with_writer("ProvisionTenantRequest", _extra_plan, datum), "enum index")


enum_out_of_range = st.builds(enum_index_out_of_range)


missing_fields = st.sampled_from(
    ["requestedBy", "entityId", "subscriptionPlan", "billingInfo"]
).map(lambda field: missing_field("ProvisionTenantRequest", field))


def missing_field(name: str, field: str) -> Hostile:
    datum = _fresh(name)
    del datum[field]
    return Hostile(datum["requestId"].encode(), _with_writer(name, _drop_field(field), datum),
                   f"missing {field}")


text = st.text(max_size=80)
invalid_values = st.one_of(
    text.map(lambda v: ("ProvisionUserRequest", "email", v)),
    text.map(lambda v: ("ProvisionUserRequest", "roleName", v)),
    text.map(lambda v: ("ProvisionServiceRequest", "serviceName", v)),
    text.map(lambda v: ("ProvisionTenantRequest", "requestedBy", v)),
    text.map(lambda v: ("ProvisionTenantRequest", "replyTo", v)),
    st.dictionaries(text, text, max_size=40).map(
        lambda v: ("ProvisionResourceRequest", "resourceSpec", v)),
).map(lambda t: _changed(*t))


def _changed(name: str, field: str, value: Any) -> Hostile:
    datum = _fresh(name, **{field: value})
    return Hostile(datum["requestId"].encode(), codec.encode(name, datum), f"invalid {field}")


wrong_key = names.map(lambda n: Hostile(str(uuid.uuid4()).encode(), codec.encode(n, _fresh(n)),
                                        "key is not the requestId"))
not_a_command = st.sampled_from(["StepReply", "SagaState", "ProvisioningSucceeded"]).map(
    lambda n: Hostile(str(uuid.uuid4()).encode(), codec.encode(n, EXAMPLES[n]), "not a command"))

hostile_records = st.one_of(
    random_bytes, behind_the_marker, truncated, wrong_fingerprint, mutated(), huge_string,
    enum_out_of_range, missing_fields, invalid_values, wrong_key, not_a_command,
)
