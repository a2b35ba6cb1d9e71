"""StepParticipant on the real broker: requests in, one reply per request out, commits after.

The test plays the worker: it writes StepRequests as the worker does (key requestId, Java
partitioner) on the participant's step-requests topic and reads the StepReplies back from
step-replies read_committed. The participant runs in-process, batch by batch.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from harness import Record, TopicReader

from producers import PermanentStepFailure, StepParticipant, StepRequest, partition_for
from provisioning.settings import Settings
from provisioning.topics import TopicLayout, create_topics
from schemas import codec

NAME = "tester"
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture
def layout(kafka_admin: AdminClient, settings: Settings) -> TopicLayout:
    layout = TopicLayout(settings.topic_prefix)
    create_topics(kafka_admin, layout.specs(settings.topic_partitions, participants=[NAME]))
    return layout


@pytest.fixture
def participant(settings: Settings, layout: TopicLayout, group_id: str
                ) -> Iterator[StepParticipant]:
    participant = StepParticipant(settings, NAME, group_id=group_id)
    yield participant
    participant.close()


@pytest.fixture
def replies(settings: Settings, layout: TopicLayout) -> Iterator[TopicReader]:
    reader = TopicReader(settings, layout.step_replies)
    yield reader
    reader.close()


class Worker:
    """Publishes StepRequests the way the worker does."""

    def __init__(self, settings: Settings, layout: TopicLayout) -> None:
        self.layout = layout
        self.producer = Producer({**settings.kafka_config(), "partitioner": "murmur2_random",
                                  "enable.idempotence": True})

    def request(self, request_id: str, step: str = "create-tenant", *, attempt: int = 1,
                action: str = "EXECUTE", run: int = 1, deadline: int | None = None,
                params: dict[str, str] | None = None, reply_topic: str | None = None) -> None:
        value = {
            "requestId": request_id, "run": run, "workflowType": "tenant", "tenantId": None,
            "step": step, "action": action, "attempt": attempt,
            "idempotencyKey": f"{request_id}:{run}:{step}",
            "params": params if params is not None else {"entityId": "ent-1"},
            "deadline": deadline, "replyTopic": reply_topic or self.layout.step_replies,
            "occurredAt": now_ms(),
        }
        self.producer.produce(self.layout.step_requests(NAME), key=request_id.encode(),
                              value=codec.encode("StepRequest", value),
                              headers=codec.headers_for("StepRequest", TRACEPARENT))
        self.producer.flush(10)


@pytest.fixture
def worker(settings: Settings, layout: TopicLayout) -> Worker:
    return Worker(settings, layout)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def new_id() -> str:
    return str(uuid.uuid4())


def poll_until(participant: StepParticipant, done: Callable[[], Any], timeout_s: float,
               what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        assert time.monotonic() < deadline, f"{what} not reached within {timeout_s} s"
        participant.poll_once(0.2)


def replies_of(reader: TopicReader, request_id: str, count: int,
               timeout_s: float = 10) -> list[Record]:
    reader.wait_for(lambda r: len(r.by_key.get(request_id, [])) >= count, timeout_s,
                    f"{count} replies to {request_id}")
    return reader.by_key[request_id]


def committed_offsets(settings: Settings, group_id: str, topic: str) -> dict[int, int]:
    """The group's committed offset per partition (negative: nothing committed)."""
    side = Consumer({**settings.kafka_config(), "group.id": group_id,
                     "enable.auto.commit": False})
    try:
        partitions = [TopicPartition(topic, p) for p in range(settings.topic_partitions)]
        return {tp.partition: tp.offset for tp in side.committed(partitions, timeout=10)}
    finally:
        side.close()


def test_a_handled_step_replies_its_output_on_the_partition_of_the_request(
    settings: Settings, worker: Worker, participant: StepParticipant, replies: TopicReader
) -> None:
    seen: list[StepRequest] = []

    @participant.step("create-tenant")
    def create_tenant(request: StepRequest) -> dict[str, Any]:
        seen.append(request)
        return {"tenantId": f"t-{request.request_id[:8]}", "seats": 3}

    ids = [new_id() for _ in range(6)]
    for request_id in ids:
        worker.request(request_id, params={"entityId": "ent-1", "name": "Acme"})
    poll_until(participant, lambda: participant.counts.handled == 6, 15, "six replies")

    first = seen[0]
    assert first.run == 1 and first.workflow_type == "tenant" and first.tenant_id is None
    assert first.action == "EXECUTE" and first.attempt == 1 and first.deadline_ms is None
    assert dict(first.params) == {"entityId": "ent-1", "name": "Acme"}
    assert first.idempotency_key == f"{first.request_id}:1:create-tenant"
    assert first.reply_topic == worker.layout.step_replies and first.occurred_at > 0
    for request_id in ids:
        [reply] = replies_of(replies, request_id, 1)
        assert reply.record_name == "StepReply"
        assert reply.partition == partition_for(request_id, settings.topic_partitions)
        assert reply.headers["event-type"] == b"StepReply"
        assert reply.headers["traceparent"] == TRACEPARENT.encode()
        assert reply.value["outcome"] == "SUCCEEDED"
        assert reply.value["output"] == {"tenantId": f"t-{request_id[:8]}", "seats": "3"}
        assert reply.value["reason"] is None
        assert (reply.value["requestId"], reply.value["run"], reply.value["step"],
                reply.value["action"], reply.value["attempt"], reply.value["idempotencyKey"]
                ) == (request_id, 1, "create-tenant", "EXECUTE", 1,
                      f"{request_id}:1:create-tenant")
    assert sorted(r.request_id for r in seen) == sorted(ids)
    assert participant.counts.duplicates == 0 and participant.counts.failures == 0


def test_a_permanent_failure_is_replied_with_its_reason_and_repeated_from_cache(
    worker: Worker, participant: StepParticipant, replies: TopicReader
) -> None:
    calls: list[int] = []

    @participant.step("create-tenant")
    def refuse(request: StepRequest) -> None:
        calls.append(request.attempt)
        raise PermanentStepFailure("entity ent-1 is not eligible")

    request_id = new_id()
    worker.request(request_id, attempt=1)
    worker.request(request_id, attempt=2)
    poll_until(participant, lambda: participant.counts.handled == 2, 15, "two replies")

    first, second = replies_of(replies, request_id, 2)
    for reply, attempt in ((first, 1), (second, 2)):
        assert reply.value["outcome"] == "PERMANENT_FAILURE"
        assert reply.value["reason"] == "entity ent-1 is not eligible"
        assert reply.value["output"] == {}
        assert reply.value["attempt"] == attempt
    assert calls == [1]
    assert participant.counts.failures == 1 and participant.counts.duplicates == 1


def test_any_other_exception_is_a_transient_failure_and_a_retry_runs_the_handler_again(
    worker: Worker, participant: StepParticipant, replies: TopicReader
) -> None:
    calls: list[int] = []

    @participant.step("create-tenant")
    def flaky(request: StepRequest) -> dict[str, str]:
        calls.append(request.attempt)
        if len(calls) < 3:
            raise ConnectionError("registry unavailable " + "x" * 2000)
        return {"tenantId": "t-1"}

    request_id = new_id()
    worker.request(request_id, attempt=1)
    poll_until(participant, lambda: participant.counts.handled == 1, 15, "the first reply")
    worker.request(request_id, attempt=1)  # the same attempt delivered again
    worker.request(request_id, attempt=2)  # the worker's retry
    poll_until(participant, lambda: participant.counts.handled == 3, 15, "three replies")

    first, again, retry = replies_of(replies, request_id, 3)
    for reply in (first, again):
        assert reply.value["outcome"] == "TRANSIENT_FAILURE"
        assert reply.value["reason"].startswith("ConnectionError: registry unavailable xxx")
        assert len(reply.value["reason"]) <= 1000
        assert reply.value["attempt"] == 1
    assert retry.value["outcome"] == "SUCCEEDED" and retry.value["attempt"] == 2
    assert retry.value["output"] == {"tenantId": "t-1"}
    assert calls == [1, 1, 2]
    assert participant.counts.failures == 2 and participant.counts.duplicates == 0


def test_a_repeated_request_runs_the_handler_once_and_every_attempt_gets_the_result(
    worker: Worker, participant: StepParticipant, replies: TopicReader
) -> None:
    calls: list[str] = []

    @participant.step("create-tenant")
    def create_tenant(request: StepRequest) -> dict[str, str]:
        calls.append(request.request_id)
        return {"tenantId": f"t-{len(calls)}"}

    request_id = new_id()
    worker.request(request_id, attempt=1)
    worker.request(request_id, attempt=1)
    poll_until(participant, lambda: participant.counts.handled == 2, 15, "two replies")
    worker.request(request_id, attempt=2)  # the worker timed out on attempt 1 and retried
    poll_until(participant, lambda: participant.counts.handled == 3, 15, "the third reply")

    answers = replies_of(replies, request_id, 3)
    assert [r.value["attempt"] for r in answers] == [1, 1, 2]
    assert all(r.value["outcome"] == "SUCCEEDED" for r in answers)
    assert all(r.value["output"] == {"tenantId": "t-1"} for r in answers)
    assert calls == [request_id]
    assert participant.counts.duplicates == 2


def test_a_compensation_runs_its_own_handler(
    worker: Worker, participant: StepParticipant, replies: TopicReader
) -> None:
    calls: list[tuple[str, str, str]] = []

    @participant.step("create-tenant")
    def create_tenant(request: StepRequest) -> dict[str, str]:
        calls.append(("create", request.action, request.idempotency_key))
        return {"tenantId": "t-1"}

    @participant.compensation("create-tenant")
    def delete_tenant(request: StepRequest) -> None:
        calls.append(("delete", request.action, request.idempotency_key))

    request_id = new_id()
    key = f"{request_id}:1:create-tenant"
    worker.request(request_id)
    worker.request(request_id, action="COMPENSATE")
    worker.request(request_id, action="COMPENSATE", attempt=2)
    worker.request(request_id, "setup-billing", action="COMPENSATE")  # no compensation
    poll_until(participant, lambda: participant.counts.handled == 4, 15, "four replies")

    execute, compensate, compensate_again, unknown = replies_of(replies, request_id, 4)
    assert execute.value["action"] == "EXECUTE" and execute.value["output"] == {"tenantId": "t-1"}
    for reply, attempt in ((compensate, 1), (compensate_again, 2)):
        assert reply.value["action"] == "COMPENSATE" and reply.value["attempt"] == attempt
        assert reply.value["outcome"] == "SUCCEEDED" and reply.value["output"] == {}
    assert unknown.value["outcome"] == "PERMANENT_FAILURE"
    assert unknown.value["reason"] == (
        f"participant {NAME} has no handler for COMPENSATE of step setup-billing")
    assert calls == [("create", "EXECUTE", key), ("delete", "COMPENSATE", key)]


def test_a_step_without_a_handler_fails_permanently(
    worker: Worker, participant: StepParticipant, replies: TopicReader
) -> None:
    @participant.step("create-tenant")
    def create_tenant(request: StepRequest) -> None:
        raise AssertionError("not this step")

    request_id = new_id()
    worker.request(request_id, "create-admin-role")
    poll_until(participant, lambda: participant.counts.handled == 1, 15, "the reply")

    [reply] = replies_of(replies, request_id, 1)
    assert reply.value["outcome"] == "PERMANENT_FAILURE"
    assert reply.value["reason"] == (
        f"participant {NAME} has no handler for EXECUTE of step create-admin-role")
    assert reply.value["step"] == "create-admin-role"


def test_a_request_past_its_deadline_is_not_run_nor_answered(
    worker: Worker, participant: StepParticipant, replies: TopicReader
) -> None:
    calls: list[str] = []

    @participant.step("create-tenant")
    def create_tenant(request: StepRequest) -> None:
        calls.append(request.request_id)

    expired, current = new_id(), new_id()
    worker.request(expired, deadline=now_ms() - 1_000)
    worker.request(current, deadline=now_ms() + 60_000)
    poll_until(participant, lambda: participant.counts.expired == 1
               and participant.counts.handled == 1, 15, "both requests")

    replies_of(replies, current, 1)
    replies.poll(0.5)
    assert expired not in replies.by_key
    assert calls == [current]


def test_offsets_are_committed_after_the_replies_so_the_group_resumes_after_them(
    settings: Settings, worker: Worker, layout: TopicLayout, group_id: str,
    replies: TopicReader
) -> None:
    calls: list[str] = []
    topic = layout.step_requests(NAME)

    def register(participant: StepParticipant) -> None:
        participant.step("create-tenant")(lambda request: calls.append(request.request_id))

    ids = [new_id() for _ in range(5)]
    for request_id in ids:
        worker.request(request_id)
    worker.producer.produce(topic, key=b"garbage", value=b"not an avro record")
    worker.producer.flush(10)
    first = StepParticipant(settings, NAME, group_id=group_id)
    register(first)
    poll_until(first, lambda: first.counts.handled == 5 and first.counts.undecodable == 1,
               15, "five replies and the garbage")
    for request_id in ids:
        replies_of(replies, request_id, 1)
    first.close()
    written = {p: 0 for p in range(settings.topic_partitions)}
    for key in [*ids, "garbage"]:
        written[partition_for(key, settings.topic_partitions)] += 1
    committed = committed_offsets(settings, group_id, topic)
    assert {p: max(o, 0) for p, o in committed.items()} == written

    marker = new_id()
    worker.request(marker)
    with StepParticipant(settings, NAME, group_id=group_id) as second:
        register(second)
        poll_until(second, lambda: second.counts.handled == 1, 15, "the fresh request")
        second.poll_once(0.5)
        assert second.counts.handled == 1 and second.counts.undecodable == 0
    assert calls == [*calls[:5], marker] and sorted(calls[:5]) == sorted(ids)


def test_nothing_is_committed_while_a_reply_cannot_be_delivered(
    settings: Settings, worker: Worker, layout: TopicLayout, group_id: str
) -> None:
    calls: list[str] = []
    topic = layout.step_requests(NAME)
    request_id = new_id()
    partition = partition_for(request_id, settings.topic_partitions)
    worker.request(request_id, reply_topic="not a valid topic!")

    with StepParticipant(settings, NAME, group_id=group_id) as participant:
        participant.step("create-tenant")(lambda request: calls.append(request.request_id))
        # Answered, not delivered, rewound, read again and answered from the cache.
        poll_until(participant, lambda: participant.counts.handled >= 2, 15,
                   "the request read again")
        assert committed_offsets(settings, group_id, topic)[partition] < 1
    assert calls == [request_id]
    assert participant.counts.duplicates >= 1

    with StepParticipant(settings, NAME, group_id=group_id) as again:
        again.step("create-tenant")(lambda request: calls.append(request.request_id))
        poll_until(again, lambda: again.counts.handled >= 1, 15, "the redelivery")
    assert calls == [request_id, request_id]  # a new process has no cache: at least once
