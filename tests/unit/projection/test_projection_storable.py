"""What PostgreSQL cannot store (NUL in text) is replaced, not refused: the projection of a
participant's odd reason must not stop."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from projection.store import storable

values = st.recursive(
    st.none() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


def test_nul_in_nested_strings_and_keys_is_replaced() -> None:
    value = {"reason": "bad\x00byte", "output": {"k\x00": ["a\x00", 1]}}

    assert storable(value) == {"reason": "bad\ufffdbyte", "output": {"k\ufffd": ["a\ufffd", 1]}}


def strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in strings(k) + strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    return []


@given(values)
def test_no_nul_survives_and_everything_else_is_kept(value: object) -> None:
    stored = storable(value)

    assert not any("\x00" in s for s in strings(stored))
    if not any("\x00" in s for s in strings(value)):
        assert stored == value
