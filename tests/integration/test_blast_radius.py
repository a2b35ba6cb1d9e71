"""What one hostile or buggy neighbour can cost: its own saga or command, never the worker.

Each test sends what a bad caller, a broken participant or a forger would send to a real worker
process on the real broker and database, then sends the sagas of other tenants right after it:
the bad input ends as a rejection, a dead letter or a failed saga with a reason, the worker
never exits, and the others complete within 60 s.
"""

from __future__ import annotations

import random
import string
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
)
from harness import (
    JsonParticipant,
    TopicReader,
    WorkerProcess,
    free_port,
    serve_http,
    wait_until,
)
from prometheus_client.parser import text_string_to_metric_families
from test_worker import _tenant_command

from consumer.participants.builtin.registry import add_entity
from producers.client import partition_for
from producers.commands import CommandPublisher
from provisioning.settings import Settings
from provisioning.topics import (
    COMMAND_HEADROOM_BYTES,
    TopicLayout,
    create_topics,
    describe_configs,
)
from schemas import codec
from schemas.examples import EXAMPLES

OTHERS_WITHIN_S = 60


# --- a participant service that misbehaves on request -------------------------------------------


class Stub(JsonParticipant):
    """`tenant.create-admin-role` as an HTTP service. By the entity's name: `surrogate-` answers
    400 with a lone surrogate in its JSON (valid JSON, unencodable text), `longreason-` 422 with
    1,000 random letters, `huge-` succeeds with an output of 950 KB (its undo too), `slow-`
    takes `slow_s` first; anything else succeeds at once. Every compensation succeeds. Calls
    are recorded as (entity, action)."""

    calls: list[tuple[str, str]] = []
    slow_s = 1.0

    def do_POST(self) -> None:  # noqa: N802 - the http.server API
        body = self.body()
        entity = body["params"].get("entityId", "")
        Stub.calls.append((entity, body["action"]))
        if body["action"] == "COMPENSATE":
            notes = "x" * 950_000 if entity.startswith("huge-") else ""
            self.answer(200, {"output": {"notes": notes}})
        elif entity.startswith("surrogate-"):
            self.answer(400, b'{"detail": "no role for \\ud800 here"}')
        elif entity.startswith("longreason-"):
            reason = "".join(random.choice(string.ascii_letters) for _ in range(1000))
            self.answer(422, {"detail": reason})
        elif entity.startswith("huge-"):
            self.answer(200, {"output": {"adminUserId": "x" * 950_000}})
        else:
            if entity.startswith("slow-"):
                time.sleep(Stub.slow_s)
            self.answer(200, {"output": {"adminUserId": f"http-{entity}"}})


@pytest.fixture
def stub_url() -> Iterator[str]:
    Stub.calls = []
    Stub.slow_s = 1.0
    server, url = serve_http(Stub)
    yield f"{url}/steps"
    server.shutdown()
    server.server_close()


def routing_file(tmp_path: Path, steps: dict[str, str]) -> Path:
    path = tmp_path / "routing.toml"
    path.write_text("".join(f'[steps."{step}"]\nadapter = "{adapter}"\nattempt_timeout_s = 30\n\n'
                            for step, adapter in steps.items()))
    return path


def start_worker(settings: Settings, tmp_path: Path, group_id: str, *args: str,
                 routing: Path | None = None) -> tuple[WorkerProcess, int]:
    port = free_port()
    env = {"PROVISIONING_ROUTING_FILE": str(routing)} if routing else {}
    worker = WorkerProcess(settings, tmp_path, group_id, extra_args=(
        "--metrics-port", str(port), *args), extra_env=env).start()
    wait_until(lambda: _get(port, "/readyz") == 200, 60, "the worker's readiness")
    return worker, port


def _get(port: int, path: str) -> int | None:
    try:
        return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=2).status_code
    except httpx.HTTPError:
        return None


def metric(port: int, name: str, **labels: str) -> float:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


def other_tenants(engine: sa.Engine, count: int, prefix: str = "other") -> list[dict]:
    commands = []
    for i in range(count):
        entity = f"{prefix}-{uuid.uuid4().hex[:8]}-{i}"
        add_entity(engine, entity, entity)
        commands.append(_tenant_command(entity))
    return commands


def publish(settings: Settings, record_name: str, *commands: dict) -> None:
    with CommandPublisher(settings) as publisher:
        for command in commands:
            publisher.publish(record_name, command)


def assert_all_succeed(events: TopicReader, commands: list[dict],
                       timeout_s: float = OTHERS_WITHIN_S) -> None:
    ids = [c["requestId"] for c in commands]
    events.wait_for(lambda r: all(r.terminal(i) for i in ids), timeout_s,
                    "the other tenants' sagas")
    outcomes = {i: events.terminal(i)[0].record_name for i in ids}
    assert set(outcomes.values()) == {"ProvisioningSucceeded"}, outcomes


def dead_letters(settings: Settings, topic: str, expected: int,
                 timeout_s: float = 30) -> list[Any]:
    consumer = Consumer({**settings.kafka_config(), "group.id": f"dlq-{uuid.uuid4().hex[:6]}",
                         "isolation.level": "read_committed", "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(settings.topic_partitions)])
    found: list[Any] = []
    deadline = time.monotonic() + timeout_s
    while len(found) < expected and time.monotonic() < deadline:
        found += [m for m in consumer.consume(100, timeout=0.5) if not m.error()]
    consumer.close()
    return found


def service_command(reply_to: str | None) -> dict:
    return {**EXAMPLES["ProvisionServiceRequest"], "requestId": str(uuid.uuid4()),
            "tenantId": f"t-{uuid.uuid4().hex[:8]}", "replyTo": reply_to}


def no_traceback(worker: WorkerProcess) -> None:
    assert worker.alive(), worker.log_text()[-3000:]
    assert "Traceback" not in worker.log_text(), worker.log_text()[-3000:]


# --- 1. replyTo: never the service's own topics, never an internal topic -------------------------


def test_a_reply_topic_of_the_service_or_kafka_itself_is_refused_and_restore_skips_corrupt_state(
    settings: Settings, topics: TopicLayout, migrated: sa.Engine, tmp_path: Path, group_id: str,
) -> None:
    worker, port = start_worker(settings, tmp_path, group_id)
    events = TopicReader(settings, topics.events)
    into_state = service_command(reply_to=topics.state)
    into_offsets = service_command(reply_to="__consumer_offsets")
    into_other_env = service_command(reply_to="staging.provisioning.commands")
    publish(settings, "ProvisionServiceRequest", into_state, into_state, into_offsets,
            into_other_env)
    others = other_tenants(migrated, 3)
    publish(settings, "ProvisionTenantRequest", *others)

    assert_all_succeed(events, others)
    letters = dead_letters(settings, topics.commands_dlq, 4)
    reasons = sorted(dict(m.headers())["dlq-reason"].decode() for m in letters)
    assert len(reasons) == 4
    assert sum("one of the Provisioning Service's own topics" in r for r in reasons) == 3
    assert sum("internal Kafka topic" in r for r in reasons) == 1
    for bad in (into_state, into_offsets, into_other_env):
        rejected = [r for r in events.by_key[bad["requestId"]]
                    if r.record_name == "ProvisioningRejected"]
        assert rejected, f"no ProvisioningRejected for {bad['replyTo']}"
    state_records = TopicReader(settings, topics.state)
    state_records.poll(2)
    assert {r.record_name for r in state_records.records} == {"SagaState"}

    # A state topic that holds records which are no SagaState (written by anyone who could):
    # the next worker to restore the partition logs, counts and skips them.
    assert worker.stop() == 0
    started = codec.encode("ProvisioningStarted", {**EXAMPLES["ProvisioningStarted"]})
    producer = Producer(settings.kafka_config())
    producer.produce(topics.state, key=str(uuid.uuid4()).encode(), value=started, partition=0)
    producer.produce(topics.state, key=str(uuid.uuid4()).encode(), value=b"\xc3\x01garbage",
                     partition=1, headers=[("saga-status", b"terminal"),
                                           ("saga-finished-at", b"1")])
    producer.produce(topics.state, key=b"\xff\xfe not UTF-8", value=b"no marker", partition=2)
    producer.flush(10)
    successor, port = start_worker(settings, tmp_path, group_id)
    later = other_tenants(migrated, 3)
    publish(settings, "ProvisionTenantRequest", *later)
    assert_all_succeed(events, later)
    assert metric(port, "provisioning_corrupt_state_records_total") == 3
    no_traceback(successor)
    assert successor.stop() == 0
    events.close()
    state_records.close()


# --- 2. a command as large as librdkafka lets through ---------------------------------------------


def test_an_oversized_command_is_dead_lettered_in_a_bounded_record(
    settings: Settings, topics: TopicLayout, migrated: sa.Engine, tmp_path: Path, group_id: str,
    kafka_admin: AdminClient,
) -> None:
    # A commands topic created before it had a size limit (the broker's 1 MiB default).
    _set_config(kafka_admin, topics.commands, "max.message.bytes", "1048588")
    worker, port = start_worker(settings, tmp_path, group_id)
    events = TopicReader(settings, topics.events)
    request_id = str(uuid.uuid4())
    oversized = _command_of_size(request_id, 999_800)
    victim = partition_for(request_id, settings.topic_partitions)
    raw = Producer({**settings.kafka_config(), "partitioner": "murmur2_random"})
    raw.produce(topics.commands, key=request_id.encode(), value=oversized)
    raw.flush(10)
    others = _on_partition(migrated, settings, victim, 3) + other_tenants(migrated, 3)
    publish(settings, "ProvisionTenantRequest", *others)

    assert_all_succeed(events, others)
    [letter] = dead_letters(settings, topics.commands_dlq, 1)
    headers = dict(letter.headers())
    assert len(letter.value()) == settings.max_command_bytes
    assert letter.value() == oversized[:settings.max_command_bytes]
    assert headers["dlq-original-size"] == b"999800"
    assert headers["dlq-truncated"] == b"true"
    assert headers["dlq-origin-partition"] == str(victim).encode()
    assert f"over the limit of {settings.max_command_bytes}".encode() in headers["dlq-reason"]
    no_traceback(worker)
    assert worker.stop() == 0
    events.close()


def test_topics_create_limits_the_commands_topic_and_brings_existing_topics_to_the_spec(
    settings: Settings, topics: TopicLayout, kafka_admin: AdminClient,
) -> None:
    _set_config(kafka_admin, topics.commands, "max.message.bytes", "1048588")
    _set_config(kafka_admin, topics.events, "retention.ms", "60000")
    limit = settings.max_command_bytes + COMMAND_HEADROOM_BYTES

    report = create_topics(kafka_admin, topics.specs(
        settings.topic_partitions, max_command_bytes=settings.max_command_bytes))

    assert sorted(report.reconfigured) == sorted([topics.commands, topics.events])
    producer = Producer({**settings.kafka_config(), "message.max.bytes": 2_000_000})
    failures: list[str] = []
    producer.produce(topics.commands, key=b"k", value=b"x" * (limit + 100),
                     on_delivery=lambda err, _: failures.append(err.name() if err else "ok"))
    producer.flush(10)
    assert failures == ["MSG_SIZE_TOO_LARGE"]


def _set_config(admin: AdminClient, topic: str, name: str, value: str) -> None:
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=[
        ConfigEntry(name, value, incremental_operation=AlterConfigOpType.SET)])
    admin.incremental_alter_configs([resource])[resource].result(10)
    # The broker applies it from the metadata log a moment later.
    wait_until(lambda: describe_configs(admin, topic).get(name) == value, 10, f"{name}={value}")


def _command_of_size(request_id: str, size: int) -> bytes:
    command = {**_tenant_command("entity-huge"), "requestId": request_id, "tenantName": ""}
    base = len(codec.encode("ProvisionTenantRequest", command))
    # The length prefix of the name grows with it: adjust until the record is exactly `size`.
    for pad in range(size - base - 8, size - base + 1):
        value = codec.encode("ProvisionTenantRequest", {**command, "tenantName": "x" * pad})
        if len(value) == size:
            return value
    raise AssertionError("no padding gives that size")


def _on_partition(engine: sa.Engine, settings: Settings, partition: int, count: int,
                  prefix: str = "neighbour") -> list[dict]:
    """Tenant commands of new entities whose requestIds land on `partition`."""
    found: list[dict] = []
    while len(found) < count:
        [command] = other_tenants(engine, 1, prefix=prefix)
        if partition_for(command["requestId"], settings.topic_partitions) == partition:
            found.append(command)
    return found


# --- 3. a participant's answer that cannot be recorded ----------------------------------------


def test_unrecordable_participant_answers_fail_only_their_own_saga(
    settings: Settings, topics: TopicLayout, migrated: sa.Engine, tmp_path: Path, group_id: str,
    stub_url: str,
) -> None:
    routing = routing_file(tmp_path, {"tenant.create-admin-role": stub_url})
    worker, port = start_worker(settings, tmp_path, group_id, routing=routing)
    events = TopicReader(settings, topics.events)
    [surrogate] = other_tenants(migrated, 1, prefix="surrogate")
    [huge] = other_tenants(migrated, 1, prefix="huge")
    publish(settings, "ProvisionTenantRequest", surrogate, huge)
    others = other_tenants(migrated, 4)
    publish(settings, "ProvisionTenantRequest", *others)

    assert_all_succeed(events, others)
    events.wait_for(lambda r: r.terminal(surrogate["requestId"]) and r.terminal(huge["requestId"]),
                    30, "the two sagas' ends")
    refused = events.terminal(surrogate["requestId"])[0]
    assert refused.record_name == "ProvisioningFailedEvent"
    assert refused.value["failedStep"] == "create-admin-role"
    assert refused.value["reason"].startswith("HTTP 400 from ")
    assert "no role for ? here" in refused.value["reason"]
    bloated = events.terminal(huge["requestId"])[0]
    assert bloated.record_name == "ProvisioningFailedEvent"
    assert "too large to record" in bloated.value["reason"]
    # It did the work: its undo ran, then the earlier steps' undos, in reverse order.
    compensated = [r.value["step"] for r in events.by_key[huge["requestId"]]
                   if r.record_name == "ProvisioningStepCompensated"]
    assert compensated == ["create-admin-role", "activate-services", "setup-billing",
                           "create-tenant"]
    # Its undo answered 950 KB of outputs too: an undo's outputs are not recorded, so it
    # counts as done, at once (it was retried until given up, and the saga named it a leftover).
    assert not [r for r in events.by_key[huge["requestId"]]
                if r.record_name == "ProvisioningCompensationFailed"]
    assert (huge["entityId"], "COMPENSATE") in Stub.calls
    with migrated.connect() as conn:
        left = conn.execute(sa.text(
            "SELECT count(*) FROM tenants t JOIN entities e ON e.id = t.entity_id "
            "WHERE e.external_id IN (:a, :b)"),
            {"a": surrogate["entityId"], "b": huge["entityId"]}).scalar_one()
    assert left == 0
    no_traceback(worker)
    assert worker.stop() == 0
    events.close()


# --- 4. forged step replies -----------------------------------------------------------------------


def test_a_step_reply_is_taken_only_from_the_participant_the_step_was_sent_to(
    settings: Settings, kafka_admin: AdminClient, migrated: sa.Engine, tmp_path: Path,
    group_id: str, stub_url: str,
) -> None:
    layout = TopicLayout(settings.topic_prefix)
    create_topics(kafka_admin, layout.specs(settings.topic_partitions, ["billing"],
                                            max_command_bytes=settings.max_command_bytes))
    routing = routing_file(tmp_path, {"tenant.setup-billing": "kafka:billing",
                                      "tenant.create-admin-role": stub_url})
    Stub.slow_s = 3.0
    worker, port = start_worker(settings, tmp_path, group_id, routing=routing)
    events = TopicReader(settings, layout.events)
    [target] = other_tenants(migrated, 1, prefix="slow")
    request_id = target["requestId"]
    publish(settings, "ProvisionTenantRequest", target)
    _started(events, request_id, "setup-billing")
    forger = Producer({**settings.kafka_config(), "partitioner": "murmur2_random"})
    key = f"{request_id}:1:setup-billing"
    _forge(forger, layout, request_id, "setup-billing", key="not-the-key", participant="billing")
    _forge(forger, layout, request_id, "setup-billing", key=key, participant="mallory")
    _forge(forger, layout, request_id, "activate-services", key=key, participant="billing")
    _forge(forger, layout, str(uuid.uuid4()), "setup-billing", key=key, participant="billing")
    forger.produce(layout.step_replies, key=request_id.encode(), value=b"\xc3\x01\x00")
    forger.flush(10)
    wait_until(lambda: metric(port, "provisioning_rejected_replies_total",
                              reason="wrong_participant") == 1, 20, "the forgeries dropped")
    assert metric(port, "provisioning_rejected_replies_total", reason="wrong_idempotency_key") == 1
    assert metric(port, "provisioning_rejected_replies_total", reason="not_awaited") == 1
    assert metric(port, "provisioning_rejected_replies_total", reason="unknown_saga") == 1
    assert metric(port, "provisioning_rejected_replies_total", reason="undecodable") == 1
    assert not [r for r in events.by_key[request_id] if r.record_name
                == "ProvisioningStepCompleted" and r.value["step"] == "setup-billing"]

    # The answer of the participant the step was sent to is taken...
    _forge(forger, layout, request_id, "setup-billing", key=key, participant="billing",
           output={"billingAccountId": "from-billing"})
    forger.flush(10)
    _started(events, request_id, "create-admin-role")
    # ...but not one for the step the HTTP participant is working on right now.
    _forge(forger, layout, request_id, "create-admin-role",
           key=f"{request_id}:1:create-admin-role", participant="identity",
           output={"adminUserId": "forged"})
    forger.flush(10)
    events.wait_for(lambda r: r.terminal(request_id), 30, "the saga's end")
    assert events.terminal(request_id)[0].record_name == "ProvisioningSucceeded"
    completed = {r.value["step"]: r.value["output"] for r in events.by_key[request_id]
                 if r.record_name == "ProvisioningStepCompleted"}
    assert completed["setup-billing"] == {"billingAccountId": "from-billing"}
    assert completed["create-admin-role"] == {"adminUserId": f"http-{target['entityId']}"}
    assert metric(port, "provisioning_rejected_replies_total", reason="not_remote") == 1
    no_traceback(worker)
    assert worker.stop() == 0
    events.close()


def _started(events: TopicReader, request_id: str, step: str) -> None:
    events.wait_for(lambda r: any(x.record_name == "ProvisioningStepStarted"
                                  and x.value["step"] == step for x in r.by_key[request_id]),
                    30, f"{step} started")


def _forge(producer: Producer, layout: TopicLayout, request_id: str, step: str, *, key: str,
           participant: str, output: dict[str, str] | None = None) -> None:
    reply = {"requestId": request_id, "run": 1, "step": step, "action": "EXECUTE",
             "attempt": 1, "idempotencyKey": key, "outcome": "SUCCEEDED",
             "output": output or {"forged": "yes"}, "reason": None,
             "occurredAt": int(time.time() * 1000), "participant": participant}
    producer.produce(layout.step_replies, key=request_id.encode(),
                     value=codec.encode("StepReply", reply))


# --- reply topics that refuse the worker's records ------------------------------------------------


def test_a_reply_topic_too_small_for_a_transaction_marker_is_never_written(
    settings: Settings, topics: TopicLayout, migrated: sa.Engine, tmp_path: Path, group_id: str,
    kafka_admin: AdminClient,
) -> None:
    # Below a marker's size the broker cannot abort a transaction that wrote there, and the
    # worker's transactional id would be stuck for good: such a topic is checked out first.
    tiny = f"{settings.topic_prefix}.caller-replies"
    kafka_admin.create_topics([NewTopic(tiny, 1, 1, config={"max.message.bytes": "40"})])[
        tiny].result(10)
    worker, port = start_worker(settings, tmp_path, group_id)
    events = TopicReader(settings, topics.events)
    [caller] = other_tenants(migrated, 1, prefix="tiny")
    caller["replyTo"] = tiny
    publish(settings, "ProvisionTenantRequest", caller)
    others = other_tenants(migrated, 3)
    publish(settings, "ProvisionTenantRequest", *others)

    assert_all_succeed(events, [caller, *others])
    assert metric(port, "provisioning_replies_dropped_total") == 2  # Started and Completed
    assert "transaction aborted" not in worker.log_text()
    no_traceback(worker)
    assert worker.stop() == 0
    events.close()


def test_a_reply_topic_that_refuses_a_reply_costs_one_rewind_not_the_partition(
    settings: Settings, topics: TopicLayout, migrated: sa.Engine, tmp_path: Path, group_id: str,
    kafka_admin: AdminClient, stub_url: str,
) -> None:
    small = f"{settings.topic_prefix}.caller-replies"
    kafka_admin.create_topics([NewTopic(small, 1, 1, config={"max.message.bytes": "600"})])[
        small].result(10)
    routing = routing_file(tmp_path, {"tenant.create-admin-role": stub_url})
    worker, port = start_worker(settings, tmp_path, group_id, routing=routing)
    events = TopicReader(settings, topics.events)
    replies = TopicReader(settings, small)
    [caller] = other_tenants(migrated, 1, prefix="longreason")
    caller["replyTo"] = small
    publish(settings, "ProvisionTenantRequest", caller)
    others = other_tenants(migrated, 3)
    publish(settings, "ProvisionTenantRequest", *others)

    assert_all_succeed(events, others)
    events.wait_for(lambda r: r.terminal(caller["requestId"]), 60, "the caller's saga's end")
    assert events.terminal(caller["requestId"])[0].record_name == "ProvisioningFailedEvent"
    replies.poll(2)
    # Its ProvisioningStarted fits; its ProvisioningFailed (a 500-character reason) does not.
    assert [r.record_name for r in replies.records] == ["ProvisioningStarted"]
    assert metric(port, "provisioning_replies_dropped_total") == 1
    assert worker.log_text().count("transaction aborted") == 1
    no_traceback(worker)
    assert worker.stop() == 0
    events.close()
    replies.close()


# --- 8. a worker added while the others hold back commands ----------------------------------------


def test_a_worker_added_while_flow_control_holds_back_leaves_no_partition_unread(
    settings: Settings, topics: TopicLayout, migrated: sa.Engine, tmp_path: Path, group_id: str,
    stub_url: str,
) -> None:
    """Worker `a` holds back: its one in-flight slot is a slow saga on partition 2. Worker `b`
    joins; with static membership the range assignor orders members by instance id, so `a`
    keeps partitions 0 and 1 (paused by librdkafka across the re-assignment) and `b` takes
    partition 2 with the slow saga. `a` now has nothing in flight: it must read 0 and 1 again."""
    routing = routing_file(tmp_path, {"tenant.create-admin-role": stub_url})
    Stub.slow_s = 8.0
    run = uuid.uuid4().hex[:6]
    common = ("--max-in-flight", "1", "--static-membership")
    first = WorkerProcess(settings, tmp_path, group_id, instance_id=f"a-{run}",
                          extra_args=common, extra_env={"PROVISIONING_ROUTING_FILE": str(routing)})
    first.start()
    events = TopicReader(settings, topics.events)
    [slow] = _on_partition(migrated, settings, 2, 1, prefix="slow")
    publish(settings, "ProvisionTenantRequest", slow)
    _started(events, slow["requestId"], "create-admin-role")
    held_back = _on_partition(migrated, settings, 0, 3) + _on_partition(migrated, settings, 1, 3)
    publish(settings, "ProvisionTenantRequest", *held_back)
    time.sleep(2)
    assert not any(events.terminal(c["requestId"]) for c in held_back), "a did not hold back"
    second = WorkerProcess(settings, tmp_path, group_id, instance_id=f"b-{run}",
                           extra_args=common, extra_env={"PROVISIONING_ROUTING_FILE": str(routing)})
    second.start()

    assert_all_succeed(events, [*held_back, slow])
    for worker in (first, second):
        no_traceback(worker)
        assert worker.stop() == 0
    events.close()
