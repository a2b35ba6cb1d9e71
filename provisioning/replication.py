"""What the worker checks at start about the durability of what it commits.

A transaction commits when the transaction log (`__transaction_state`) and every partition it
wrote have acknowledged it. With `acks=all`, "acknowledged" means by the in-sync replicas, of
which `min.insync.replicas` must be there: with 1, a committed saga state lives on one broker
until the followers catch up, and that broker's loss loses it. The worker therefore refuses to
start when the transaction log, its state topic or its events topic would acknowledge on fewer
than `PROVISIONING_REQUIRED_MIN_INSYNC_REPLICAS` replicas (1 by default, for a single local
broker; 2 on a three-broker cluster), or has fewer replicas than its own min.insync.replicas
(no write could ever succeed).
"""

from __future__ import annotations

from collections.abc import Iterable

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from provisioning.errors import ConfigurationError, TransientError
from provisioning.kafka_access import raise_if_denied
from provisioning.settings import Settings
from provisioning.topics import describe_configs

TRANSACTION_LOG = "__transaction_state"


def replication_problems(admin: AdminClient, settings: Settings, topics: Iterable[str],
                         timeout_s: float = 10.0) -> list[str]:
    """What is below the required min.insync.replicas (or unwritable) among `topics`, one
    sentence each."""
    required = settings.required_min_insync_replicas
    problems = []
    for topic in topics:
        replicas = _replicas(admin, settings, topic, timeout_s)
        configs = describe_configs(admin, topic, timeout_s, settings=settings)
        min_insync = int(configs["min.insync.replicas"])
        if min_insync < required:
            problems.append(f"{topic} has min.insync.replicas={min_insync}, below the "
                            f"{required} this worker requires")
        if replicas < max(min_insync, required):
            problems.append(f"{topic} has {replicas} replicas, fewer than the "
                            f"{max(min_insync, required)} in-sync replicas a write needs")
    return problems


def check_replication(admin: AdminClient, settings: Settings, topics: Iterable[str]) -> None:
    """Raise `ConfigurationError` naming every topic below the requirement."""
    problems = replication_problems(admin, settings, topics)
    if problems:
        raise ConfigurationError(
            "refusing to start: " + "; ".join(problems) + ". A commit acknowledged by fewer "
            "replicas can be lost with one broker. Raise the topics' min.insync.replicas "
            "(the transaction log's is the brokers' transaction.state.log.min.isr) or set "
            "PROVISIONING_REQUIRED_MIN_INSYNC_REPLICAS to what this cluster offers")


def _replicas(admin: AdminClient, settings: Settings, topic: str, timeout_s: float) -> int:
    try:
        metadata = admin.list_topics(topic, timeout=timeout_s).topics.get(topic)
    except KafkaException as exc:
        raise TransientError(f"reading the replicas of {topic}: {exc.args[0].str()}") from exc
    if metadata is not None:
        raise_if_denied(metadata.error, settings, "Describe", topic=topic)
    if metadata is None or metadata.error is not None or not metadata.partitions:
        why = metadata.error.str() if metadata is not None and metadata.error else "not found"
        raise ConfigurationError(f"cannot check the replication of {topic}: {why}")
    return min(len(p.replicas) for p in metadata.partitions.values())
