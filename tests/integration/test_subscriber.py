"""EventSubscriber on the real broker: handlers run once per event, offsets commit only after.

The events are written by the test as the worker writes them (key requestId, Java
partitioner); committed offsets are read back from the broker with a side consumer.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from tenacity import wait_fixed

from producers import Event, EventSubscriber, UnknownEventName, partition_for
from producers.subscriber import InvalidWorkflowFilter
from provisioning.settings import Settings
from provisioning.topics import TopicLayout
from schemas import codec
from schemas.examples import example

FAST_RETRY = wait_fixed(1.0)


def event_producer(settings: Settings) -> Producer:
    return Producer({**settings.kafka_config(), "partitioner": "murmur2_random",
                     "enable.idempotence": True})


def publish(producer: Producer, topic: str, record_name: str, request_id: str) -> None:
    value = {**example(record_name), "requestId": request_id}
    producer.produce(topic, key=request_id.encode(), value=codec.encode(record_name, value),
                     headers=codec.headers_for(record_name))


def id_on_partition(partition: int, partitions: int) -> str:
    while True:
        candidate = str(uuid.uuid4())
        if partition_for(candidate, partitions) == partition:
            return candidate


def committed_offsets(settings: Settings, group_id: str, topic: str) -> dict[int, int]:
    """The group's committed offset per partition (negative: nothing committed)."""
    side = Consumer({**settings.kafka_config(), "group.id": group_id,
                     "enable.auto.commit": False})
    try:
        partitions = [TopicPartition(topic, p) for p in range(settings.topic_partitions)]
        return {tp.partition: tp.offset for tp in side.committed(partitions, timeout=10)}
    finally:
        side.close()


def poll_until(subscriber: EventSubscriber, done: Callable[[], bool], timeout_s: float,
               what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        assert time.monotonic() < deadline, f"{what} not reached within {timeout_s} s"
        subscriber.poll_once(0.2)


def assert_only_new_events_arrive(settings: Settings, group_id: str, topic: str,
                                  producer: Producer) -> None:
    """A new member of the group handles a fresh event, and nothing older."""
    seen: list[str] = []
    marker = str(uuid.uuid4())
    with EventSubscriber(settings, group_id, from_beginning=True) as again:
        for name in ("ProvisioningSucceeded", "ProvisioningRequested", "ProvisioningFailedEvent"):
            again.on(name, lambda event: seen.append(event.request_id))
        publish(producer, topic, "ProvisioningSucceeded", marker)
        producer.flush(10)
        poll_until(again, lambda: marker in seen, 10, "the fresh event")
        again.poll_once(0.5)
        assert again.counts.undecodable == 0 and again.counts.skipped == 0
    assert seen == [marker]


def test_each_event_is_handled_once_and_the_group_resumes_after_it(
    settings: Settings, topics: TopicLayout, group_id: str
) -> None:
    producer = event_producer(settings)
    succeeded = [str(uuid.uuid4()) for _ in range(6)]
    for request_id in succeeded:
        publish(producer, topics.events, "ProvisioningRequested", request_id)
        publish(producer, topics.events, "ProvisioningSucceeded", request_id)
    producer.produce(topics.events, key=b"garbage", value=b"not an avro record")
    producer.flush(10)

    handled: list[Event] = []
    with EventSubscriber(settings, group_id, from_beginning=True) as subscriber:
        subscriber.on("ProvisioningSucceeded", handled.append)
        assert subscriber.run(max_events=6) == 6
        poll_until(subscriber, lambda: subscriber.counts.skipped == 6
                   and subscriber.counts.undecodable == 1, 5, "the other records")
        subscriber.poll_once(0.5)  # nothing is delivered twice

    assert sorted(e.request_id for e in handled) == sorted(succeeded)
    for event in handled:
        assert event.record_name == "ProvisioningSucceeded"
        assert event.value["requestId"] == event.request_id
        assert event.partition == partition_for(event.request_id, settings.topic_partitions)
        assert event.headers["event-type"] == b"ProvisioningSucceeded"
    assert subscriber.counts.handler_failures == 0
    assert_only_new_events_arrive(settings, group_id, topics.events, producer)


def test_a_failing_handler_is_retried_and_its_offset_is_committed_only_after_success(
    settings: Settings, topics: TopicLayout, group_id: str
) -> None:
    producer = event_producer(settings)
    first, failing, after = (id_on_partition(0, settings.topic_partitions) for _ in range(3))
    elsewhere = id_on_partition(1, settings.topic_partitions)
    for request_id in (first, failing, after, elsewhere):
        publish(producer, topics.events, "ProvisioningSucceeded", request_id)
    producer.flush(10)

    calls: list[str] = []
    failing_call_times: list[float] = []

    def handler(event: Event) -> None:
        calls.append(event.request_id)
        if event.request_id == failing:
            failing_call_times.append(time.monotonic())
        if event.request_id == failing and calls.count(failing) == 1:
            raise RuntimeError("downstream briefly unavailable")

    with EventSubscriber(settings, group_id, from_beginning=True,
                         retry_wait=FAST_RETRY) as subscriber:
        subscriber.on("ProvisioningSucceeded", handler)
        poll_until(subscriber, lambda: subscriber.counts.handler_failures == 1, 10,
                   "the first failure")
        # While partition 0 waits for its retry: committed up to the failed event, not past it.
        deadline = time.monotonic() + 0.8
        while committed_offsets(settings, group_id, topics.events)[0] < 1:
            assert time.monotonic() < deadline, "the event before the failure was not committed"
        assert committed_offsets(settings, group_id, topics.events)[0] == 1
        assert calls.count(after) == 0  # the partition waits; it does not skip ahead

        poll_until(subscriber, lambda: after in calls, 10, "the retry")
        subscriber.poll_once(0.5)

    partition_0 = [c for c in calls if c != elsewhere]
    assert partition_0 == [first, failing, failing, after]
    assert calls.count(elsewhere) == 1
    assert failing_call_times[1] - failing_call_times[0] >= 0.9  # after the backoff, not at once
    assert subscriber.counts.handler_failures == 1 and subscriber.counts.handled == 4
    assert committed_offsets(settings, group_id, topics.events) == {0: 3, 1: 1, 2: -1001}
    assert_only_new_events_arrive(settings, group_id, topics.events, producer)


def test_on_refuses_names_that_are_not_events(settings: Settings) -> None:
    with EventSubscriber(settings, f"test-{uuid.uuid4().hex[:12]}") as subscriber:
        with pytest.raises(UnknownEventName, match="no event named 'ProvisioningSucceded'"):
            subscriber.on("ProvisioningSucceded", print)
        with pytest.raises(UnknownEventName, match="ProvisioningCompleted is not published"):
            subscriber.on("ProvisioningCompleted", print)  # a reply, never on the events topic
        assert subscriber.on("ProvisioningRejected", print) is print


def test_a_workflow_filter_passes_only_that_workflows_events_and_decodes_no_other(
    settings: Settings, topics: TopicLayout, group_id: str
) -> None:
    producer = event_producer(settings)

    def publish_event(record_name: str, request_id: str, workflow: str, *,
                      header: bool = True, value: bytes | None = None) -> None:
        datum = {**example(record_name), "requestId": request_id, "workflowType": workflow}
        # As the worker writes them; `header=False`: as workers wrote them before the header.
        headers = codec.headers_for(record_name, workflow_type=workflow if header else None)
        producer.produce(topics.events, key=request_id.encode(), headers=headers,
                         value=value if value is not None else codec.encode(record_name, datum))

    tenant, service, old_tenant, old_service, unreadable = (str(uuid.uuid4()) for _ in range(5))
    publish_event("ProvisioningRequested", tenant, "tenant")
    publish_event("ProvisioningSucceeded", tenant, "tenant")
    publish_event("ProvisioningRequested", service, "service")
    publish_event("ProvisioningSucceeded", service, "service")
    # Bytes no decoder reads, under the other workflow's header: skipped without decoding.
    publish_event("ProvisioningSucceeded", service, "service", value=b"not an avro record")
    publish_event("ProvisioningSucceeded", old_tenant, "tenant", header=False)
    publish_event("ProvisioningSucceeded", old_service, "service", header=False)
    # The rejection of a command whose workflow the worker could not read.
    publish_event("ProvisioningRejected", unreadable, "unknown")
    # Undecodable bytes under the subscribed workflow's header: decoded, so counted.
    publish_event("ProvisioningSucceeded", tenant, "tenant", value=b"not an avro record")
    producer.flush(10)

    handled: list[Event] = []
    with EventSubscriber(settings, group_id, from_beginning=True,
                         workflow_types="tenant") as subscriber:
        for name in ("ProvisioningRequested", "ProvisioningSucceeded", "ProvisioningRejected"):
            subscriber.on(name, handled.append)
        poll_until(subscriber, lambda: subscriber.counts.handled == 3
                   and subscriber.counts.filtered == 5 and subscriber.counts.undecodable == 1,
                   10, "every record")
        subscriber.poll_once(0.5)

    assert sorted((e.request_id, e.record_name) for e in handled) == sorted(
        [(tenant, "ProvisioningRequested"), (tenant, "ProvisioningSucceeded"),
         (old_tenant, "ProvisioningSucceeded")])
    assert {e.value["workflowType"] for e in handled} == {"tenant"}
    assert subscriber.counts.skipped == 0
    assert subscriber.counts.handled + subscriber.counts.filtered == 8


def test_a_workflow_filter_must_name_a_workflow(settings: Settings) -> None:
    for nothing in ([], {""}, [None]):
        with pytest.raises(InvalidWorkflowFilter, match="at least one workflow"):
            EventSubscriber(settings, f"test-{uuid.uuid4().hex[:12]}", workflow_types=nothing)
