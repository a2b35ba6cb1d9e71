"""`provisioning projector`: the events topic into Postgres, at least once, idempotently.

The commit sequence, per poll batch:

1. `consume()` up to `batch_size` committed events (read_committed: aborted worker
   transactions never reach the projection).
2. One Postgres transaction (`store.apply_batch`): lock the batch's rows, fold the events onto
   them, upsert the rows, insert the audit rows, NOTIFY waiters of finished requests. COMMIT.
3. Commit the batch's offsets to Kafka, synchronously.

A crash after 2 and before 3 redelivers the batch; the fold's sequence check and the audit
table's primary key make that a no-op. A Postgres outage at 2 is retried with backoff for up
to `db_retry_s` (well under `max.poll.interval.ms`, so the group keeps us); after that the
batch's partitions are rewound to the batch's first offsets and the loop polls again, so no
event is skipped however long the outage lasts.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from confluent_kafka import Consumer, KafkaException, Message, TopicPartition
from tenacity import (
    Retrying,
    before_sleep_log,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential,
)

from consumer.kafka_clients import group_consumer
from projection import fold, store
from projection.fold import Event
from provisioning import metrics
from provisioning.errors import CodecError, TransientError
from provisioning.ops import lag_from_statistics, start_ops
from provisioning.settings import Settings
from provisioning.topics import TopicLayout
from schemas import codec

log = logging.getLogger("provisioning.projector")


@dataclass(frozen=True)
class ProjectorOptions:
    group: str = "provisioning-projector"
    batch_size: int = 500
    poll_timeout_s: float = 0.5
    db_retry_s: float = 60.0  # retry a failing batch this long before rewinding it


class Projector:
    def __init__(self, settings: Settings, engine: sa.Engine,
                 options: ProjectorOptions = ProjectorOptions()) -> None:
        self._engine = engine
        self._options = options
        self._topic = TopicLayout(settings.topic_prefix).events
        self._consumer: Consumer = group_consumer(
            settings, options.group, stats_cb=self._statistics,
            **{"statistics.interval.ms": 5000})
        self._stopping = threading.Event()
        self.undecodable = 0

    def run(self) -> None:
        self._consumer.subscribe([self._topic])
        log.info("projecting %s as group %s", self._topic, self._options.group)
        try:
            while not self._stopping.is_set():
                self.turn()
        finally:
            self._consumer.close()

    def stop(self) -> None:
        self._stopping.set()

    def install_signal_handlers(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: self.stop())

    def turn(self) -> store.BatchResult | None:
        messages = [m for m in self._consumer.consume(self._options.batch_size,
                                                      self._options.poll_timeout_s)
                    if not _is_partition_eof(m)]
        if not messages:
            return None
        batch = [e for e in (self._event(m) for m in messages) if e is not None]
        try:
            result = self._write(batch)
        except TransientError as exc:
            log.error("projection batch not written, rewinding %d events: %s", len(messages), exc)
            self._rewind(messages)
            return None
        self._commit(messages)
        metrics.PROJECTED.inc(result.audited)
        return result

    def readiness(self) -> tuple[bool, str]:
        from provisioning.database import database_answers

        if not database_answers(self._engine):
            return False, "PostgreSQL does not answer"
        return True, "projecting"

    def _statistics(self, stats_json: str) -> None:
        assigned = {(tp.topic, tp.partition) for tp in self._consumer.assignment()}
        lag_from_statistics(json.loads(stats_json), self._options.group, assigned)

    def _write(self, batch: Sequence[Event]) -> store.BatchResult:
        retrying = Retrying(
            retry=retry_if_exception_type(sa.exc.OperationalError),
            wait=wait_exponential(multiplier=0.2, max=5),
            stop=stop_after_delay(self._options.db_retry_s),
            before_sleep=before_sleep_log(log, logging.WARNING),
            reraise=True,
        )
        try:
            return retrying(store.apply_batch, self._engine, batch)
        except sa.exc.OperationalError as exc:
            raise TransientError(f"PostgreSQL unavailable: {exc.orig}") from exc

    def _event(self, message: Message) -> Event | None:
        if message.error() is not None:
            log.warning("consume error: %s", message.error())
            return None
        try:
            decoded = codec.decode(message.value())
        except CodecError as exc:
            # Not ours to fix: the worker validates what it writes; count it and go on.
            self.undecodable += 1
            log.error("undecodable record at %s[%d]@%d skipped: %s", message.topic(),
                      message.partition(), message.offset(), exc)
            return None
        if decoded.record_name not in fold.EVENT_TYPES:
            return None
        return Event(decoded.record_name, decoded.value, message.partition(), message.offset())

    def _commit(self, messages: Sequence[Message]) -> None:
        offsets = _next_offsets(messages)
        try:
            self._consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            # The rows are written; the batch comes again and changes nothing.
            log.warning("offset commit failed, the batch will be redelivered: %s", exc)

    def _rewind(self, messages: Sequence[Message]) -> None:
        first: dict[tuple[str, int], int] = {}
        for m in messages:
            key = (m.topic(), m.partition())
            first[key] = min(first.get(key, m.offset()), m.offset())
        for (topic, partition), offset in first.items():
            try:
                self._consumer.seek(TopicPartition(topic, partition, offset))
            except KafkaException as exc:  # the partition moved away: its new owner reads it
                log.info("not rewinding %s[%d]: %s", topic, partition, exc)


def _next_offsets(messages: Sequence[Message]) -> list[TopicPartition]:
    last: dict[tuple[str, int], int] = {}
    for m in messages:
        key = (m.topic(), m.partition())
        last[key] = max(last.get(key, -1), m.offset())
    return [TopicPartition(t, p, o + 1) for (t, p), o in last.items()]


def _is_partition_eof(message: Message) -> bool:
    error = message.error()
    return error is not None and error.code() == -191  # KafkaError._PARTITION_EOF


def run_projector(settings: Settings, options: ProjectorOptions) -> int:
    from provisioning.database import create_engine
    from provisioning.logs import configure_logging

    configure_logging()
    engine = create_engine(settings, pool_size=2, max_overflow=0)
    projector = Projector(settings, engine, options)
    projector.install_signal_handlers()
    ops = start_ops(settings.metrics_port, projector.readiness)
    try:
        projector.run()
    finally:
        if ops is not None:
            ops.stop()
        engine.dispose()
    return 0
