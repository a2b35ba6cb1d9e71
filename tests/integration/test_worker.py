"""The worker as a real process on the real broker and database: sagas run exactly once."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from harness import TopicReader, WorkerProcess

from consumer.participants.builtin.registry import add_entity
from producers.commands import CommandPublisher
from producers.subscriber import EVENT_RECORDS, Event, EventSubscriber
from provisioning.settings import Settings
from provisioning.topics import TopicLayout
from schemas import codec
from schemas.examples import EXAMPLES

TENANT_EVENTS = ["ProvisioningRequested"] + [
    name
    for step in ("validate-entity", "create-tenant", "setup-billing", "activate-services",
                 "create-admin-role")
    for name in ("ProvisioningStepStarted", "ProvisioningStepCompleted")
] + ["ProvisioningSucceeded"]


@pytest.fixture
def worker(settings: Settings, topics: TopicLayout, migrated: sa.Engine, tmp_path: Path,
           group_id: str) -> Iterator[WorkerProcess]:
    process = WorkerProcess(settings, tmp_path, group_id).start()
    yield process
    code = process.stop()
    assert code == 0, f"worker did not shut down cleanly ({code}):\n{process.log_text()[-3000:]}"


@pytest.fixture
def replies_topic(kafka_admin: AdminClient, settings: Settings) -> str:
    name = f"{settings.topic_prefix}.replies"
    kafka_admin.create_topics([NewTopic(name, 1, 1)])[name].result()
    return name


def _tenant_command(entity_id: str, reply_to: str | None = None) -> dict:
    return {
        "requestId": str(uuid.uuid4()), "entityId": entity_id, "tenantName": "Acme",
        "subscriptionPlan": "BUSINESS",
        "billingInfo": {"accountName": "Acme", "billingEmail": "billing@acme.example",
                        "currency": "EUR", "paymentMethod": None},
        "requestedBy": f"user-{uuid.uuid4().hex[:8]}", "replyTo": reply_to,
        "requestedAt": int(time.time() * 1000),
    }


def test_tenant_saga_runs_once_and_duplicates_are_answered_again(
    settings: Settings, topics: TopicLayout, worker: WorkerProcess, migrated: sa.Engine,
    replies_topic: str,
) -> None:
    entity_id = f"entity-{uuid.uuid4().hex[:10]}"
    add_entity(migrated, entity_id, "Acme")
    command = _tenant_command(entity_id, reply_to=replies_topic)
    request_id = command["requestId"]
    events = TopicReader(settings, topics.events)
    replies = TopicReader(settings, replies_topic)
    with CommandPublisher(settings) as publisher:
        publisher.publish("ProvisionTenantRequest", command)
    events.wait_for(lambda r: r.terminal(request_id), 60, "the saga's terminal event")

    with CommandPublisher(settings) as publisher:
        publisher.publish("ProvisionTenantRequest", command)
    replies.wait_for(
        lambda r: len([x for x in r.records if x.record_name == "ProvisioningCompleted"]) == 2,
        30, "two ProvisioningCompleted replies",
    )
    time.sleep(1)
    events.poll(1)

    trail = events.by_key[request_id]
    assert [r.record_name for r in trail] == TENANT_EVENTS
    assert [r.value["sequence"] for r in trail] == list(range(1, len(TENANT_EVENTS) + 1))
    tenant_id = trail[-1].value["resourceId"]
    completed = [r.value for r in replies.records if r.record_name == "ProvisioningCompleted"]
    assert [c["resourceId"] for c in completed] == [tenant_id, tenant_id]
    with migrated.connect() as conn:
        count = conn.execute(sa.text("SELECT count(*) FROM tenants WHERE id = :id"),
                             {"id": tenant_id}).scalar_one()
    assert count == 1
    events.close()
    replies.close()


def test_poison_commands_go_to_the_dlq_and_the_partition_keeps_moving(
    settings: Settings, topics: TopicLayout, worker: WorkerProcess, migrated: sa.Engine,
) -> None:
    producer = Producer(settings.kafka_config())
    poison_key = str(uuid.uuid4()).encode()
    for partition in range(settings.topic_partitions):
        producer.produce(topics.commands, key=poison_key, value=b"\xc3\x01not avro at all",
                         partition=partition)
        producer.produce(topics.commands, key=None, value=b"", partition=partition)
    # Valid Avro of a known record that is no command, and a command with an invalid payload.
    producer.produce(topics.commands, key=poison_key, partition=0,
                     value=codec.encode("StepRequest", EXAMPLES["StepRequest"]))
    bad_email = {**EXAMPLES["ProvisionUserRequest"], "email": "not-an-address"}
    producer.produce(topics.commands, key=bad_email["requestId"].encode(), partition=0,
                     value=codec.encode("ProvisionUserRequest", bad_email))
    huge = {**_tenant_command("entity-x"), "tenantName": "x" * settings.max_command_bytes}
    producer.produce(topics.commands, key=huge["requestId"].encode(), partition=1,
                     value=codec.encode("ProvisionTenantRequest", huge))
    producer.flush(10)
    entity_id = f"entity-{uuid.uuid4().hex[:10]}"
    add_entity(migrated, entity_id, "Acme")
    command = _tenant_command(entity_id)
    with CommandPublisher(settings) as publisher:
        publisher.publish("ProvisionTenantRequest", command)

    events = TopicReader(settings, topics.events)
    events.wait_for(lambda r: r.terminal(command["requestId"]), 60, "the valid saga's end")
    poison_count = 2 * settings.topic_partitions + 3
    dlq = _raw_records(settings, topics.commands_dlq, poison_count)

    assert events.terminal(command["requestId"])[0].record_name == "ProvisioningSucceeded"
    assert len(dlq) == poison_count
    reasons = b" | ".join(h["dlq-reason"] for h in dlq)
    assert b"is not a provisioning command" in reasons
    assert b"email" in reasons
    assert f"over the limit of {settings.max_command_bytes}".encode() in reasons
    assert all(headers["dlq-reason"] for headers in dlq)
    assert {h["dlq-origin-topic"] for h in dlq} == {topics.commands.encode()}
    rejected = [r for r in events.by_key.get(poison_key.decode(), [])
                if r.record_name == "ProvisioningRejected"]
    assert rejected and rejected[0].value["code"] == "invalid"
    # Its workflow could not be read: the header says so, like the field.
    assert rejected[0].headers["workflow-type"] == b"unknown" == rejected[0].value[
        "workflowType"].encode()
    assert worker.alive()
    events.close()


def _raw_records(settings: Settings, topic: str, expected: int) -> list[dict[str, bytes]]:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({**settings.kafka_config(), "group.id": f"dlq-{uuid.uuid4().hex[:6]}",
                         "isolation.level": "read_committed", "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(settings.topic_partitions)])
    found: list[dict[str, bytes]] = []
    deadline = time.monotonic() + 30
    while len(found) < expected and time.monotonic() < deadline:
        for message in consumer.consume(100, timeout=0.5):
            if not message.error():
                found.append(dict(message.headers() or []))
    consumer.close()
    return found


def test_terminal_sagas_are_tombstoned_after_the_idempotency_window(
    settings: Settings, topics: TopicLayout, migrated: sa.Engine, tmp_path: Path,
    group_id: str,
) -> None:
    process = WorkerProcess(settings, tmp_path, group_id,
                            extra_args=("--idempotency-window-s", "1")).start()
    try:
        entity_id = f"entity-{uuid.uuid4().hex[:10]}"
        add_entity(migrated, entity_id, "Brief")
        command = _tenant_command(entity_id)
        with CommandPublisher(settings) as publisher:
            publisher.publish("ProvisionTenantRequest", command)
        state = _StateReader(settings, topics.state)
        state.wait_for_tombstone(command["requestId"], 30)
        assert state.values[command["requestId"]][-1] is None
        assert len(state.values[command["requestId"]]) >= 2, "snapshots first, then the tombstone"
    finally:
        assert process.stop() == 0, process.log_text()[-3000:]


class _StateReader:
    def __init__(self, settings: Settings, topic: str) -> None:
        from confluent_kafka import Consumer, TopicPartition

        self.consumer = Consumer({**settings.kafka_config(), "group.id": uuid.uuid4().hex,
                                  "isolation.level": "read_committed",
                                  "enable.auto.commit": False})
        self.consumer.assign([TopicPartition(topic, p, 0)
                              for p in range(settings.topic_partitions)])
        self.values: dict[str, list[bytes | None]] = {}

    def wait_for_tombstone(self, key: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for message in self.consumer.consume(100, timeout=0.5):
                if not message.error():
                    self.values.setdefault(message.key().decode(), []).append(message.value())
            if self.values.get(key) and self.values[key][-1] is None:
                self.consumer.close()
                return
        self.consumer.close()
        raise AssertionError(f"no tombstone for {key} within {timeout_s} s")


def test_every_event_names_its_workflow_and_success_carries_what_the_steps_produced(
    settings: Settings, topics: TopicLayout, worker: WorkerProcess, migrated: sa.Engine,
) -> None:
    entity_id = f"entity-{uuid.uuid4().hex[:10]}"
    add_entity(migrated, entity_id, "Acme")
    tenant_command = _tenant_command(entity_id)
    tenant_request = tenant_command["requestId"]
    events = TopicReader(settings, topics.events)
    with CommandPublisher(settings) as publisher:
        publisher.publish("ProvisionTenantRequest", tenant_command)
    events.wait_for(lambda r: r.terminal(tenant_request), 60, "the tenant saga's end")
    tenant_id = events.terminal(tenant_request)[0].value["resourceId"]
    # OrderService: in the BUSINESS plan, not among the services a new tenant gets.
    service_command = {
        "requestId": str(uuid.uuid4()), "requestedBy": tenant_command["requestedBy"],
        "replyTo": None, "requestedAt": int(time.time() * 1000), "tenantId": tenant_id,
        "serviceName": "OrderService", "slaTier": "GOLD",
    }
    service_request = service_command["requestId"]
    with CommandPublisher(settings) as publisher:
        publisher.publish("ProvisionServiceRequest", service_command)
    events.wait_for(lambda r: r.terminal(service_request), 60, "the service saga's end")
    events.close()

    tenant_trail, service_trail = events.by_key[tenant_request], events.by_key[service_request]
    assert [r.record_name for r in tenant_trail] == TENANT_EVENTS
    assert service_trail[-1].record_name == "ProvisioningSucceeded"
    for trail, workflow in ((tenant_trail, b"tenant"), (service_trail, b"service")):
        assert [r.headers.get("workflow-type") for r in trail] == [workflow] * len(trail)
        assert {r.value["workflowType"].encode() for r in trail} == {workflow}

    with migrated.connect() as conn:
        billing_account = conn.execute(sa.text(
            "SELECT id FROM billing_accounts WHERE tenant_id = :t"), {"t": tenant_id}).scalar_one()
        admin = conn.execute(sa.text(
            "SELECT u.id FROM users u JOIN memberships m ON m.user_id = u.id "
            "WHERE m.tenant_id = :t AND m.role_name = 'tenant-admin' AND u.external_id = :who"),
            {"t": tenant_id, "who": tenant_command["requestedBy"]}).scalar_one()
        subscription = service_trail[-1].value["resourceId"]
        limit = conn.execute(sa.text(
            "SELECT requests_per_second, burst FROM rate_limits WHERE subscription_id = :s"),
            {"s": subscription}).one()
        instance = conn.execute(sa.text(
            "SELECT id, namespace FROM service_instances WHERE subscription_id = :s"),
            {"s": subscription}).one()
    # The outputs of the built-in steps (README, Workflows): what a subscriber needs to know
    # about what was provisioned, without calling back.
    assert tenant_trail[-1].value["outputs"] == {
        "tenantId": tenant_id, "billingAccountId": str(billing_account),
        "activatedServices": "CoreService", "adminUserId": str(admin),
    }
    assert service_trail[-1].value["outputs"] == {
        "subscriptionId": subscription, "serviceInstanceId": str(instance.id),
        "serviceNamespace": instance.namespace, "rateLimitRps": str(limit.requests_per_second),
        "rateLimitBurst": str(limit.burst),
    }

    # A subscriber of one workflow sees that workflow's events only.
    for workflow, trail, other in (("tenant", tenant_trail, service_trail),
                                   ("service", service_trail, tenant_trail)):
        seen: list[Event] = []
        with EventSubscriber(settings, f"sub-{uuid.uuid4().hex[:8]}", from_beginning=True,
                             workflow_types={workflow}) as subscriber:
            for name in EVENT_RECORDS:
                subscriber.on(name, seen.append)
            deadline = time.monotonic() + 30
            while len(seen) < len(trail) or subscriber.counts.filtered < len(other):
                assert time.monotonic() < deadline, f"{workflow}: {subscriber.counts}"
                subscriber.poll_once(0.5)
            subscriber.poll_once(0.5)  # nothing more comes
        assert [(e.request_id, e.record_name) for e in seen] == [
            (r.key, r.record_name) for r in trail]
        assert subscriber.counts.filtered == len(other)
        assert subscriber.counts.undecodable == subscriber.counts.skipped == 0
