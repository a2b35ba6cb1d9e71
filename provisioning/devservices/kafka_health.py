"""What a cluster's metadata says about its replicas: who leads what, and what is not in sync.

Used by the chaos suite to pick the broker to kill and to restart brokers one at a time (each
only once every partition has all its replicas in sync again), and by `dev status --json`.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable

from confluent_kafka.admin import AdminClient

from provisioning.devservices.process import DevServiceError


def leaders(admin: AdminClient, topics: Iterable[str], timeout_s: float = 10.0) -> Counter[int]:
    """How many partitions of `topics` each broker leads."""
    metadata = admin.list_topics(timeout=timeout_s)
    counts: Counter[int] = Counter()
    for name in topics:
        for partition in metadata.topics[name].partitions.values():
            if partition.leader >= 0:
                counts[partition.leader] += 1
    return counts


def out_of_sync(admin: AdminClient, timeout_s: float = 10.0) -> list[str]:
    """`topic[partition]` of every partition (internal topics included) that has fewer
    in-sync replicas than replicas, or no leader."""
    metadata = admin.list_topics(timeout=timeout_s)
    lagging = []
    for name, topic in metadata.topics.items():
        for number, partition in topic.partitions.items():
            if partition.leader < 0 or set(partition.isrs) != set(partition.replicas):
                lagging.append(f"{name}[{number}]")
    return sorted(lagging)


def wait_in_sync(admin: AdminClient, timeout_s: float = 180.0) -> float:
    """Wait until every replica of every partition is in sync; the seconds it took."""
    started = time.monotonic()
    lagging: list[str] = []
    while time.monotonic() - started < timeout_s:
        try:
            lagging = out_of_sync(admin)
        except Exception as exc:  # noqa: BLE001 - a broker coming back: ask again
            lagging = [f"metadata: {exc}"]
        if not lagging:
            return time.monotonic() - started
        time.sleep(0.5)
    raise DevServiceError(f"replicas not in sync after {timeout_s:.0f} s: "
                          f"{', '.join(lagging[:5])}{' ...' if len(lagging) > 5 else ''}")
