"""Liveness: an assigned partition with unread records makes progress, or operators hear of it.

A worker may hold back on purpose (flow control pauses its command partitions while too much
is in flight). Anything else that leaves records unread — a partition paused by mistake, as
librdkafka keeps a pause across a re-assignment; a fetch that never resumes; a bug of the same
kind yet to be written — would stop provisioning for every tenant on that partition while the
process looks healthy. The watchdog notices: a partition whose consumed offset stays below its
end for `stall_after_s` while the worker is not holding it back is *stalled*. Readiness turns
false, a warning is logged and `provisioning_partition_stalls_total` counts it, until the
partition moves again.

`StallDetector` is the rule (pure); `PartitionWatchdog` takes readings on its own thread, so
the broker round trips it needs never delay the poll loop.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaException, TopicPartition

from provisioning import metrics

log = logging.getLogger(__name__)

Key = tuple[str, int]  # topic, partition


@dataclass(frozen=True, slots=True)
class Reading:
    consumed: int  # the next offset the worker will read
    end: int  # the partition's end offset
    held_back: bool  # paused on purpose by flow control


class StallDetector:
    def __init__(self, stall_after_s: float) -> None:
        self.stall_after_s = stall_after_s
        self._last: dict[Key, int] = {}
        self._still_since: dict[Key, float] = {}
        self._stalled: dict[Key, Reading] = {}

    @property
    def stalled(self) -> dict[Key, Reading]:
        return dict(self._stalled)

    def observe(self, now: float, readings: Mapping[Key, Reading]) -> tuple[list[Key], list[Key]]:
        """Take one reading of every assigned partition; returns (newly stalled, recovered).
        A partition that is no longer assigned is forgotten."""
        for key in set(self._last) - set(readings):
            self._forget(key)
        stalled, recovered = [], []
        for key, reading in readings.items():
            moved = self._last.get(key) != reading.consumed
            self._last[key] = reading.consumed
            if moved or reading.held_back or reading.consumed >= reading.end:
                self._still_since.pop(key, None)
                if self._stalled.pop(key, None) is not None:
                    recovered.append(key)
                continue
            since = self._still_since.setdefault(key, now)
            if now - since >= self.stall_after_s and key not in self._stalled:
                self._stalled[key] = reading
                stalled.append(key)
        return stalled, recovered

    def _forget(self, key: Key) -> None:
        self._last.pop(key, None)
        self._still_since.pop(key, None)
        self._stalled.pop(key, None)


def report_lag(group: str, readings: Mapping[Key, Reading], reported: set[Key]) -> set[Key]:
    """Each read partition's unread records as `provisioning_consumer_lag`; the samples of
    `reported` partitions no longer read (revoked) are removed. Returns what is reported."""
    for topic, partition in reported - readings.keys():
        metrics.CONSUMER_LAG.remove(group, topic, str(partition))
    for (topic, partition), reading in readings.items():
        lag = max(0, reading.end - reading.consumed)
        metrics.CONSUMER_LAG.labels(group, topic, str(partition)).set(lag)
    return set(readings)


class PartitionWatchdog:
    """Every `interval_s`: the worker consumer's assignment and positions (local reads), the
    group's committed offsets and the partitions' end offsets (its own probe client). From the
    same readings, the lag of every assigned partition (`provisioning_consumer_lag`): the
    worker commits its offsets inside transactions, which librdkafka's statistics never see
    (their consumer lag stays -1)."""

    def __init__(self, consumer: Consumer, probe_config: dict, held_back: Callable[[str], bool],
                 stall_after_s: float, interval_s: float) -> None:
        self._consumer = consumer
        self._group = str(probe_config["group.id"])
        self._lagging: set[Key] = set()  # partitions with a lag sample, to remove when revoked
        self._probe = Consumer(probe_config, logger=log)
        self._held_back = held_back
        self._interval_s = interval_s
        self.detector = StallDetector(stall_after_s)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="watchdog", daemon=True)

    def start(self) -> PartitionWatchdog:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.ident is not None:  # started
            self._thread.join(timeout=10)
        self._probe.close()

    def problem(self) -> str | None:
        """Why the worker is not live, for readiness; None when every partition moves."""
        stalled = self.detector.stalled
        if not stalled:
            return None
        parts = ", ".join(f"{t}[{p}] ({r.end - r.consumed} unread)"
                          for (t, p), r in sorted(stalled.items()))
        return (f"partitions stalled (unread records, no progress for "
                f"{self.detector.stall_after_s:.0f} s): {parts}")

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                readings = self._readings()
            except (KafkaException, RuntimeError) as exc:  # broker away, or closing: next time
                log.debug("watchdog reading skipped: %s", exc)
                continue
            self.check(readings, time.monotonic())

    def check(self, readings: Mapping[Key, Reading], now: float) -> None:
        self._lagging = report_lag(self._group, readings, self._lagging)
        stalled, recovered = self.detector.observe(now, readings)
        for topic, partition in stalled:
            reading = readings[(topic, partition)]
            metrics.PARTITION_STALLS.labels(topic).inc()
            log.warning("partition stalled: unread records and no progress", extra={
                "topic": topic, "partition": partition, "unread": reading.end - reading.consumed,
                "consumed": reading.consumed, "stall_after_s": self.detector.stall_after_s})
        for topic, partition in recovered:
            log.info("partition moves again", extra={"topic": topic, "partition": partition})
        metrics.STALLED_PARTITIONS.set(len(self.detector.stalled))

    def _readings(self) -> dict[Key, Reading]:
        assignment = self._consumer.assignment()
        if not assignment:
            return {}
        positions = {(tp.topic, tp.partition): tp.offset
                     for tp in self._consumer.position(assignment)}
        committed = {(tp.topic, tp.partition): tp.offset
                     for tp in self._probe.committed(assignment, timeout=10)}
        readings = {}
        for tp in assignment:
            key = (tp.topic, tp.partition)
            low, end = self._probe.get_watermark_offsets(
                TopicPartition(tp.topic, tp.partition), timeout=5, cached=False)
            # Not read since the assignment: where it will start (committed, else the start).
            consumed = next((o for o in (positions.get(key, -1), committed.get(key, -1))
                             if o >= 0), low)
            readings[key] = Reading(consumed, end, self._held_back(tp.topic))
        return readings
