"""Running steps off the polling thread, with bounded concurrency.

The worker's loop must never wait for a participant: it hands each released `ExecuteStep` or
`CompensateStep` to a thread pool and picks the outcomes up on a later turn. Outcomes carry
the partition and its assignment generation, so a late result for a partition that was revoked
(or revoked and assigned again) in the meantime is recognised and discarded.
"""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from consumer.participants.base import Participant, StepCall, StepOutcome

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class FinishedStep:
    partition: int
    generation: int
    call: StepCall
    outcome: StepOutcome
    duration_s: float


class StepRunner:
    def __init__(self, route: Callable[[StepCall], Participant], concurrency: int = 32) -> None:
        self._route = route
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="step")
        self._finished: queue.SimpleQueue[FinishedStep] = queue.SimpleQueue()
        self._running = 0

    @property
    def running(self) -> int:
        return self._running

    def submit(self, partition: int, generation: int, call: StepCall) -> None:
        self._running += 1
        self._pool.submit(self._run, partition, generation, call)

    def finished(self, limit: int = 10_000) -> list[FinishedStep]:
        """Outcomes that arrived since the last call (never blocks)."""
        done = []
        while len(done) < limit:
            try:
                done.append(self._finished.get_nowait())
            except queue.Empty:
                break
        self._running -= len(done)
        return done

    def wait_for_any(self, timeout_s: float) -> None:
        """Sleep until an outcome arrives or the timeout passes (used when idle)."""
        try:
            item = self._finished.get(timeout=timeout_s)
        except queue.Empty:
            return
        self._finished.put(item)

    def shutdown(self, wait: bool = True) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=not wait)

    def _run(self, partition: int, generation: int, call: StepCall) -> None:
        started = time.perf_counter()
        try:
            if call.deadline_at is not None and time.time() * 1000 >= call.deadline_at:
                # The saga stopped waiting while the call queued; calling now is wasted work.
                outcome = StepOutcome.transient("the attempt's time ran out before it started")
            else:
                outcome = self._route(call).call(call)
        except Exception as exc:  # noqa: BLE001 - a participant bug must not kill the worker
            log.exception("participant raised", extra={"request_id": call.request_id,
                                                       "step": call.step})
            outcome = StepOutcome.transient(f"participant error: {type(exc).__name__}")
        self._finished.put(
            FinishedStep(partition, generation, call, outcome, time.perf_counter() - started)
        )
