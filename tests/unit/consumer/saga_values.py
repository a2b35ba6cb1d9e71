"""Hypothesis strategies for the saga's dataclasses, as callers and participants may fill them:
any code point (lone surrogates among them), integers beyond 64 bits, large texts."""

from __future__ import annotations

import dataclasses
import types
import typing

from hypothesis import strategies as st

from sagas import Status
from sagas.frozen import FrozenMap

# Text as participants and callers may send it: any code point, lone surrogates included
# (Avro cannot hold them: both paths must refuse).
TEXT = st.text(st.characters(codec="utf-8") | st.characters(categories=["Cs"]), max_size=12) \
    | st.text(max_size=9000)  # beyond 8,191 bytes: a length above the writer's table
LONG = st.integers(-(1 << 63), (1 << 63) - 1) | st.integers(-(1 << 70), 1 << 70) \
    | st.integers(-300, 300)


def strategy(hint: typing.Any) -> st.SearchStrategy[typing.Any]:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return st.none() | strategy(inner[0])
    if hint is str:
        return TEXT
    if hint is int:
        return LONG
    if hint is bool:
        return st.booleans()
    if hint is Status:
        return st.sampled_from(Status)
    if origin is tuple:
        return st.lists(TEXT, max_size=4).map(tuple)
    if origin is FrozenMap:
        values = LONG if args[1] is int else TEXT
        return st.dictionaries(TEXT, values, max_size=4).map(FrozenMap)
    raise AssertionError(f"no strategy for {hint}")


def instances(cls: type) -> st.SearchStrategy[typing.Any]:
    hints = typing.get_type_hints(cls)
    return st.builds(cls, **{f.name: strategy(hints[f.name]) for f in dataclasses.fields(cls)})
