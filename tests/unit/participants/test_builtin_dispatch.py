"""Pure checks of the built-in participant: it covers every step of the saga engine's workflow
table exactly, and the names it gives databases are valid PostgreSQL identifiers."""

from __future__ import annotations

import re
import uuid

from hypothesis import given
from hypothesis import strategies as st

from consumer.participants.base import Action
from consumer.participants.builtin.participant import DISPATCH
from consumer.participants.builtin.resource import database_names
from sagas.workflows import DEFAULT_REGISTRY

IDENTIFIER = re.compile(r"^[a-z][a-z0-9_]*$")


def test_every_step_has_an_execute_and_exactly_the_compensated_ones_an_undo() -> None:
    expected = set()
    for workflow in DEFAULT_REGISTRY:
        for step in workflow.steps:
            expected.add((workflow.type, step.name, Action.EXECUTE))
            if step.compensation is not None:
                expected.add((workflow.type, step.name, Action.COMPENSATE))

    assert set(DISPATCH) == expected


@given(name=st.text(max_size=80))
def test_database_names_are_plain_identifiers_within_63_bytes(name: str) -> None:
    schema, role = database_names(uuid.uuid4(), uuid.uuid4(), name)

    for identifier in (schema, role):
        assert IDENTIFIER.match(identifier), identifier
        assert len(identifier.encode()) <= 63
    assert role == f"{schema}_owner"

