"""`with_changes` is `dataclasses.replace` for a saga's state, only cheaper: for any state and
any changes it gives an equal state, with the maps frozen and the status typed as the
dataclass's own `__post_init__` makes them, and refuses a name that is no field."""

from __future__ import annotations

import dataclasses
import typing

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sagas.frozen import FrozenMap
from sagas.state import SagaState, Status, with_changes


def _frozen_maps(hint: typing.Any) -> st.SearchStrategy[FrozenMap]:
    values = st.integers() if typing.get_args(hint)[1] is int else st.text(max_size=5)
    return st.dictionaries(st.text(max_size=5), values, max_size=3).map(FrozenMap)


st.register_type_strategy(FrozenMap, _frozen_maps)  # type: ignore[arg-type]
STATES = st.from_type(SagaState)
FIELDS = [f.name for f in dataclasses.fields(SagaState)]


@given(STATES, STATES, st.sets(st.sampled_from(FIELDS)), st.booleans())
def test_the_same_state_as_replace(state: SagaState, other: SagaState, names: set[str],
                                   as_sent: bool) -> None:
    changes: dict[str, typing.Any] = {name: getattr(other, name) for name in names}
    if as_sent:  # as a caller may pass them: plain dicts and a status's text
        changes = {name: dict(value) if isinstance(value, FrozenMap)
                   else str(value) if isinstance(value, Status) else value
                   for name, value in changes.items()}
    changed = with_changes(state, **changes)
    assert changed == dataclasses.replace(state, **changes)
    for field in dataclasses.fields(SagaState):
        value = getattr(changed, field.name)
        if typing.get_origin(typing.get_type_hints(SagaState)[field.name]) is FrozenMap:
            assert isinstance(value, FrozenMap)
    assert type(changed.status) is Status
    assert changed is not state


def test_a_name_that_is_no_field_is_refused() -> None:
    state = SagaState(request_id="r", workflow_type="tenant", workflow_version=1,
                      status=Status.PENDING, run=1, sequence=1, payload_hash="h",
                      requested_by="u", started_at=1, updated_at=1)
    with pytest.raises(TypeError, match="no field stauts"):
        with_changes(state, stauts=Status.FAILED)
