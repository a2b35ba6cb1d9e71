"""A restore pauses Python's cyclic collector and leaves it as it found it."""

from __future__ import annotations

import gc

import pytest

from consumer.state_store import collector_paused


@pytest.mark.parametrize("enabled", [True, False])
def test_the_collector_is_off_during_a_read_and_as_before_after_it(enabled: bool) -> None:
    was = gc.isenabled()
    (gc.enable if enabled else gc.disable)()
    try:
        with collector_paused():
            assert not gc.isenabled()
        assert gc.isenabled() is enabled
    finally:
        (gc.enable if was else gc.disable)()


def test_the_collector_is_back_on_after_a_read_that_failed() -> None:
    assert gc.isenabled()
    with pytest.raises(RuntimeError), collector_paused():
        raise RuntimeError("the broker went away")
    assert gc.isenabled()
