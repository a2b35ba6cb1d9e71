"""Partitions left unrestored: the wait before each new try grows 1, 2, 4 ... up to 30 s, a
restore ends the wait, and a revoked partition is no longer tried."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from consumer.unrestored import UnrestoredPartitions


def test_the_wait_doubles_from_one_second_up_to_thirty() -> None:
    unrestored = UnrestoredPartitions()
    waits = [unrestored.failed(3, now=100.0, reason="Local: Unknown partition")
             for _ in range(8)]
    assert waits == [1, 2, 4, 8, 16, 30, 30, 30]
    assert unrestored.describe() == "3: 8 failed, last: Local: Unknown partition"


def test_a_partition_is_due_once_its_wait_has_passed() -> None:
    unrestored = UnrestoredPartitions()
    unrestored.failed(0, now=10.0, reason="a")
    unrestored.failed(1, now=10.0, reason="b")
    unrestored.failed(1, now=10.0, reason="b")  # second failure: 2 s
    assert unrestored.due(10.5) == []
    assert unrestored.due(11.0) == [0]
    assert unrestored.due(12.0) == [0, 1]
    assert 0 in unrestored and 2 not in unrestored
    assert "0: 1 failed, last: a" in unrestored.describe()


def test_restored_and_forgotten_partitions_are_tried_no_more() -> None:
    unrestored = UnrestoredPartitions()
    for partition in (0, 1, 2):
        unrestored.failed(partition, now=0.0, reason="x")
    unrestored.restored(0)
    unrestored.forget([1, 7])
    assert unrestored.numbers() == [2]
    assert unrestored.due(100.0) == [2]
    unrestored.restored(2)
    assert not unrestored
    assert unrestored.describe() == ""


@given(st.lists(st.integers(0, 5), max_size=40))
def test_a_partition_is_never_due_before_one_second_after_its_last_failure(
        failures: list[int]) -> None:
    unrestored = UnrestoredPartitions()
    for moment, partition in enumerate(failures):
        unrestored.failed(partition, now=float(moment), reason="x")
    last = {p: float(m) for m, p in enumerate(failures)}
    now = float(len(failures))
    for partition in unrestored.due(now + 0.999):
        assert last[partition] + 1 <= now + 0.999
    assert set(unrestored.due(now + 31)) == set(failures)


def test_the_gauge_counts_the_partitions_waiting() -> None:
    from prometheus_client import REGISTRY

    def gauge() -> float | None:
        return REGISTRY.get_sample_value("provisioning_unrestored_partitions")

    unrestored = UnrestoredPartitions()
    unrestored.failed(0, now=0.0, reason="x")
    unrestored.failed(1, now=0.0, reason="x")
    assert gauge() == 2
    unrestored.restored(0)
    assert gauge() == 1
    unrestored.forget([1])
    assert gauge() == 0
