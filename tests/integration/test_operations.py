"""What operators rely on, on a real worker: metrics over HTTP, JSON logs per request, the
traceparent from command to events, and cancel and resume applied and audited."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from confluent_kafka.admin import AdminClient
from harness import TopicReader, WorkerProcess, free_port, undo_answered, wait_until
from prometheus_client.parser import text_string_to_metric_families
from test_worker import _tenant_command

from consumer.participants.builtin.registry import add_entity
from producers.commands import CommandPublisher
from provisioning.settings import Settings
from provisioning.topics import TopicLayout, create_topics

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
# Tenant sagas wait at activate-services on a participant that never answers (60 s per
# attempt): in flight long enough for an operator to act.
ROUTING = """
[steps."tenant.activate-services"]
adapter = "kafka:subscriptions-silent"
attempt_timeout_s = 60
deadline_s = 600
"""


@pytest.fixture
def observed(settings: Settings, topics: TopicLayout, migrated: sa.Engine, tmp_path: Path,
             group_id: str) -> Iterator[tuple[WorkerProcess, TopicReader, str]]:
    port = free_port()
    worker = WorkerProcess(settings, tmp_path, group_id,
                           extra_args=("--metrics-port", str(port))).start()
    events = TopicReader(settings, topics.events)
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: _get(url, "/readyz") == 200, 30, "the worker ready")
    yield worker, events, url
    events.close()
    assert worker.stop() == 0, worker.log_text()[-3000:]


def _get(url: str, path: str) -> int | None:
    try:
        return httpx.get(url + path, timeout=2).status_code
    except httpx.TransportError:
        return None


def samples(url: str) -> list[tuple[str, dict[str, str], float]]:
    text = httpx.get(url + "/metrics", timeout=5).text
    return [(s.name, s.labels, s.value) for family in text_string_to_metric_families(text)
            for s in family.samples]


def value(all_samples: list, name: str, **labels: str) -> float:
    return sum(v for n, lab, v in all_samples
               if n == name and all(lab.get(k) == w for k, w in labels.items()))


def test_metrics_logs_and_traceparent_after_a_batch_of_sagas(
    settings: Settings, observed: tuple[WorkerProcess, TopicReader, str], migrated: sa.Engine,
) -> None:
    worker, events, url = observed
    run = uuid.uuid4().hex[:8]
    commands = []
    for i in range(5):
        entity = f"ops-{run}-{i}"
        if i != 4:  # the fifth entity is unknown: validate-entity fails it
            add_entity(migrated, entity, entity)
        commands.append(_tenant_command(entity))
    with CommandPublisher(settings) as publisher:
        for command in commands:
            publisher.publish("ProvisionTenantRequest", command, traceparent=TRACEPARENT)
    ids = [c["requestId"] for c in commands]
    events.wait_for(lambda r: all(r.terminal(i) for i in ids), 60, "the batch")

    scraped = samples(url)
    assert value(scraped, "provisioning_requests_total", workflow_type="tenant") == 5
    assert value(scraped, "provisioning_duration_seconds_count", workflow_type="tenant",
                 status="success") == 4
    # An unknown entity is a business rule's "no" at a validation step: refused, not failed.
    assert value(scraped, "provisioning_duration_seconds_count", workflow_type="tenant",
                 status="refused") == 1
    assert value(scraped, "provisioning_duration_seconds_count", workflow_type="tenant",
                 status="failed") == 0
    assert value(scraped, "provisioning_outcomes_total", workflow_type="tenant",
                 outcome="refused") == 1
    assert value(scraped, "provisioning_failures_total", workflow_type="tenant",
                 failed_step="validate-entity", code="refused") == 1
    assert value(scraped, "provisioning_step_duration_seconds_count", workflow_type="tenant",
                 step="create-tenant", status="success") == 4
    assert value(scraped, "provisioning_active_workflows", workflow_type="tenant") == 0
    assert value(scraped, "provisioning_transaction_commit_seconds_count") > 0
    assert not any("tenant_id" in labels or "request_id" in labels for _, labels, _ in scraped)
    assert _get(url, "/healthz") == 200

    # Every event of every request carries the command's traceparent.
    for request_id in ids:
        headers = [dict(r.headers).get("traceparent") for r in events.by_key[request_id]]
        assert headers and set(headers) == {TRACEPARENT.encode()}, request_id

    # The worker's log: JSON lines; one request's lines carry its id from start to end.
    assert worker.stop() == 0
    lines = [json.loads(line) for line in worker.log_text().splitlines() if line.strip()]
    mine = [line for line in lines if line.get("request_id") == ids[0]]
    messages = [line["message"] for line in mine]
    assert messages[0] == "provisioning started" and messages[-1] == "provisioning succeeded"
    assert messages.count("step completed") == 5
    completed = [line for line in mine if line["message"] == "step completed"]
    assert all(line["workflow_type"] == "tenant" and line["attempt"] == 1
               and line["duration_ms"] >= 0 and line["outcome"] == "success"
               for line in completed)
    assert mine[-1]["tenant_id"] == events.terminal(ids[0])[0].value["resourceId"]
    failed = [line for line in lines if line.get("request_id") == ids[4]
              and line["message"] == "provisioning failed"]
    assert failed[0]["failed_step"] == "validate-entity" and failed[0]["reason"]

    # The database password is in the worker's settings; it is in no log line and no event.
    password = sa.make_url(settings.database_url_plain()).password
    assert password and password not in worker.log_text()
    assert not any(password in json.dumps(r.value) for r in events.records)


@pytest.fixture
def waiting(settings: Settings, kafka_admin: AdminClient, migrated: sa.Engine, tmp_path: Path,
            group_id: str) -> Iterator[tuple[TopicReader, dict]]:
    """A worker whose tenant sagas wait at activate-services, and one such saga."""
    routing = tmp_path / "routing.toml"
    routing.write_text(ROUTING)
    layout = TopicLayout(settings.topic_prefix)
    create_topics(kafka_admin, layout.specs(settings.topic_partitions, ["subscriptions-silent"]))
    worker = WorkerProcess(settings, tmp_path, group_id,
                           extra_env={"PROVISIONING_ROUTING_FILE": str(routing)}).start()
    events = TopicReader(settings, layout.events)
    entity = f"waiting-{uuid.uuid4().hex[:8]}"
    add_entity(migrated, entity, entity)
    command = _tenant_command(entity)
    with CommandPublisher(settings) as publisher:
        publisher.publish("ProvisionTenantRequest", command)
    request_id = command["requestId"]
    events.wait_for(lambda r: any(e.value.get("step") == "activate-services"
                                  for e in r.by_key[request_id]), 60, "activate-services")
    yield events, command
    events.close()
    assert worker.stop() == 0, worker.log_text()[-3000:]


def operator_command(settings: Settings, request_id: str, action: str, reason: str) -> None:
    with CommandPublisher(settings) as publisher:
        publisher.publish("ProvisioningOperatorCommand", {
            "requestId": request_id, "operator": "ops-ada", "action": action,
            "reason": reason, "requestedAt": int(time.time() * 1000)})


def test_an_operator_cancel_compensates_and_ends_failed_cancelled(
    settings: Settings, waiting: tuple[TopicReader, dict], migrated: sa.Engine,
) -> None:
    events, command = waiting
    request_id = command["requestId"]
    operator_command(settings, request_id, "CANCEL", "customer withdrew")
    undo_answered(settings, "subscriptions-silent", "activate-services",
                  lambda: events.poll(0.1) is not None and events.terminal(request_id), 30,
                  "the cancelled saga's end")

    names = [r.record_name for r in events.by_key[request_id]]
    audit = next(r.value for r in events.by_key[request_id]
                 if r.record_name == "ProvisioningOperatorAction")
    assert (audit["operator"], audit["action"], audit["reason"]) == (
        "ops-ada", "CANCEL", "customer withdrew")
    compensated = [r.value["step"] for r in events.by_key[request_id]
                   if r.record_name == "ProvisioningStepCompensated"]
    # The step in flight may have acted before it heard of the cancel: it is undone first.
    assert compensated == ["activate-services", "setup-billing", "create-tenant"]
    failed = events.terminal(request_id)[0]
    assert failed.record_name == "ProvisioningFailedEvent" and names[-1] == failed.record_name
    assert failed.value["reason"] == "cancelled by ops-ada: customer withdrew"
    assert failed.value["failedStep"] == "activate-services"
    with migrated.connect() as conn:
        tenants = conn.execute(sa.text(
            "SELECT count(*) FROM tenants t JOIN entities e ON e.id = t.entity_id "
            "WHERE e.external_id = :e"), {"e": command["entityId"]}).scalar_one()
    assert tenants == 0


def test_an_operator_resume_starts_a_fresh_attempt_and_is_audited(
    settings: Settings, waiting: tuple[TopicReader, dict],
) -> None:
    events, command = waiting
    request_id = command["requestId"]
    operator_command(settings, request_id, "RESUME", "subscriptions is back")

    def second_attempt(reader: TopicReader) -> bool:
        return any(r.record_name == "ProvisioningStepStarted" and r.value["attempt"] == 2
                   for r in reader.by_key[request_id])

    events.wait_for(second_attempt, 30, "a second attempt of activate-services")
    trail = [(r.record_name, r.value.get("step"), r.value.get("attempt"))
             for r in events.by_key[request_id]]
    at = trail.index(("ProvisioningOperatorAction", None, None))
    assert trail[at + 1] == ("ProvisioningStepStarted", "activate-services", 2)
    assert not events.terminal(request_id)


def test_an_operator_command_for_an_unknown_request_is_dead_lettered(
    settings: Settings, waiting: tuple[TopicReader, dict],
) -> None:
    _, command = waiting
    unknown = str(uuid.uuid4())
    operator_command(settings, unknown, "CANCEL", "typo")
    dlq = TopicReader(settings, TopicLayout(settings.topic_prefix).commands_dlq)
    try:
        dlq.wait_for(lambda r: any(x.key == unknown for x in r.records), 30, "the DLQ record")
        record = next(x for x in dlq.records if x.key == unknown)
        assert b"no saga" in record.headers["dlq-reason"]
    finally:
        dlq.close()
