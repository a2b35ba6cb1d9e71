"""ProvisioningClient on the real broker: what submit() publishes, and what await_outcome() reads.

No worker runs here: the tests write the events a worker would write, keyed by requestId
with the Java partitioner, so the client's reading is tested on its own.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from producers import InvalidRequest, OutcomeTimeout, ProvisioningClient, partition_for
from producers.client import murmur2
from provisioning.settings import Settings
from provisioning.topics import TopicLayout
from schemas import codec
from schemas.examples import example

USER_PARAMS = {"tenantId": "tenant-7f3a91", "email": "jane.doe@acme.example",
               "roleName": "tenant-admin"}
TENANT_PARAMS = {k: v for k, v in example("ProvisionTenantRequest").items()
                 if k not in {"requestId", "requestedBy", "replyTo", "requestedAt"}}
TRACEPARENT = "00-" + "a" * 32 + "-" + "b" * 16 + "-01"


def read_topic(settings: Settings, topic: str, timeout_s: float = 10) -> list:
    """Every committed record of `topic`, up to the end offsets at the time of the call."""
    consumer = Consumer({**settings.kafka_config(), "group.id": f"r-{uuid.uuid4().hex[:8]}",
                         "isolation.level": "read_committed", "enable.auto.commit": False})
    partitions = [TopicPartition(topic, p, 0) for p in range(settings.topic_partitions)]
    try:
        consumer.assign(partitions)
        ends = {tp.partition: consumer.get_watermark_offsets(tp, timeout=10)[1]
                for tp in partitions}
        messages: list = []
        deadline = time.monotonic() + timeout_s
        while sum(ends.values()) > len(messages):
            assert time.monotonic() < deadline, f"read {len(messages)} of {ends}"
            messages += [m for m in consumer.consume(100, timeout=0.5) if m.error() is None]
        return messages
    finally:
        consumer.close()


def event_producer(settings: Settings) -> Producer:
    return Producer({**settings.kafka_config(), "partitioner": "murmur2_random",
                     "enable.idempotence": True})


def publish_event(producer: Producer, topic: str, record_name: str, request_id: str,
                  timestamp_ms: int | None = None, **fields: Any) -> None:
    """One event as the worker writes it: key requestId, codec headers, default partitioner."""
    value = {**example(record_name), "requestId": request_id, **fields}
    extra = {"timestamp": timestamp_ms} if timestamp_ms is not None else {}
    producer.produce(topic, key=request_id.encode(), value=codec.encode(record_name, value),
                     headers=codec.headers_for(record_name), **extra)
    producer.flush(10)


def id_on_partition(partition: int, partitions: int, avoid: str = "") -> str:
    """A fresh requestId that lands on `partition`: a neighbour that await_outcome must skip."""
    while True:
        candidate = str(uuid.uuid4())
        if candidate != avoid and partition_for(candidate, partitions) == partition:
            return candidate


def test_murmur2_matches_java_utils() -> None:
    # Values of org.apache.kafka.common.utils.Utils.murmur2 (kafka-clients, UtilsTest).
    java = {"21": -973932308, "foobar": -790332482, "a-little-bit-long-string": -985981536,
            "a-little-bit-longer-string": -1486304829, "abc": 479470107,
            "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971}
    assert {key: murmur2(key.encode()) for key in java} == java


def test_submit_publishes_decodable_commands_on_the_java_partition(
    settings: Settings, topics: TopicLayout
) -> None:
    given_id = str(uuid.uuid4())
    before_ms = time.time_ns() // 1_000_000
    with ProvisioningClient(settings) as client:
        returned_given = client.submit("user", USER_PARAMS, request_id=given_id.upper(),
                                       requested_by="svc-crm", reply_to="crm.replies",
                                       traceparent=TRACEPARENT)
        generated = [client.submit("tenant", TENANT_PARAMS, requested_by="user-42",
                                   wait_for_delivery=False) for _ in range(12)]
        client.flush()

    assert returned_given == given_id  # the canonical form the worker keys its events with
    assert len(set(generated)) == 12 and all(uuid.UUID(i).version == 4 for i in generated)
    messages = read_topic(settings, topics.commands)
    assert sorted(m.key().decode() for m in messages) == sorted([given_id, *generated])
    for message in messages:
        decoded = codec.decode(message.value())
        assert decoded.value["requestId"] == message.key().decode()
        assert message.partition() == partition_for(message.key(), settings.topic_partitions)
        assert before_ms <= decoded.value["requestedAt"] <= time.time_ns() // 1_000_000
    user = next(codec.decode(m.value()) for m in messages if m.key().decode() == given_id)
    assert user.record_name == "ProvisionUserRequest"
    assert user.value == {**USER_PARAMS, "requestId": given_id, "requestedBy": "svc-crm",
                          "replyTo": "crm.replies", "requestedAt": user.value["requestedAt"],
                          "knownRun": None, "knownSequence": None}
    headers = dict(next(m for m in messages if m.key().decode() == given_id).headers())
    assert headers["event-type"] == b"ProvisionUserRequest"
    assert headers["traceparent"] == TRACEPARENT.encode()


@pytest.mark.parametrize(
    ("workflow_type", "params", "request_id", "reason"),
    [
        ("user", {**USER_PARAMS, "email": "not-an-email"}, None, "email"),
        ("tenant-ish", TENANT_PARAMS, None, "unknown workflow type"),
        ("tenant", {**TENANT_PARAMS, "subscriptionPlan": "PLATINUM"}, None, "subscriptionPlan"),
        ("user", {**USER_PARAMS, "requestId": str(uuid.uuid4())}, None, "requestId"),
        ("user", {**USER_PARAMS, "nickname": "jd"}, None, "nickname"),
        ("user", USER_PARAMS, "order-42", "not a UUID"),
    ],
)
def test_invalid_request_is_refused_before_kafka(
    settings: Settings, topics: TopicLayout, workflow_type: str, params: dict,
    request_id: str | None, reason: str,
) -> None:
    with ProvisioningClient(settings) as client:
        with pytest.raises(InvalidRequest, match=reason):
            client.submit(workflow_type, params, request_id=request_id, requested_by="svc-crm")
        valid_id = client.submit("user", USER_PARAMS, requested_by="svc-crm")

    # Only the valid command reached the topic (reading it proves the reader sees commands).
    assert [m.key().decode() for m in read_topic(settings, topics.commands)] == [valid_id]


def test_a_reply_topic_the_worker_must_not_write_is_refused_before_kafka(
    settings: Settings, topics: TopicLayout
) -> None:
    settings = settings.model_copy(update={"reply_topic_pattern": r"crm\..+"})
    forbidden = {
        "__consumer_offsets": "internal Kafka topic",
        topics.state: "own topics",
        "staging.provisioning.step-replies": "own topics",  # another namespace's
        "billing.invoices": "not an allowed reply topic",  # outside the pattern
    }
    with ProvisioningClient(settings) as client:
        for topic, reason in forbidden.items():
            with pytest.raises(InvalidRequest, match=reason):
                client.submit("user", USER_PARAMS, requested_by="svc-crm", reply_to=topic)
        valid_id = client.submit("user", USER_PARAMS, requested_by="svc-crm",
                                 reply_to="crm.replies")

    assert [m.key().decode() for m in read_topic(settings, topics.commands)] == [valid_id]


def test_await_outcome_returns_completed_and_skips_other_requests(
    settings: Settings, topics: TopicLayout
) -> None:
    producer = event_producer(settings)
    with ProvisioningClient(settings) as client:
        request_id = client.submit("tenant", TENANT_PARAMS, requested_by="user-42")
        neighbour = id_on_partition(partition_for(request_id, settings.topic_partitions),
                                    settings.topic_partitions, avoid=request_id)
        publish_event(producer, topics.events, "ProvisioningSucceeded", neighbour,
                      resourceId="not-ours")
        publish_event(producer, topics.events, "ProvisioningStarted", request_id)
        publish_event(producer, topics.events, "ProvisioningStepCompleted", request_id)
        # The last one arrives while await_outcome is already waiting.
        threading.Timer(0.5, publish_event, (producer, topics.events, "ProvisioningSucceeded",
                                             request_id), {"resourceId": "tenant-42"}).start()

        outcome = client.await_outcome(request_id, timeout_s=10)

    assert outcome.status == "COMPLETED" and outcome.succeeded
    assert outcome.request_id == request_id
    assert outcome.resource_id == "tenant-42"
    assert outcome.reason is None and outcome.failed_step is None
    assert outcome.events_seen == ("ProvisioningStarted", "ProvisioningStepCompleted",
                                   "ProvisioningSucceeded")


def test_await_outcome_returns_failed_and_rejected_with_their_reasons(
    settings: Settings, topics: TopicLayout
) -> None:
    producer = event_producer(settings)
    failed_id, rejected_id = str(uuid.uuid4()), str(uuid.uuid4())
    publish_event(producer, topics.events, "ProvisioningFailedEvent", failed_id,
                  reason="billing provider rejected the payment method",
                  failedStep="setup-billing")
    publish_event(producer, topics.events, "ProvisioningRejected", rejected_id,
                  reason="conflict: requestId already used", code="conflict")

    with ProvisioningClient(settings) as client:
        failed = client.await_outcome(failed_id, timeout_s=10)
        rejected = client.await_outcome(rejected_id, timeout_s=10)

    assert (failed.status, failed.reason, failed.failed_step, failed.resource_id) == (
        "FAILED", "billing provider rejected the payment method", "setup-billing", None)
    assert (rejected.status, rejected.code, rejected.reason) == (
        "REJECTED", "conflict", "conflict: requestId already used")


def test_await_outcome_starts_at_since_ms_so_an_earlier_run_is_not_taken(
    settings: Settings, topics: TopicLayout
) -> None:
    producer = event_producer(settings)
    request_id = str(uuid.uuid4())
    now_ms = time.time_ns() // 1_000_000
    publish_event(producer, topics.events, "ProvisioningFailedEvent", request_id,
                  timestamp_ms=now_ms - 60_000, run=1)
    publish_event(producer, topics.events, "ProvisioningSucceeded", request_id,
                  timestamp_ms=now_ms, run=2, resourceId="tenant-run-2")

    with ProvisioningClient(settings) as client:
        earliest = client.await_outcome(request_id, timeout_s=10)  # unknown here: from the start
        latest = client.await_outcome(request_id, timeout_s=10, since_ms=now_ms - 30_000)

    assert (earliest.status, earliest.run) == ("FAILED", 1)
    assert (latest.status, latest.run, latest.resource_id) == ("COMPLETED", 2, "tenant-run-2")


def test_await_outcome_times_out_when_no_terminal_event_comes(
    settings: Settings, topics: TopicLayout
) -> None:
    producer = event_producer(settings)
    with ProvisioningClient(settings) as client:
        request_id = client.submit("user", USER_PARAMS, requested_by="svc-crm")
        neighbour = id_on_partition(partition_for(request_id, settings.topic_partitions),
                                    settings.topic_partitions, avoid=request_id)
        publish_event(producer, topics.events, "ProvisioningSucceeded", neighbour)
        publish_event(producer, topics.events, "ProvisioningStarted", request_id)

        started = time.monotonic()
        with pytest.raises(OutcomeTimeout) as raised:
            client.await_outcome(request_id, timeout_s=2)

    assert 2 <= time.monotonic() - started < 6
    assert raised.value.request_id == request_id
    assert raised.value.events_seen == ("ProvisioningStarted",)


def test_submit_and_wait_returns_the_outcome(settings: Settings, topics: TopicLayout) -> None:
    producer = event_producer(settings)
    request_id = str(uuid.uuid4())
    threading.Timer(1.0, publish_event, (producer, topics.events, "ProvisioningSucceeded",
                                         request_id), {"resourceId": "user-7"}).start()

    with ProvisioningClient(settings) as client:
        outcome = client.submit_and_wait("user", USER_PARAMS, request_id=request_id,
                                         requested_by="svc-crm", timeout_s=10)

    assert (outcome.status, outcome.resource_id) == ("COMPLETED", "user-7")
