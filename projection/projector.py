"""`provisioning projector`: the events topic into Postgres, at least once, idempotently.

The commit sequence, per poll batch:

1. `consume()` up to `batch_size` committed events (read_committed: aborted worker
   transactions never reach the projection).
2. Triage every record, in offset order per partition (`projection.triage`): an event the
   projection folds goes into the batch; a malformed record, or a known record that is not an
   event, becomes a dead letter; a record whose writer schema this projector does not know
   *holds* its partition: the records before it stay in the batch, it and everything after it
   on that partition are left out.
3. One Postgres transaction (`store.apply_batch`): lock the batch's rows, fold the events onto
   them, upsert the rows, insert the audit rows, NOTIFY waiters of finished requests. COMMIT.
4. Produce the dead letters to the events DLQ (the original key, value and headers, bounded
   by `consumer.dlq.dead_letter`, plus `dlq-*` headers with the reason and the origin) and
   flush them: the broker has them all before any offset past them is committed.
5. Hold: pause each newly held partition and seek it back to the held record.
6. Commit the offsets to Kafka, synchronously: past the last record dealt with on each
   partition, and exactly at the held record on a held one.

A crash after 3 and before 6 redelivers the batch; the fold's sequence check and the audit
table's primary key make that a no-op (a dead letter may be written twice; its `dlq-origin-*`
headers tell). A Postgres outage at 3 is retried with backoff for up to `db_retry_s` (well
under `max.poll.interval.ms`, so the group keeps us); after that, or when the dead letters
cannot be written at 4, the batch's partitions are rewound to the batch's first offsets and the
loop polls again, so no event is skipped however long the outage lasts.

A hold lasts for the life of the process: the record most likely comes from a newer worker in a
rolling deploy, and only a projector deployed with that schema can read it (it starts from the
committed offset, the held record). Meanwhile `/readyz` says which partition, offset and
fingerprint, `provisioning_projector_held_partitions` counts it, and the other partitions go on.
On a rebalance the holds of revoked partitions are dropped and every assigned partition is
resumed explicitly: a held partition assigned again is read from its committed offset and held
again, by whichever projector gets it.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from tenacity import (
    Retrying,
    before_sleep_log,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential,
)

from consumer.dlq import dead_letter
from consumer.kafka_clients import group_consumer
from producers.commands import producer_config
from projection import store
from projection.fold import Event
from projection.triage import (
    UNKNOWN_SCHEMA,
    DeadLetter,
    Hold,
    PartitionKey,
    first_offsets,
    readiness_reason,
    triage,
)
from provisioning import kafka_access, metrics
from provisioning.errors import TransientError
from provisioning.ops import lag_from_statistics, start_ops
from provisioning.settings import Settings
from provisioning.topics import TopicLayout
from schemas.codec import Codec, default_codec

log = logging.getLogger("provisioning.projector")

# A dead letter keeps at most this much of the original value: the record came off a topic with
# the broker's ~1 MB limit, and with the `dlq-*` headers (bounded by `consumer.dlq`) it must
# still fit under librdkafka's 1,000,000-byte `message.max.bytes`, or dead-lettering would fail
# and the batch would be rewound and read again, forever.
DEAD_LETTER_VALUE_BYTES = 512 * 1024


@dataclass(frozen=True)
class ProjectorOptions:
    group: str = "provisioning-projector"
    batch_size: int = 500
    poll_timeout_s: float = 0.5
    db_retry_s: float = 60.0  # retry a failing batch this long before rewinding it
    dead_letter_timeout_s: float = 30.0  # wait this long for the DLQ before rewinding the batch


class Projector:
    def __init__(self, settings: Settings, engine: sa.Engine,
                 options: ProjectorOptions = ProjectorOptions(),
                 codec: Codec | None = None) -> None:
        self._engine = engine
        self._settings = settings
        self._options = options
        # The schemas this process was deployed with; a test may give a newer set.
        self._codec = codec or default_codec()
        layout = TopicLayout(settings.topic_prefix)
        self._topic = layout.events
        self._dlq_topic = layout.events_dlq
        self._consumer: Consumer = group_consumer(
            settings, options.group, stats_cb=self._statistics,
            **{"statistics.interval.ms": 5000})
        # The service's producer settings: acks=all, idempotent, and the Java client's
        # partitioner, so a request's dead letters land together, as from Java.
        self._dlq_producer = Producer(producer_config(settings), logger=log)
        self._stopping = threading.Event()
        # Written by the poll loop, read by /readyz on the ops thread.
        self._holds: dict[PartitionKey, Hold] = {}
        self._holds_lock = threading.Lock()
        # Kept by the rebalance callbacks, for the statistics callback: it also runs inside
        # `consumer.close()`, where asking the consumer for its assignment never returns.
        self._assigned: set[PartitionKey] = set()

    def subscribe(self) -> None:
        self._consumer.subscribe([self._topic], on_assign=self._on_assign,
                                 on_revoke=self._on_revoke, on_lost=self._on_revoke)

    def run(self) -> None:
        self.subscribe()
        log.info("projecting %s as group %s", self._topic, self._options.group)
        try:
            while not self._stopping.is_set():
                self.turn()
        finally:
            self.close()

    def close(self) -> None:
        """Leave the group; this process's holds end with it (the next owner holds again)."""
        self._consumer.close()  # a second close does nothing
        with self._holds_lock:
            held = list(self._holds)
        self._release(held, "the projector stopped")

    def stop(self) -> None:
        self._stopping.set()

    def install_signal_handlers(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: self.stop())

    def holds(self) -> tuple[Hold, ...]:
        with self._holds_lock:
            return tuple(self._holds.values())

    def turn(self) -> store.BatchResult | None:
        messages = []
        for m in self._consumer.consume(self._options.batch_size, self._options.poll_timeout_s):
            if m.error() is None:
                messages.append(m)
            elif not _is_partition_eof(m):
                kafka_access.raise_if_denied(m.error(), self._settings, "Read",
                                             topic=self._topic, group=self._options.group)
                log.warning("consume error: %s", m.error())
        if not messages:
            return None
        with self._holds_lock:
            held = set(self._holds)
        sorted_out = triage(messages, self._codec.decode, held)
        try:
            result = self._write(sorted_out.events)
            self._dead_letter(sorted_out.dead_letters)
        except TransientError as exc:
            log.error("projection batch not written, rewinding %d records: %s",
                      len(messages), exc)
            self._rewind(first_offsets(messages, skip=held))
            return None
        for hold in sorted_out.holds:
            self._hold(hold)
        self._commit(sorted_out.commit_offsets)
        metrics.PROJECTED.inc(result.audited)
        return result

    def readiness(self) -> tuple[bool, str]:
        from provisioning.database import database_answers

        held = readiness_reason(self.holds())
        if held is not None:
            return False, held
        if not database_answers(self._engine):
            return False, "PostgreSQL does not answer"
        return True, "projecting"

    def _statistics(self, stats_json: str) -> None:
        lag_from_statistics(json.loads(stats_json), self._options.group, set(self._assigned))

    def _write(self, batch: Sequence[Event]) -> store.BatchResult:
        if not batch:  # every record was dead-lettered or held: no transaction to open
            return store.BatchResult(events=0, applied=0, audited=0, finished=())
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

    def _dead_letter(self, dead_letters: Sequence[DeadLetter[Message]]) -> None:
        """Write the dead letters and wait until the broker has them all: only then may the
        offsets past them be committed. Raises TransientError when it cannot."""
        if not dead_letters:
            return
        refused: list[KafkaError] = []

        def delivered(error: KafkaError | None, _message: Message) -> None:
            if error is not None:
                refused.append(error)

        failed_at_ms = int(time.time() * 1000)
        try:
            for letter in dead_letters:
                produced = dead_letter(letter.record, letter.error, failed_at_ms,
                                       max_value_bytes=DEAD_LETTER_VALUE_BYTES)
                # By key, not the origin partition number: the DLQ may have fewer partitions;
                # `dlq-origin-partition` says where it came from.
                produced.pop("partition", None)
                self._dlq_producer.produce(self._dlq_topic, on_delivery=delivered, **produced)
        except (KafkaException, BufferError) as exc:
            self._drop_unsent_dead_letters()
            raise TransientError(f"dead letters not written to {self._dlq_topic}: {exc}") from exc
        unsent = kafka_access.flush(self._dlq_producer, self._options.dead_letter_timeout_s)
        for error in refused:  # replaying the batch would be refused again: stop, saying why
            kafka_access.raise_if_denied(error, self._settings, "Write", topic=self._dlq_topic)
        if unsent or refused:
            self._drop_unsent_dead_letters()
            why = refused[0] if refused else f"{unsent} not delivered in time"
            raise TransientError(f"dead letters not written to {self._dlq_topic}: {why}")
        for letter in dead_letters:
            record = letter.record
            metrics.PROJECTOR_UNPROJECTABLE.labels(self._options.group, letter.kind).inc()
            log.warning("record at %s[%d]@%d sent to %s: %s", record.topic(),
                        record.partition(), record.offset(), self._dlq_topic, letter.error)

    def _drop_unsent_dead_letters(self) -> None:
        # The batch is rewound and its dead letters produced again: copies left queued here
        # (the DLQ topic missing, the broker away) would pile up with every retry and all be
        # written once it is back. Those already in flight may still land: at least once.
        self._dlq_producer.purge(in_queue=True, in_flight=False)
        self._dlq_producer.poll(0)  # their delivery reports, into the failed call's list

    def _hold(self, hold: Hold) -> None:
        partition = TopicPartition(hold.topic, hold.partition)
        try:
            self._consumer.pause([partition])
        except KafkaException as exc:  # the partition moved away: its new owner reads it
            log.info("not holding %s[%d]: %s", hold.topic, hold.partition, exc)
            return
        try:
            # Paused is enough for this process; the seek keeps its position at the held
            # record, so whatever resumes the partition reads that record first.
            self._consumer.seek(TopicPartition(hold.topic, hold.partition, hold.offset))
        except KafkaException as exc:
            log.info("held %s[%d] not sought back: %s", hold.topic, hold.partition, exc)
        with self._holds_lock:
            new = hold.key not in self._holds
            self._holds[hold.key] = hold
        if new:
            metrics.PROJECTOR_HELD_PARTITIONS.labels(self._options.group).inc()
            metrics.PROJECTOR_UNPROJECTABLE.labels(self._options.group, UNKNOWN_SCHEMA).inc()
            log.error("holding %s: nothing at or after it on this partition is projected until "
                      "a projector that knows this writer schema reads it (deploy the newer "
                      "schemas); other partitions go on", hold.describe(),
                      extra={"topic": hold.topic, "partition": hold.partition,
                             "offset": hold.offset, "fingerprint": hold.fingerprint.hex()})

    def _release(self, keys: Collection[PartitionKey], why: str) -> None:
        with self._holds_lock:
            released = [self._holds.pop(k) for k in keys if k in self._holds]
        for hold in released:
            metrics.PROJECTOR_HELD_PARTITIONS.labels(self._options.group).dec()
            log.info("hold of %s ended: %s", hold.describe(), why)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # librdkafka keeps a partition paused across a re-assignment: a partition held before
        # a rebalance would never be fetched again, and its hold would no longer be reported.
        # So every assigned partition is resumed; a held one is read again from its committed
        # offset, the held record, and held again.
        self._assigned |= {(tp.topic, tp.partition) for tp in partitions}
        self._release([(tp.topic, tp.partition) for tp in partitions], "assigned again")
        try:
            consumer.resume(partitions)
        except KafkaException as exc:
            log.warning("assigned partitions not resumed: %s", exc)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._assigned -= {(tp.topic, tp.partition) for tp in partitions}
        self._release([(tp.topic, tp.partition) for tp in partitions],
                      "revoked; its next owner reads it from the held record")

    def _commit(self, offsets: Mapping[PartitionKey, int]) -> None:
        if not offsets:
            return
        try:
            self._consumer.commit(offsets=[TopicPartition(t, p, o)
                                           for (t, p), o in offsets.items()],
                                  asynchronous=False)
        except KafkaException as exc:
            # The rows are written; the batch comes again and changes nothing.
            log.warning("offset commit failed, the batch will be redelivered: %s", exc)

    def _rewind(self, first: Mapping[PartitionKey, int]) -> None:
        for (topic, partition), offset in first.items():
            try:
                self._consumer.seek(TopicPartition(topic, partition, offset))
            except KafkaException as exc:  # the partition moved away: its new owner reads it
                log.info("not rewinding %s[%d]: %s", topic, partition, exc)


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
