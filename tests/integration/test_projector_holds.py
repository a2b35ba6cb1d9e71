"""What the projector does with a record it cannot project, on the real broker and database.

A record of a writer schema it does not know (a newer worker in a rolling deploy) holds its
partition: the events before it are projected, nothing at or after it is projected or
committed, `/readyz` and a metric say so, other partitions go on, and a projector deployed with
that schema goes on from the held record. A malformed record, or a record that is not an event,
is dead-lettered with its reason and its partition goes on, but never past a dead letter the
DLQ does not have yet.
"""

from __future__ import annotations

import json
import shutil
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from harness import ServiceProcess, free_port, wait_until
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from test_projector import saga_trail

from projection.models import events as events_table
from projection.models import requests as requests_table
from projection.projector import Projector, ProjectorOptions
from provisioning.settings import Settings
from provisioning.topics import TopicLayout, create_topics
from schemas import codec, registry
from schemas.codec import Codec
from schemas.errors import MalformedRecord, UnknownFingerprint
from schemas.examples import EXAMPLES
from schemas.registry import RecordSchema, load_directory

HELD_PARTITION, OTHER_PARTITION = 0, 1


# --- helpers ----------------------------------------------------------------------------------


def newer_step_completed(directory: Path) -> RecordSchema:
    """`ProvisioningStepCompleted` as a next release might define it (one more optional field):
    what a worker deployed before the projector writes, with a fingerprint today's codec lacks."""
    for avsc in registry.SCHEMA_DIR.glob("*.avsc"):
        shutil.copy(avsc, directory / avsc.name)
    path = directory / "ProvisioningStepCompleted.avsc"
    schema = json.loads(path.read_text())
    schema["fields"].append({"name": "durationMs", "type": ["null", "long"], "default": None,
                             "doc": "How long the attempt took."})
    path.write_text(json.dumps(schema))
    return load_directory(directory)["ProvisioningStepCompleted"]


def codec_knowing(newer: RecordSchema) -> Codec:
    """The codec of a projector deployed with the newer release: today's schemas, every released
    set, and the newer record (read into today's shape)."""
    released = [s for release in registry.released().values() for s in release.values()]
    return Codec(registry.current(), [*released, newer])


def produce_to(settings: Settings, topic: str, partition: int,
               records: list[tuple[bytes | None, bytes, list[tuple[str, bytes]]]]) -> None:
    producer = Producer(settings.kafka_config())
    for key, value, headers in records:
        producer.produce(topic, key=key, value=value, headers=headers, partition=partition)
    assert producer.flush(30) == 0


def encoded(trail: list[tuple[str, dict]]) -> list[tuple[bytes, bytes, list[tuple[str, bytes]]]]:
    return [(value["requestId"].encode(), codec.encode(name, value), codec.headers_for(name))
            for name, value in trail]


def row(engine: sa.Engine, request_id: str) -> dict | None:
    with engine.connect() as conn:
        found = conn.execute(sa.select(requests_table)
                             .where(requests_table.c.request_id == request_id)).first()
    return None if found is None else dict(found._mapping)


def audit(engine: sa.Engine, request_id: str) -> list[tuple[int, int, int]]:
    """(sequence, kafka_partition, kafka_offset) of the request's audit rows."""
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(
            sa.select(events_table.c.sequence, events_table.c.kafka_partition,
                      events_table.c.kafka_offset)
            .where(events_table.c.request_id == request_id).order_by(events_table.c.sequence))]


def committed(settings: Settings, group: str, topic: str) -> dict[int, int]:
    """The group's committed offset per partition (-1001: none), read by a non-member."""
    reader = Consumer({**settings.kafka_config(), "group.id": group,
                       "enable.auto.commit": False})
    try:
        offsets = reader.committed([TopicPartition(topic, p)
                                    for p in range(settings.topic_partitions)], timeout=10)
        return {tp.partition: tp.offset for tp in offsets}
    finally:
        reader.close()


def finished(engine: sa.Engine, request_id: str, sequence: int) -> bool:
    found = row(engine, request_id)
    return found is not None and found["status"] == "COMPLETED" \
        and found["last_sequence"] == sequence


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as refused:
        return refused.code, refused.read().decode()
    except urllib.error.URLError:  # not listening yet
        return 0, ""


def scraped(metrics_text: str, name: str, labels: dict[str, str]) -> float | None:
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return None


def turn_until(projectors: list[Projector], done: Callable[[], object], timeout_s: float,
               what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        assert time.monotonic() < deadline, f"{what} not reached within {timeout_s} s"
        for projector in projectors:
            projector.turn()


def held_keys(projector: Projector) -> set[tuple[str, int]]:
    return {(h.topic, h.partition) for h in projector.holds()}


@pytest.fixture
def make_projector(settings: Settings, migrated: sa.Engine) -> Iterator[Callable[..., Projector]]:
    made: list[Projector] = []

    def make(group: str, codec: Codec | None = None, **options: object) -> Projector:
        projector = Projector(settings, migrated, ProjectorOptions(group=group, **options),
                              codec=codec)
        projector.subscribe()
        made.append(projector)
        return projector

    yield make
    for projector in made:
        projector.close()


# --- unknown writer schema --------------------------------------------------------------------


def test_an_unknown_writer_schema_holds_its_partition_until_a_projector_knows_it(
    settings: Settings, topics: TopicLayout, migrated: sa.Engine, tmp_path: Path,
    group_id: str, make_projector: Callable[..., Projector],
) -> None:
    newer = newer_step_completed(tmp_path)
    held_id, other_id = str(uuid.uuid4()), str(uuid.uuid4())
    held_trail, other_trail = saga_trail(held_id), saga_trail(other_id)
    # The fifth event (create-tenant completed) comes from a worker already on the newer release.
    name, value = held_trail[4]
    assert name == "ProvisioningStepCompleted" and value["sequence"] == 5
    held_record = Codec({**registry.current(), name: newer}).encode(
        name, {**value, "durationMs": 1234})
    with pytest.raises(UnknownFingerprint):  # this projector's schemas do not know it
        codec.decode(held_record)
    records = encoded(held_trail)
    records[4] = (held_id.encode(), held_record, codec.headers_for(name))
    produce_to(settings, topics.events, HELD_PARTITION, records)  # offsets 0..11, held at 4
    produce_to(settings, topics.events, OTHER_PARTITION, encoded(other_trail[:6]))

    # Today's projector, as its own process with its ops port.
    port = free_port()
    process = ServiceProcess(settings, tmp_path, ("projector", "--group", group_id,
                                                  "--metrics-port", str(port))).start()
    try:
        ready = wait_until(lambda: (lambda s: s[0] == 503 and s)(get(
            f"http://127.0.0.1:{port}/readyz")), 60, "/readyz reporting the hold")
        # Other partitions go on during the hold: the rest of the other saga comes now.
        produce_to(settings, topics.events, OTHER_PARTITION, encoded(other_trail[6:]))
        wait_until(lambda: finished(migrated, other_id, 12), 30, "the other saga projected")
        time.sleep(2)  # a few more polls: nothing at or after the held record may move
        held_row = row(migrated, held_id)
        held_audit = audit(migrated, held_id)
        offsets = committed(settings, group_id, topics.events)
        status, metrics_text = get(f"http://127.0.0.1:{port}/metrics")
        ready_after = get(f"http://127.0.0.1:{port}/readyz")
        assert process.alive()
    finally:
        exit_code = process.stop()
    assert exit_code == 0, process.log_text()[-2000:]

    # The records before the held one are projected; it and those after it are not.
    assert held_row is not None
    assert (held_row["status"], held_row["last_sequence"], held_row["current_step"],
            list(held_row["completed_steps"])) == ("IN_PROGRESS", 4, "create-tenant",
                                                   ["validate-entity"])
    assert held_audit == [(s, HELD_PARTITION, s - 1) for s in (1, 2, 3, 4)]
    # Committed up to the held record, not past it; the other partition to its end.
    assert offsets[HELD_PARTITION] == 4 and offsets[OTHER_PARTITION] == 12
    # /readyz: not ready, naming the partition, the offset and the fingerprint.
    fingerprint = held_record[2:10].hex()
    for answer in (ready, ready_after):
        assert answer[0] == 503
        assert f"{topics.events}[{HELD_PARTITION}]@4" in answer[1] and fingerprint in answer[1]
    assert status == 200
    assert scraped(metrics_text, "provisioning_projector_held_partitions",
                   {"group": group_id}) == 1
    assert scraped(metrics_text, "provisioning_projector_unprojectable_records_total",
                   {"group": group_id, "kind": "unknown_schema"}) == 1  # once per hold
    log_text = process.log_text()
    assert log_text.count(f"holding {topics.events}[{HELD_PARTITION}]@4") == 1, log_text[-3000:]

    # The deploy that brings the schema: a new projector in the same group, sharing with the
    # stopped one only what a restarted process shares (the committed offsets and the rows),
    # whose codec knows the newer release. Nothing new is produced.
    deployed = make_projector(group_id, codec=codec_knowing(newer))
    turn_until([deployed], lambda: finished(migrated, held_id, 12), 30, "the held saga projected")
    assert audit(migrated, held_id) == [(s, HELD_PARTITION, s - 1) for s in range(1, 13)]
    assert list(row(migrated, held_id)["completed_steps"]) == list(
        v["step"] for n, v in held_trail if n == "ProvisioningStepCompleted")
    assert deployed.holds() == ()
    assert deployed.readiness() == (True, "projecting")
    turn_until([deployed], lambda: committed(settings, group_id, topics.events)[
        HELD_PARTITION] == 12, 10, "the held partition committed to its end")


def test_a_held_partition_is_held_again_after_a_rebalance(
    settings: Settings, topics: TopicLayout, migrated: sa.Engine, tmp_path: Path,
    group_id: str, make_projector: Callable[..., Projector],
) -> None:
    held_id = str(uuid.uuid4())
    trail = saga_trail(held_id)
    records = encoded(trail)
    key, data, headers = records[2]
    # bytes 2..9 flipped: a fingerprint no schema set has
    records[2] = (key, data[:2] + bytes(b ^ 0xFF for b in data[2:10]) + data[10:], headers)
    produce_to(settings, topics.events, HELD_PARTITION, records)  # held at offset 2
    partition_0 = (topics.events, HELD_PARTITION)
    gauge = ("provisioning_projector_held_partitions", {"group": group_id})

    first = make_projector(group_id)
    turn_until([first], lambda: partition_0 in held_keys(first), 30, "the first hold")
    assert REGISTRY.get_sample_value(*gauge) == 1

    # A second member joins (eager rebalance: every partition revoked, then assigned again),
    # then leaves (again). librdkafka keeps a partition paused across those re-assignments: a
    # projector that did not resume explicitly would never read partition 0 again, nor report
    # it held, while nothing past it is projected.
    second = make_projector(group_id)
    both = [first, second]
    turn_until(both, lambda: all(p._consumer.assignment() for p in both)
               and sum(len(p._consumer.assignment()) for p in both) == settings.topic_partitions
               and any(partition_0 in held_keys(p) for p in both), 60,
               "both members assigned, partition 0 held by its owner")
    assert REGISTRY.get_sample_value(*gauge) == 1
    second.close()
    turn_until([first], lambda: len(first._consumer.assignment()) == settings.topic_partitions
               and partition_0 in held_keys(first), 60,
               "partition 0 assigned to the first member again and held again")

    assert [h.offset for h in first.holds()] == [2]
    assert REGISTRY.get_sample_value(*gauge) == 1
    ready, why = first.readiness()
    assert not ready and f"{topics.events}[{HELD_PARTITION}]@2" in why
    assert committed(settings, group_id, topics.events)[HELD_PARTITION] == 2
    assert row(migrated, held_id)["last_sequence"] == 2
    first.close()
    assert REGISTRY.get_sample_value(*gauge) == 0


# --- dead letters -----------------------------------------------------------------------------


def test_malformed_records_and_non_events_are_dead_lettered_and_the_partition_goes_on(
    settings: Settings, topics: TopicLayout, migrated: sa.Engine, group_id: str,
    make_projector: Callable[..., Projector],
) -> None:
    request_id = str(uuid.uuid4())
    trail = encoded(saga_trail(request_id))
    known = codec.schema("ProvisioningStepStarted").fingerprint_bytes
    malformed = codec.MAGIC + known + b"\xff" * 12  # a known schema, a body that is not one
    with pytest.raises(MalformedRecord):
        codec.decode(malformed)
    state = codec.encode("SagaState", {**EXAMPLES["SagaState"], "requestId": request_id})
    malformed_headers = [("event-type", b"ProvisioningStepStarted"), ("traceparent", b"tp-1")]
    records = [trail[0],
               (request_id.encode(), malformed, malformed_headers),        # offset 1
               (request_id.encode(), state, codec.headers_for("SagaState")),  # offset 2
               *trail[1:]]                                                    # offsets 3..13
    produce_to(settings, topics.events, HELD_PARTITION, records)
    counted = {kind: REGISTRY.get_sample_value(
        "provisioning_projector_unprojectable_records_total",
        {"group": group_id, "kind": kind}) or 0 for kind in ("malformed", "not_an_event")}

    projector = make_projector(group_id)
    turn_until([projector], lambda: finished(migrated, request_id, 12), 30,
               "the saga after the dead letters projected")

    assert [s for s, _, _ in audit(migrated, request_id)] == list(range(1, 13))
    assert projector.holds() == ()
    turn_until([projector], lambda: committed(settings, group_id, topics.events)[
        HELD_PARTITION] == 14, 10, "the partition committed past the dead letters")
    for kind in ("malformed", "not_an_event"):
        assert REGISTRY.get_sample_value("provisioning_projector_unprojectable_records_total",
                                         {"group": group_id, "kind": kind}) == counted[kind] + 1

    letters = read_all(settings, topics.events_dlq, expected=2)
    by_offset = {int(h["dlq-origin-offset"]): (key, value, h) for key, value, h in letters}
    assert set(by_offset) == {1, 2}
    for offset, (original_value, error_class, reason) in {
        1: (malformed, "MalformedRecord", "ProvisioningStepStarted body does not decode"),
        2: (state, "NotAnEvent", "a SagaState record is not an event the projection folds"),
    }.items():
        key, value, headers = by_offset[offset]
        assert key == request_id.encode() and value == original_value
        assert headers["dlq-error-class"] == error_class.encode()
        assert headers["dlq-reason"].decode().startswith(reason)
        assert headers["dlq-origin-topic"] == topics.events.encode()
        assert headers["dlq-origin-partition"] == str(HELD_PARTITION).encode()
        assert abs(int(headers["dlq-failed-at"]) - time.time() * 1000) < 120_000
    assert by_offset[1][2]["traceparent"] == b"tp-1"  # the original headers are kept
    assert by_offset[2][2]["event-type"] == b"SagaState"


def test_nothing_past_a_dead_letter_is_committed_until_the_dlq_has_it(
    settings: Settings, kafka_admin: AdminClient, layout: TopicLayout, migrated: sa.Engine,
    group_id: str, make_projector: Callable[..., Projector],
) -> None:
    # Every topic but the events DLQ (the broker creates no topic by itself): the dead letter
    # cannot be written.
    specs = layout.specs(settings.topic_partitions)
    create_topics(kafka_admin, [s for s in specs if s.name != layout.events_dlq])
    request_id = str(uuid.uuid4())
    trail = encoded(saga_trail(request_id))
    malformed = codec.MAGIC + codec.schema("ProvisioningStepStarted").fingerprint_bytes + b"\xff"
    produce_to(settings, layout.events, HELD_PARTITION,
               [trail[0], (request_id.encode(), malformed, []), *trail[1:]])

    projector = make_projector(group_id, dead_letter_timeout_s=1.0)
    until = time.monotonic() + 5
    while time.monotonic() < until:
        projector.turn()
    assert committed(settings, group_id, layout.events)[HELD_PARTITION] < 2, \
        "committed past a record whose dead letter was not written"
    assert REGISTRY.get_sample_value("provisioning_projector_unprojectable_records_total",
                                     {"group": group_id, "kind": "malformed"}) is None

    create_topics(kafka_admin, specs)  # the DLQ comes: the partition goes on
    turn_until([projector], lambda: committed(settings, group_id, layout.events)[
        HELD_PARTITION] == 13, 60, "the partition committed past the dead letter")
    assert finished(migrated, request_id, 12)
    letters = read_all(settings, layout.events_dlq, expected=1)  # retries left no copies
    assert letters[0][1] == malformed and letters[0][2]["dlq-origin-offset"] == b"1"
    assert REGISTRY.get_sample_value("provisioning_projector_unprojectable_records_total",
                                     {"group": group_id, "kind": "malformed"}) == 1


def read_all(settings: Settings, topic: str, expected: int, timeout_s: float = 20
             ) -> list[tuple[bytes, bytes, dict[str, bytes]]]:
    reader = Consumer({**settings.kafka_config(), "group.id": f"dlq-{uuid.uuid4().hex[:8]}",
                       "enable.auto.commit": False, "isolation.level": "read_committed"})
    reader.assign([TopicPartition(topic, p, 0) for p in range(settings.topic_partitions)])
    found: list[tuple[bytes, bytes, dict[str, bytes]]] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            for m in reader.consume(100, timeout=0.5):
                if m.error() is None:
                    found.append((m.key(), m.value(), dict(m.headers() or [])))
            if len(found) >= expected:
                time.sleep(0.5)  # and nothing more comes
                found += [(m.key(), m.value(), dict(m.headers() or []))
                          for m in reader.consume(100, timeout=0.5) if m.error() is None]
                break
    finally:
        reader.close()
    assert len(found) == expected, found
    return found
