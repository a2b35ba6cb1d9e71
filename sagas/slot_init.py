"""A quicker `__init__` for the saga's frozen, slotted dataclasses.

A frozen dataclass's generated `__init__` sets each field with `object.__setattr__(self, name,
value)`, which finds the slot's descriptor by name every time: 106 ns a field on this machine,
against 59 through the descriptor itself. The worker makes some sixty such objects per saga
(events, effects, inputs, step calls and outcomes), so `with_slot_init` gives a class an
`__init__` made once from its fields that calls each slot's descriptor directly: the same
parameters, defaults and `__post_init__` call as the generated one, which
`tests/unit/sagas/test_slot_init.py` holds it to (the generated one is kept in
`GENERATED_INIT` for that).
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any, TypeVar

C = TypeVar("C", bound=type)

# Every class given its own `__init__`, with the dataclass's generated one.
GENERATED_INIT: dict[type, Callable[..., None]] = {}


class _Factory:
    """The default of a parameter whose value comes from a factory (shown as the dataclass
    shows its own)."""

    def __repr__(self) -> str:
        return "<factory>"


_NO_VALUE = _Factory()


def with_slot_init(cls: C) -> C:
    """Replace the generated `__init__` of `cls`, a frozen dataclass with slots."""
    params = getattr(cls, "__dataclass_params__", None)
    if params is None or not params.frozen or "__slots__" not in vars(cls):
        raise TypeError(f"{cls.__name__} is not a frozen dataclass with slots")
    fields = dataclasses.fields(cls)
    pseudo_fields = vars(cls)["__dataclass_fields__"]  # InitVar and ClassVar ones too
    if len(fields) != len(pseudo_fields) or not all(f.init for f in fields):
        raise TypeError(f"{cls.__name__} has fields this __init__ does not make "
                        "(InitVar, ClassVar or init=False)")
    namespace: dict[str, Any] = {"NO_VALUE": _NO_VALUE}
    positional: list[str] = []
    keyword: list[str] = []
    body: list[str] = []
    for f in fields:
        namespace[f"set_{f.name}"] = slot_setter(cls, f.name)
        if f.default is not dataclasses.MISSING:
            namespace[f"default_{f.name}"] = f.default
            parameter = f"{f.name}=default_{f.name}"
        elif f.default_factory is not dataclasses.MISSING:
            namespace[f"factory_{f.name}"] = f.default_factory
            parameter = f"{f.name}=NO_VALUE"
            body.append(f"    if {f.name} is NO_VALUE: {f.name} = factory_{f.name}()")
        else:
            parameter = f.name
        (keyword if f.kw_only else positional).append(parameter)
    body += [f"    set_{f.name}(self, {f.name})" for f in fields]
    if hasattr(cls, "__post_init__"):
        body.append("    self.__post_init__()")
    signature = ", ".join(["self", *positional, *(["*", *keyword] if keyword else [])])
    exec(f"def __init__({signature}):\n" + "\n".join(body or ["    pass"]),  # noqa: S102
         namespace)  # the source is made above from the class's field names
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    GENERATED_INIT[cls] = cls.__init__  # type: ignore[misc]
    cls.__init__ = init  # type: ignore[misc]
    return cls


def slot_setter(cls: type, name: str) -> Callable[[Any, Any], None]:
    """What sets field `name` of a `cls` object: its slot descriptor's `__set__`, found on
    `cls` or the base class that declares it (frozenness is `__setattr__`'s, not the slot's)."""
    slot = inspect.getattr_static(cls, name)
    if not inspect.ismemberdescriptor(slot):
        raise TypeError(f"{cls.__name__}.{name} is not a slot")
    return slot.__set__  # type: ignore[no-any-return]
