"""`with_slot_init` gives a frozen, slotted dataclass an `__init__` that makes exactly what the
dataclass's generated one makes: for every class it is used on, the same parameters and
defaults, and for any arguments (some left out, some of the wrong kind) equal objects with
fields of the same types, or the same kind of error."""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import consumer.steps  # noqa: F401 - registers FinishedStep
import consumer.worker  # noqa: F401 - imports every module whose classes use it
from consumer.participants.base import StepCall, StepOutcome
from sagas import ExecuteStep, ProvisioningStepCompleted, SagaState, StepResult
from sagas.frozen import FrozenMap
from sagas.slot_init import GENERATED_INIT, with_slot_init

CLASSES = sorted(GENERATED_INIT, key=lambda cls: f"{cls.__module__}.{cls.__qualname__}")
VALUES = st.one_of(
    st.none(), st.integers(-3, 3), st.text(max_size=4), st.sampled_from(["IN_PROGRESS", "x"]),
    st.dictionaries(st.text(max_size=2), st.text(max_size=2), max_size=2),
    st.dictionaries(st.text(max_size=2), st.text(max_size=2), max_size=2).map(FrozenMap),
)


def test_the_classes_of_the_loop_use_it() -> None:
    # The ones the worker makes for every saga; a class that loses its decorator fails here.
    for cls in (SagaState, ProvisioningStepCompleted, ExecuteStep, StepResult, StepCall,
                StepOutcome, consumer.steps.FinishedStep):
        assert cls in GENERATED_INIT


@pytest.mark.parametrize("cls", CLASSES, ids=lambda cls: cls.__qualname__)
def test_the_same_parameters_and_defaults(cls: type) -> None:
    def shape(function: Any) -> list[tuple[str, Any, str]]:
        parameters = inspect.signature(function).parameters.values()
        return [(p.name, p.kind, repr(p.default)) for p in parameters]  # "<factory>" alike

    assert shape(cls.__init__) == shape(GENERATED_INIT[cls])


@pytest.mark.parametrize("cls", CLASSES, ids=lambda cls: cls.__qualname__)
@given(data=st.data())
def test_the_same_object_or_the_same_error(cls: type, data: st.DataObject) -> None:
    fields = dataclasses.fields(cls)
    given_names = data.draw(st.sets(st.sampled_from([f.name for f in fields])) if fields
                            else st.just(set()))
    arguments = {name: data.draw(VALUES, label=name) for name in sorted(given_names)}

    def make(init: Any) -> Any:
        made = object.__new__(cls)
        try:
            init(made, **arguments)
        except Exception as exc:  # noqa: BLE001 - compared below
            return type(exc)
        return made

    ours, theirs = make(cls.__init__), make(GENERATED_INIT[cls])
    if isinstance(theirs, type):
        assert ours is theirs
        return
    assert not isinstance(ours, type), f"raised {ours} where the dataclass made {theirs!r}"
    assert ours == theirs
    for f in fields:
        mine, generated = getattr(ours, f.name), getattr(theirs, f.name)
        assert type(mine) is type(generated), f.name
        assert mine == generated, f.name


def test_positional_parameters_as_the_dataclass_has_them() -> None:
    call = StepCall("r-1", 1, "tenant", "t-1", "create-tenant", "EXECUTE", 1, "r-1:1:create-tenant",
                    {"a": "b"})
    assert (call.request_id, call.attempt, call.params, call.deadline_at) == \
        ("r-1", 1, {"a": "b"}, None)


def test_a_default_factory_makes_a_new_value_each_time() -> None:
    first, second = StepOutcome("SUCCEEDED"), StepOutcome("SUCCEEDED")
    assert first.output == {} and first.output is not second.output


def test_refuses_what_it_cannot_make() -> None:
    @dataclasses.dataclass(slots=True)
    class Mutable:
        a: int

    @dataclasses.dataclass(frozen=True)
    class WithoutSlots:
        a: int

    @dataclasses.dataclass(frozen=True, slots=True)
    class Computed:
        a: int
        b: int = dataclasses.field(init=False, default=0)

    for cls in (Mutable, WithoutSlots, Computed):
        with pytest.raises(TypeError):
            with_slot_init(cls)
