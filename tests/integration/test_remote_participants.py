"""Steps done by other services: over Kafka by a separate participant process, and over HTTP
by a real server on loopback, routed by a routing file the worker reads at start."""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest
import sqlalchemy as sa
from confluent_kafka.admin import AdminClient
from harness import (
    ROOT,
    JsonParticipant,
    ServiceProcess,
    TopicReader,
    WorkerProcess,
    process_env,
    serve_http,
)
from test_worker import _tenant_command

from consumer.participants.builtin.registry import add_entity
from consumer.routing import load_routing
from producers.commands import CommandPublisher
from provisioning.settings import Settings
from provisioning.topics import TopicLayout, create_topics


@dataclass
class Stack:
    settings: Settings
    layout: TopicLayout
    events: TopicReader
    worker: WorkerProcess
    engine: sa.Engine

    def submit(self, record: str, command: dict) -> str:
        with CommandPublisher(self.settings) as publisher:
            publisher.publish(record, command)
        return command["requestId"]

    def names(self, request_id: str) -> list[str]:
        return [r.record_name for r in self.events.by_key[request_id]]

    def events_of(self, request_id: str, name: str) -> list[dict]:
        return [r.value for r in self.events.by_key[request_id] if r.record_name == name]


def start_stack(settings: Settings, kafka_admin: AdminClient, engine: sa.Engine,
                tmp_path: Path, group_id: str, routing: str) -> Stack:
    routing_file = tmp_path / "routing.toml"
    routing_file.write_text(routing)
    layout = TopicLayout(settings.topic_prefix)
    participants = sorted(load_routing(routing_file).kafka_participants())
    create_topics(kafka_admin, layout.specs(settings.topic_partitions, participants))
    worker = WorkerProcess(settings, tmp_path, group_id,
                           extra_env={"PROVISIONING_ROUTING_FILE": str(routing_file)}).start()
    return Stack(settings, layout, TopicReader(settings, layout.events), worker, engine)


def stop_stack(stack: Stack) -> None:
    stack.events.close()
    assert stack.worker.stop() == 0, stack.worker.log_text()[-3000:]


def participant_process(settings: Settings, tmp_path: Path, *args: str) -> ServiceProcess:
    process = ServiceProcess(settings, tmp_path, ("participant",))
    log = process.log_file.open("ab")
    import subprocess

    process.process = subprocess.Popen(
        [sys.executable, str(ROOT / "tests/integration/participant_service.py"), *args],
        env=process_env(settings), stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    return process


def tenant(engine: sa.Engine, prefix: str) -> dict:
    entity = f"{prefix}{uuid.uuid4().hex[:10]}"
    add_entity(engine, entity, entity)
    return _tenant_command(entity)


def tenants_of(engine: sa.Engine, entity_id: str) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.text(
            "SELECT count(*) FROM tenants t JOIN entities e ON e.id = t.entity_id "
            "WHERE e.external_id = :e"), {"e": entity_id}).scalar_one()


# --- over Kafka ---------------------------------------------------------------------------------

KAFKA_ROUTING = """
[steps."tenant.create-tenant"]
adapter = "kafka:entity-management"
attempt_timeout_s = 30
"""


@pytest.fixture
def kafka_stack(settings: Settings, kafka_admin: AdminClient, migrated: sa.Engine,
                tmp_path: Path, group_id: str) -> Iterator[Stack]:
    stack = start_stack(settings, kafka_admin, migrated, tmp_path, group_id, KAFKA_ROUTING)
    yield stack
    stop_stack(stack)


def test_a_slow_kafka_participant_holds_up_no_other_saga(
    kafka_stack: Stack, tmp_path: Path
) -> None:
    stack = kafka_stack
    participant = participant_process(stack.settings, tmp_path, "--delay-s", "6")
    try:
        fast = tenant(stack.engine, "fast-")
        stack.submit("ProvisionTenantRequest", fast)
        stack.events.wait_for(lambda r: r.terminal(fast["requestId"]), 60, "the fast tenant")
        done = stack.events.terminal(fast["requestId"])[0]
        assert done.record_name == "ProvisioningSucceeded", stack.names(fast["requestId"])
        tenant_id = done.value["resourceId"]

        slow = tenant(stack.engine, "slow-")
        stack.submit("ProvisionTenantRequest", slow)
        users = [{"requestId": str(uuid.uuid4()), "tenantId": tenant_id,
                  "email": f"{uuid.uuid4().hex[:8]}@acme.example", "roleName": "member",
                  "requestedBy": fast["requestedBy"], "replyTo": None,
                  "requestedAt": int(time.time() * 1000)} for _ in range(10)]
        with CommandPublisher(stack.settings) as publisher:  # one producer: 10 take no time
            for user in users:
                publisher.publish("ProvisionUserRequest", user)
        ids = [u["requestId"] for u in users]
        stack.events.wait_for(lambda r: all(r.terminal(i) for i in ids), 60, "the users")
        assert not stack.events.terminal(slow["requestId"]), "the slow tenant finished first"
        stack.events.wait_for(lambda r: r.terminal(slow["requestId"]), 60, "the slow tenant")
    finally:
        participant.stop()

    assert all(stack.events.terminal(i)[0].record_name == "ProvisioningSucceeded" for i in ids)
    slow_id = slow["requestId"]
    assert [e.record_name for e in stack.events.terminal(slow_id)] == ["ProvisioningSucceeded"]
    started = stack.events_of(slow_id, "ProvisioningStepStarted")
    assert started[1]["step"] == "create-tenant" and started[1]["participant"] == (
        "entity-management")
    assert tenants_of(stack.engine, slow["entityId"]) == 1


def test_a_participant_killed_mid_step_and_restarted_completes_the_saga_once(
    kafka_stack: Stack, tmp_path: Path
) -> None:
    stack = kafka_stack
    first = participant_process(stack.settings, tmp_path, "--delay-s", "4")
    slow = tenant(stack.engine, "slow-")
    stack.submit("ProvisionTenantRequest", slow)
    slow_id = slow["requestId"]
    stack.events.wait_for(lambda r: "ProvisioningStepStarted" in [
        e.record_name for e in r.by_key[slow_id]][1:], 30, "create-tenant requested")
    time.sleep(1.5)  # the participant is inside its slow step now
    first.kill()
    second = participant_process(stack.settings, tmp_path, "--delay-s", "1")
    try:
        stack.events.wait_for(lambda r: r.terminal(slow_id), 60, "the saga's end")
        time.sleep(2)
        stack.events.poll(1)
    finally:
        second.stop()
    assert [e.record_name for e in stack.events.terminal(slow_id)] == ["ProvisioningSucceeded"]
    completed = [e["step"] for e in stack.events_of(slow_id, "ProvisioningStepCompleted")]
    assert completed.count("create-tenant") == 1
    assert tenants_of(stack.engine, slow["entityId"]) == 1


def test_a_participant_that_never_answers_times_out_retries_and_compensates(
    settings: Settings, kafka_admin: AdminClient, migrated: sa.Engine, tmp_path: Path,
    group_id: str,
) -> None:
    stack = start_stack(settings, kafka_admin, migrated, tmp_path, group_id, """
[steps."tenant.activate-services"]
adapter = "kafka:subscriptions-blackhole"
attempt_timeout_s = 1
deadline_s = 30
retry = { max_retries = 2, initial_backoff_ms = 100 }
""")
    try:
        command = tenant(migrated, "silent-")
        request_id = stack.submit("ProvisionTenantRequest", command)
        stack.events.wait_for(lambda r: r.terminal(request_id), 60, "the saga's end")
    finally:
        stop_stack(stack)

    attempts = [e["attempt"] for e in stack.events_of(request_id, "ProvisioningStepStarted")
                if e["step"] == "activate-services"]
    assert attempts == [1, 2, 3]
    failures = [e for e in stack.events_of(request_id, "ProvisioningStepFailed")]
    # Timeouts are transient failures; the third has no next attempt: the step failed for good.
    assert [f["transient"] for f in failures] == [True, True, True]
    assert [f["nextRetryAt"] is not None for f in failures] == [True, True, False]
    assert all("no answer within 1000 ms" in f["reason"] for f in failures)
    compensated = [e["step"] for e in stack.events_of(request_id, "ProvisioningStepCompensated")]
    assert compensated == ["setup-billing", "create-tenant"]
    (failed,) = stack.events_of(request_id, "ProvisioningFailedEvent")
    assert failed["failedStep"] == "activate-services"
    assert tenants_of(migrated, command["entityId"]) == 0  # the compensation really deleted it


# --- over HTTP ----------------------------------------------------------------------------------


@dataclass
class IdentityService:
    """A real HTTP participant for create-admin-role: answers from a script per entity."""

    script: dict[str, list[tuple[int, dict]]] = field(default_factory=dict)
    received: list[tuple[str, dict]] = field(default_factory=list)  # (Idempotency-Key, body)
    server: ThreadingHTTPServer | None = None

    def start(self) -> str:
        service = self

        class Handler(JsonParticipant):
            def do_POST(self) -> None:  # noqa: N802 - the http.server API
                body = self.body()
                service.received.append((self.headers["Idempotency-Key"], body))
                planned = service.script.get(body["params"].get("entityId", ""), [])
                self.answer(*planned.pop(0) if planned else (
                    200, {"output": {"adminUserId": f"admin-{body['requestId'][:8]}"}}))

        self.server, url = serve_http(Handler)
        return f"{url}/steps"

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


def test_an_http_participant_is_retried_after_a_503_and_its_422_reason_recorded(
    settings: Settings, kafka_admin: AdminClient, migrated: sa.Engine, tmp_path: Path,
    group_id: str,
) -> None:
    identity = IdentityService()
    url = identity.start()
    stack = start_stack(settings, kafka_admin, migrated, tmp_path, group_id, f"""
[steps."tenant.create-admin-role"]
adapter = "{url}"
retry = {{ max_retries = 3, initial_backoff_ms = 100 }}
""")
    try:
        flaky, refused = tenant(migrated, "flaky-"), tenant(migrated, "refused-")
        identity.script[flaky["entityId"]] = [(503, {"detail": "identity is restarting"})]
        identity.script[refused["entityId"]] = [(422, {"detail": "role quota reached"})]
        ids = [stack.submit("ProvisionTenantRequest", c) for c in (flaky, refused)]
        stack.events.wait_for(lambda r: all(r.terminal(i) for i in ids), 60, "both sagas")
    finally:
        stop_stack(stack)
        identity.stop()

    flaky_id, refused_id = ids
    (retry,) = [e for e in stack.events_of(flaky_id, "ProvisioningStepFailed")]
    assert retry["transient"] and "HTTP 503" in retry["reason"]
    assert "identity is restarting" in retry["reason"]
    assert stack.names(flaky_id)[-1] == "ProvisioningSucceeded"
    output = [e["output"] for e in stack.events_of(flaky_id, "ProvisioningStepCompleted")
              if e["step"] == "create-admin-role"]
    assert output == [{"adminUserId": f"admin-{flaky_id[:8]}"}]
    keys = {key for key, body in identity.received if body["requestId"] == flaky_id}
    assert keys == {f"{flaky_id}:1:create-admin-role"}  # the same key on the retry

    (refusal,) = stack.events_of(refused_id, "ProvisioningStepFailed")
    assert not refusal["transient"] and "HTTP 422" in refusal["reason"]
    assert "role quota reached" in refusal["reason"]
    compensated = [e["step"] for e in stack.events_of(refused_id, "ProvisioningStepCompensated")]
    assert compensated == ["activate-services", "setup-billing", "create-tenant"]
    (failed,) = stack.events_of(refused_id, "ProvisioningFailedEvent")
    assert failed["failedStep"] == "create-admin-role" and "role quota reached" in failed["reason"]
    assert tenants_of(migrated, refused["entityId"]) == 0
