"""Running steps off the polling thread, with bounded concurrency.

The worker's loop must never wait for a participant: it hands each released `ExecuteStep` or
`CompensateStep` to a pool of step threads and picks the outcomes up on a later turn. The pool
is two C-implemented queues and daemon threads, not a `ThreadPoolExecutor`: its future, lock
and condition per call were 8 % of the no-op worker's loop (py-spy, full load), and its
threads are joined at the interpreter's exit, where a participant stuck in a call would keep
a stopped worker running. Outcomes carry the partition and its assignment generation, so a
late result for a partition that was revoked (or revoked and assigned again) in the meantime
is recognised and discarded.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from consumer.participants.base import Participant, StepCall, StepOutcome
from sagas.slot_init import with_slot_init

log = logging.getLogger(__name__)


@with_slot_init
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
        self._calls: queue.SimpleQueue[tuple[int, int, StepCall] | None] = queue.SimpleQueue()
        self._finished: queue.SimpleQueue[FinishedStep] = queue.SimpleQueue()
        self._running = 0
        self._threads = [threading.Thread(target=self._serve, name=f"step_{i}", daemon=True)
                         for i in range(concurrency)]
        for thread in self._threads:
            thread.start()

    @property
    def running(self) -> int:
        return self._running

    def submit(self, partition: int, generation: int, call: StepCall) -> None:
        self._running += 1
        self._calls.put((partition, generation, call))

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
        """Sleep until an outcome arrives or the timeout passes (the loop, while steps run)."""
        try:
            item = self._finished.get(timeout=timeout_s)
        except queue.Empty:
            return
        self._finished.put(item)

    def shutdown(self, wait: bool = True) -> None:
        """Stop the step threads once they finish their calls; unless `wait`, calls not yet
        started are dropped (their sagas resume from their state wherever they run next)."""
        if not wait:
            _drain(self._calls)
        for _ in self._threads:
            self._calls.put(None)
        if wait:
            for thread in self._threads:
                thread.join()

    def _serve(self) -> None:
        while (work := self._calls.get()) is not None:
            self._run(*work)

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


def _drain(calls: queue.SimpleQueue[Any]) -> None:
    while True:
        try:
            calls.get_nowait()
        except queue.Empty:
            return
