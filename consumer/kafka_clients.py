"""The worker's Kafka clients, configured once: what each setting is for, in one place."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_exponential

from consumer.checkpoint import FENCED, ProducerFenced
from provisioning.errors import ProvisioningError, TransientError
from provisioning.kafka_access import client_config, raise_if_denied, worth_retrying
from provisioning.settings import Settings

log = logging.getLogger("provisioning.kafka")
T = TypeVar("T")


def transactional_producer(settings: Settings, transactional_id: str) -> Producer:
    """A producer whose events, state records and consumed offsets commit atomically."""
    return Producer(transactional_config(settings, transactional_id), logger=log)


def transactional_config(settings: Settings, transactional_id: str) -> dict[str, Any]:
    config: dict[str, Any] = {
        **client_config(settings),
        "transactional.id": transactional_id,
        "enable.idempotence": True,
        "acks": "all",
        # The same key lands on the same partition as from a Java producer.
        "partitioner": "murmur2_random",
        # Batches form within a transaction anyway; a short linger fills them further.
        "linger.ms": 5,
        "compression.type": "lz4",
        # A worker killed mid-transaction blocks read_committed readers of its partitions
        # (including its successor's restore) until the broker aborts the transaction after
        # this timeout; transactions last ~100 ms, so 10 s is ample and bounds the takeover.
        "transaction.timeout.ms": 10_000,
    }
    return config


def group_consumer(settings: Settings, group_id: str, **overrides: Any) -> Consumer:
    """A consumer-group member that sees committed records only and never commits by itself."""
    config: dict[str, Any] = {
        **client_config(settings),
        "group.id": group_id,
        "isolation.level": "read_committed",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        # Range assigns the same partition numbers of co-partitioned topics to one member,
        # so a saga's command, state and replies meet in one worker.
        "partition.assignment.strategy": "range",
        "max.poll.interval.ms": 300_000,
        "session.timeout.ms": 10_000,
        "heartbeat.interval.ms": 1_000,
        # Measured: a read_committed fetch on an idle partition is answered only when this
        # wait expires, not when a record arrives; the 500 ms default put half a second
        # between a command and its saga's start.
        "fetch.wait.max.ms": 20,
        **overrides,
    }
    return Consumer(config, logger=log)


def probe_consumer_config(settings: Settings, group_id: str) -> dict[str, Any]:
    """A client that never joins `group_id` but reads its committed offsets and the ends of
    partitions (the worker's watchdog; a refused login surfaces on the worker's own clients,
    not on this thread's)."""
    return {**settings.kafka_config(), "group.id": group_id,
            "isolation.level": "read_committed", "enable.auto.commit": False}


def restore_consumer(settings: Settings) -> Consumer:
    """A group-less reader for the state topic: assigned partitions, no commits."""
    config: dict[str, Any] = {
        **client_config(settings),
        "group.id": "provisioning-restore-unused",
        "isolation.level": "read_committed",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "fetch.max.bytes": 52_428_800,
        "max.partition.fetch.bytes": 10_485_760,
        # A restore reads to a known end offset: a fetch that waits for more data only delays
        # the last batch (by the default 500 ms, per partition restored), or the step over a
        # transaction marker at the end (10 ms a partition at 10: a restarted worker's twelve
        # partitions took 130 ms, 42 at 1). The client is only assigned while it restores.
        "fetch.wait.max.ms": 1,
    }
    return Consumer(config, logger=log)


def end_offsets_consumer(settings: Settings) -> Consumer:
    """A group-less client that only asks partitions for their high watermark. A
    read_committed client is answered the last stable offset instead, which stays below a
    transaction whose commit markers are still being written: a restore that took it for the
    end missed the states the previous owner had just committed (seen: every saga of a
    worker's first transaction left unowned after the second worker joined)."""
    return Consumer({**client_config(settings), "group.id": "provisioning-restore-unused",
                     "isolation.level": "read_uncommitted", "enable.auto.commit": False},
                    logger=log)


def while_broker_unavailable(operation: Callable[[], T], wait_s: float = 60.0,
                             first_wait_s: float = 0.5, max_wait_s: float = 5.0) -> T:
    """`operation()` (a call to the broker outside the poll loop), repeated with growing waits
    while it raises `KafkaException` or `TransientError`: the broker restarting, or a partition
    of a topic created a moment ago without its leader yet. After `wait_s` the last error is
    raised."""
    for attempt in Retrying(retry=retry_if_exception_type((KafkaException, TransientError)),
                            wait=wait_exponential(multiplier=first_wait_s, max=max_wait_s),
                            stop=stop_after_delay(wait_s), reraise=True):
        with attempt:
            return operation()
    raise AssertionError("unreachable")


def init_transactions(producer: Producer, settings: Settings, transactional_id: str,
                      wait_s: float = 60.0, call_timeout_s: float = 30.0) -> None:
    """Register the producer's transactional id, fencing an older instance of it. A broker
    that does not answer (restarting: its listener stays closed while it loads its logs, up
    to 40 s in the chaos runs) is waited for, as `while_broker_unavailable` does: a call that
    timed out is made again, which librdkafka resumes. A fencing (a newer producer with this
    transactional id: another process has it) is `ProducerFenced`, which the worker counts
    like any other; a refused write or a fatal error (a misconfiguration: retrying cannot
    help) is raised at once."""
    def once() -> None:
        try:
            producer.init_transactions(call_timeout_s)
        except KafkaException as exc:
            error: KafkaError = exc.args[0]
            raise_if_denied(error, settings, "Write", transactional_id=transactional_id)
            what = f"initialising transactions: {error.str()}"
            if error.code() in FENCED:
                raise ProducerFenced(what) from exc
            if worth_retrying(error):
                raise TransientError(what) from exc
            raise ProvisioningError(what) from exc

    while_broker_unavailable(once, wait_s=wait_s)


def watermarks(consumer: Consumer, tp: TopicPartition, wait_s: float = 60.0) -> tuple[int, int]:
    """The low and high offsets of `tp`. A partition of a topic created a moment ago (or of a
    restarting broker) answers "not leader" or "unknown partition" for a while: wait up to
    `wait_s` for its leader, then raise the last `KafkaException`."""
    low, high = while_broker_unavailable(
        lambda: consumer.get_watermark_offsets(tp, timeout=10, cached=False),
        wait_s=wait_s, first_wait_s=0.05, max_wait_s=2)
    return low, high
