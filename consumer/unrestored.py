"""Assigned partitions whose saga states could not be restored yet, and when to try again.

A restore can fail for a while after a broker fault: the state partition's leader is unknown
to the client ("Local: Unknown partition", seen for a whole minute in the replicated chaos
run), or its read does not reach the end in time. Such a partition stays assigned but paused
(its commands and replies wait in Kafka, unread) and the worker goes on with the others; the
restore is tried again on a later turn, after a wait that grows with each failure.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from provisioning import metrics

FIRST_WAIT_S = 1.0
MAX_WAIT_S = 30.0


@dataclass(slots=True)
class _Failing:
    failures: int
    retry_at: float  # monotonic seconds
    reason: str


class UnrestoredPartitions:
    def __init__(self) -> None:
        self._failing: dict[int, _Failing] = {}

    def __contains__(self, partition: object) -> bool:
        return partition in self._failing

    def __bool__(self) -> bool:
        return bool(self._failing)

    def numbers(self) -> list[int]:
        return sorted(self._failing)

    def failed(self, partition: int, now: float, reason: str) -> float:
        """Record a failed restore; returns the wait before the next try (1, 2, 4 ... 30 s)."""
        previous = self._failing.get(partition)
        failures = previous.failures + 1 if previous is not None else 1
        wait_s = min(MAX_WAIT_S, FIRST_WAIT_S * 2 ** (failures - 1))
        self._failing[partition] = _Failing(failures, now + wait_s, reason)
        self._changed()
        return wait_s

    def due(self, now: float) -> list[int]:
        return sorted(p for p, f in self._failing.items() if f.retry_at <= now)

    def restored(self, partition: int) -> None:
        self._failing.pop(partition, None)
        self._changed()

    def forget(self, partitions: Iterable[int]) -> None:
        """Revoked or lost: no longer this worker's to restore."""
        for partition in partitions:
            self._failing.pop(partition, None)
        self._changed()

    def describe(self) -> str:
        return "; ".join(f"{p}: {f.failures} failed, last: {f.reason}"
                         for p, f in sorted(self._failing.items()))

    def _changed(self) -> None:
        metrics.UNRESTORED_PARTITIONS.set(len(self._failing))
