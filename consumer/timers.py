"""Saga timers (retry backoff, attempt timeouts, step deadlines, expiry) kept in memory.

Timers are not persisted: the saga state holds `next_retry_at` and `step_deadline`, and a
restored saga sets its timers again. A timer that is no longer relevant is not cancelled here;
`decide` ignores it when it fires (it names the run, step and attempt it was set for).
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field
from typing import Any


@dataclass(order=True, slots=True)
class _Entry:
    fire_at: int
    order: int
    partition: int = field(compare=False)
    payload: Any = field(compare=False)


class TimerQueue:
    def __init__(self) -> None:
        self._heap: list[_Entry] = []
        self._order = itertools.count()

    def __len__(self) -> int:
        return len(self._heap)

    def set(self, fire_at: int, partition: int, payload: Any) -> None:
        heapq.heappush(self._heap, _Entry(fire_at, next(self._order), partition, payload))

    def due(self, now: int, limit: int = 10_000) -> list[tuple[int, Any]]:
        """Pop up to `limit` timers due at `now`, earliest first, as (partition, payload)."""
        fired = []
        while self._heap and self._heap[0].fire_at <= now and len(fired) < limit:
            entry = heapq.heappop(self._heap)
            fired.append((entry.partition, entry.payload))
        return fired

    def next_fire_at(self) -> int | None:
        return self._heap[0].fire_at if self._heap else None

    def drop_partitions(self, partitions: set[int]) -> None:
        """Forget the timers of revoked partitions: their new owner sets them again."""
        self._heap = [e for e in self._heap if e.partition not in partitions]
        heapq.heapify(self._heap)
