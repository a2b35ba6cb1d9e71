"""Saga timers (retry backoff, attempt timeouts, step deadlines, expiry) kept in memory.

Timers are not persisted: the saga state holds `next_retry_at` and `step_deadline`, and a
restored saga sets its timers again. A timer that is no longer relevant is not cancelled here;
`decide` ignores it when it fires (it names the run, step and attempt it was set for).
"""

from __future__ import annotations

import heapq
import itertools
from typing import Any


class TimerQueue:
    """A heap of (fire_at, order, partition, payload): `order` is unique, so two entries
    compare in C by their first two items and payloads are never compared (the dataclass
    entry it replaces compared in Python, a few percent of the no-op worker's loop)."""

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, int, Any]] = []
        self._order = itertools.count()

    def __len__(self) -> int:
        return len(self._heap)

    def set(self, fire_at: int, partition: int, payload: Any) -> None:
        heapq.heappush(self._heap, (fire_at, next(self._order), partition, payload))

    def due(self, now: int, limit: int = 10_000) -> list[tuple[int, Any]]:
        """Pop up to `limit` timers due at `now`, earliest first, as (partition, payload)."""
        fired = []
        heap = self._heap
        while heap and heap[0][0] <= now and len(fired) < limit:
            _, _, partition, payload = heapq.heappop(heap)
            fired.append((partition, payload))
        return fired

    def next_fire_at(self) -> int | None:
        return self._heap[0][0] if self._heap else None

    def drop_partitions(self, partitions: set[int]) -> None:
        """Forget the timers of revoked partitions: their new owner sets them again."""
        self._heap = [e for e in self._heap if e[2] not in partitions]
        heapq.heapify(self._heap)
