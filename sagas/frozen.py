"""An immutable, hashable mapping for the saga's frozen dataclasses.

Saga states, inputs, events and effects are values: equal when their fields are equal, usable as
dict keys and safe to share. `dict` is mutable and `types.MappingProxyType` is not hashable,
hence this small mapping. It compares equal to any mapping with the same items, so a test may
write `state.outputs == {"tenantId": "t-1"}`.
"""

from __future__ import annotations

import types
from collections.abc import ItemsView, Iterator, KeysView, Mapping, ValuesView
from typing import Any, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class FrozenMap(Mapping[K, V]):
    __slots__ = ("_items", "_hash")
    # FrozenMap[str, str] in annotations; the wire mapping reads the origin class from it.
    __class_getitem__ = classmethod(types.GenericAlias)

    def __init__(self, items: Mapping[K, V] | Any = ()) -> None:
        # From another FrozenMap: its dict, copied in C (Mapping's protocol would call
        # __getitem__ once per key in Python). A dict is told apart first, by its exact type:
        # `isinstance(x, FrozenMap)` is false for it only after a Python-level call of the
        # ABC machinery's __instancecheck__ (FrozenMap is a Mapping), for every step's output.
        if type(items) is not dict and isinstance(items, FrozenMap):
            items = items._items
        self._items: dict[K, V] = dict(items)
        self._hash: int | None = None

    def __getitem__(self, key: K) -> V:
        return self._items[key]

    def __iter__(self) -> Iterator[K]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    # The dict's own read-only views and lookups: the worker reads these maps for every record
    # it writes, and Mapping's generic versions run a Python frame per item (measured: a third
    # of a million generator steps per thousand sagas).
    def keys(self) -> KeysView[K]:
        return self._items.keys()

    def values(self) -> ValuesView[V]:
        return self._items.values()

    def items(self) -> ItemsView[K, V]:
        return self._items.items()

    def get(self, key: K, default: Any = None) -> Any:
        return self._items.get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash(frozenset(self._items.items()))
        return self._hash

    def __eq__(self, other: object) -> bool:
        if isinstance(other, FrozenMap):
            return self._items == other._items
        if isinstance(other, Mapping):
            return self._items == dict(other.items())
        return NotImplemented

    def __repr__(self) -> str:
        return f"FrozenMap({self._items!r})"

    def set(self, key: K, value: V) -> FrozenMap[K, V]:
        """A copy with `key` set to `value`."""
        return FrozenMap({**self._items, key: value})

    def without(self, key: K) -> FrozenMap[K, V]:
        """A copy without `key` (itself when `key` is absent)."""
        if key not in self._items:
            return self
        return FrozenMap({k: v for k, v in self._items.items() if k != key})

    def merge(self, other: Mapping[K, V]) -> FrozenMap[K, V]:
        """A copy with the items of `other` added (they win on equal keys)."""
        extra = other if type(other) is dict else (
            other._items if isinstance(other, FrozenMap) else other)
        return FrozenMap({**self._items, **extra})


EMPTY: FrozenMap[Any, Any] = FrozenMap()


def freeze(mapping: Mapping[K, V] | None) -> FrozenMap[K, V]:
    """`mapping` as a FrozenMap (itself when it already is one)."""
    if type(mapping) is FrozenMap:  # the exact type first: see FrozenMap.__init__
        return mapping
    if type(mapping) is not dict and isinstance(mapping, FrozenMap):
        return mapping
    return FrozenMap(mapping or {})


def freeze_fields(obj: Any, *names: str) -> None:
    """In a frozen dataclass's __post_init__: accept any mapping, keep a FrozenMap."""
    for name in names:
        value = getattr(obj, name)
        if type(value) is not FrozenMap:  # most are already (a saga's maps are passed on)
            object.__setattr__(obj, name, freeze(value))
