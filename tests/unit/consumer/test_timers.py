"""The worker's timers (consumer/timers.py): due ones come out earliest first, timers set for
the same moment in the order they were set, revoked partitions' timers are forgotten, and a
payload is never compared (sagas' inputs have no order)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from consumer.timers import TimerQueue


class Unordered:
    """A payload that refuses to be compared, as the worker's frozen inputs do."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __lt__(self, other: object) -> bool:
        raise AssertionError("a payload was compared")


TIMERS = st.lists(st.tuples(st.integers(0, 50), st.integers(0, 3)), max_size=60)


@given(TIMERS, st.integers(0, 60))
def test_due_timers_come_out_earliest_first_then_in_the_order_set(
        timers: list[tuple[int, int]], now: int) -> None:
    queue = TimerQueue()
    for n, (fire_at, partition) in enumerate(timers):
        queue.set(fire_at, partition, Unordered(n))
    fired = queue.due(now)
    expected = sorted((t for t in enumerate(timers) if t[1][0] <= now),
                      key=lambda t: (t[1][0], t[0]))
    assert [(p, payload.n) for p, payload in fired] == [(p, n) for n, (_, p) in expected]
    assert len(queue) == len(timers) - len(expected)
    later = [fire_at for fire_at, _ in timers if fire_at > now]
    assert queue.next_fire_at() == (min(later) if later else None)


@given(TIMERS, st.sets(st.integers(0, 3)))
def test_a_revoked_partitions_timers_are_forgotten(timers: list[tuple[int, int]],
                                                   revoked: set[int]) -> None:
    queue = TimerQueue()
    for n, (fire_at, partition) in enumerate(timers):
        queue.set(fire_at, partition, Unordered(n))
    queue.drop_partitions(revoked)
    fired = queue.due(100)
    assert [payload.n for _, payload in fired] == [
        n for n, (_, p) in sorted(enumerate(timers), key=lambda t: (t[1][0], t[0]))
        if p not in revoked]


def test_at_most_limit_timers_come_out_at_once() -> None:
    queue = TimerQueue()
    for n in range(5):
        queue.set(10, 0, n)
    assert [payload for _, payload in queue.due(10, limit=3)] == [0, 1, 2]
    assert [payload for _, payload in queue.due(10)] == [3, 4]
