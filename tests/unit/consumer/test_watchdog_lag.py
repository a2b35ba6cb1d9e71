"""The worker's consumer lag, from the watchdog's readings of each assigned partition."""

from __future__ import annotations

import uuid

from prometheus_client import REGISTRY

from consumer.watchdog import Reading, report_lag


def lag(group: str, topic: str, partition: int) -> float | None:
    return REGISTRY.get_sample_value("provisioning_consumer_lag", {
        "group": group, "topic": topic, "partition": str(partition)})


def test_lag_is_the_records_between_the_position_and_the_end_and_leaves_with_the_partition(
) -> None:
    group = f"g-{uuid.uuid4().hex[:6]}"
    behind = Reading(consumed=5, end=8, held_back=True)  # held back still counts: unread
    caught_up = Reading(consumed=3, end=3, held_back=False)
    reported = report_lag(group, {("c", 0): behind, ("c", 1): caught_up}, set())
    assert (lag(group, "c", 0), lag(group, "c", 1)) == (3, 0)

    # Partition 1 revoked: its sample goes, partition 0 moves on.
    report_lag(group, {("c", 0): Reading(consumed=8, end=8, held_back=False)}, reported)
    assert (lag(group, "c", 0), lag(group, "c", 1)) == (0, None)
