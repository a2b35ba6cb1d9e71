"""The seed's promises, kept through every door: idempotent answers, an answer for every command
a caller waits on, outcomes that page only for system failures.

Real worker, projector and API processes on the real broker and database; the worker forgets
finished sagas after a 3 s idempotency window, so the tests can also look past it.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
import yaml
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from harness import ROOT, JsonParticipant, TopicReader, free_port, serve_http, wait_until
from prometheus_client.parser import text_string_to_metric_families
from test_api import (  # noqa: F401 - signing_key, stack_settings, token: fixtures
    PREFIX,
    SILENT,
    Token,
    auth,
    running_stack,
    signing_key,
    stack_settings,
    tenant_body,
    token,
)
from test_blast_radius import metric, routing_file, start_worker
from test_worker import _tenant_command
from test_worker_workflows import _submit

from consumer.participants.builtin.registry import add_entity
from producers.client import ProvisioningClient
from producers.commands import CommandPublisher
from provisioning.devservices.signing_key import DevSigningKey
from provisioning.settings import Settings
from provisioning.topics import TopicLayout
from schemas import codec
from schemas.examples import EXAMPLES

WINDOW_S = 3
ROUTING = f"""
[steps."service.set-rate-limits"]
adapter = "kafka:{SILENT}"
attempt_timeout_s = 60
deadline_s = 600
"""


@pytest.fixture(scope="module")
def promises(stack_settings: Settings,  # noqa: F811
             kafka_admin: AdminClient, migrated: sa.Engine,
             tmp_path_factory: pytest.TempPathFactory, signing_key: DevSigningKey  # noqa: F811
             ) -> Iterator[str]:
    with running_stack(stack_settings, kafka_admin, tmp_path_factory.mktemp("promises"),
                       signing_key, routing=ROUTING, participants=(SILENT,),
                       worker_args=("--idempotency-window-s", str(WINDOW_S))) as (url, _):
        yield url


@pytest.fixture
def api(promises: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=promises, timeout=40) as http:
        yield http


def commands_sent(settings: Settings, request_id: str) -> int:
    """How many commands with this requestId are on the commands topic."""
    topic = TopicLayout(settings.topic_prefix).commands
    consumer = Consumer({**settings.kafka_config(), "group.id": f"count-{uuid.uuid4().hex[:6]}",
                         "enable.auto.commit": False})
    ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in range(settings.topic_partitions)}
    consumer.assign([TopicPartition(topic, p, 0) for p in ends])
    seen, read = 0, dict.fromkeys(ends, 0)
    deadline = time.monotonic() + 20
    while any(read[p] < ends[p] for p in ends) and time.monotonic() < deadline:
        for message in consumer.consume(500, timeout=0.5):
            if message.error():
                continue
            read[message.partition()] = message.offset() + 1
            seen += message.key() == request_id.encode()
    consumer.close()
    return seen


def forgotten(settings: Settings, request_id: str) -> bool:
    """Whether the worker has tombstoned the saga in the state topic (window passed)."""
    topic = TopicLayout(settings.topic_prefix).state
    consumer = Consumer({**settings.kafka_config(), "group.id": f"st-{uuid.uuid4().hex[:6]}",
                         "isolation.level": "read_committed", "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(settings.topic_partitions)])
    last: bytes | None = b"?"
    for _ in range(6):
        for message in consumer.consume(1000, timeout=0.3):
            if not message.error() and message.key() == request_id.encode():
                last = message.value()
    consumer.close()
    return last is None


# --- idempotent answers through the API ---------------------------------------------------------


def test_a_resend_of_a_completed_request_answers_200_with_its_resource_and_sends_nothing(
    api: httpx.Client, token: Token, migrated: sa.Engine, stack_settings: Settings,  # noqa: F811
) -> None:
    entity = f"again-{uuid.uuid4().hex[:8]}"
    add_entity(migrated, entity, entity)
    body = tenant_body(entity, requestId=str(uuid.uuid4()))
    first = api.post(f"{PREFIX}/tenant?wait=30", json=body, headers=auth(token()))
    assert first.status_code == 200, first.text
    assert first.json()["status"] == "COMPLETED"

    again = api.post(f"{PREFIX}/tenant", json=body, headers=auth(token()))

    assert again.status_code == 200, again.text
    assert (again.json()["status"], again.json()["resourceId"]) == (
        "COMPLETED", first.json()["resourceId"])
    assert commands_sent(stack_settings, body["requestId"]) == 1
    other = api.post(f"{PREFIX}/tenant", json={**body, "entityId": f"{entity}-x"},
                     headers=auth(token()))
    assert other.status_code == 409

    # Past the idempotency window the worker has forgotten it; the API still answers.
    wait_until(lambda: forgotten(stack_settings, body["requestId"]), 30, "the tombstone")
    later = api.post(f"{PREFIX}/tenant", json=body, headers=auth(token()))
    assert later.status_code == 200 and later.json()["resourceId"] == first.json()["resourceId"]
    assert commands_sent(stack_settings, body["requestId"]) == 1


def test_a_resend_of_a_running_request_answers_202_with_its_status_and_sends_nothing(
    api: httpx.Client, token: Token, migrated: sa.Engine, stack_settings: Settings,  # noqa: F811
) -> None:
    entity = f"busy-{uuid.uuid4().hex[:8]}"
    add_entity(migrated, entity, entity)
    made = api.post(f"{PREFIX}/tenant?wait=30", json=tenant_body(entity),
                    headers=auth(token())).json()
    tenant = made["resourceId"]
    body = {"requestId": str(uuid.uuid4()), "serviceName": "CartService", "slaTier": "GOLD"}
    bearer = token(tenant=tenant)
    assert api.post(f"{PREFIX}/service", json=body,
                    headers=auth(bearer, tenant)).status_code == 202
    # It waits at set-rate-limits, whose participant never answers.
    wait_until(lambda: api.get(f"{PREFIX}/{body['requestId']}/status", headers=auth(
        bearer, tenant)).json().get("currentStep") == "set-rate-limits", 30, "the last step")

    again = api.post(f"{PREFIX}/service", json=body, headers=auth(bearer, tenant))

    assert again.status_code == 202
    assert again.json()["status"] == "IN_PROGRESS"
    assert commands_sent(stack_settings, body["requestId"]) == 1


def test_a_failed_request_forgotten_by_the_worker_runs_again_after_its_earlier_runs(
    api: httpx.Client, token: Token, migrated: sa.Engine, stack_settings: Settings,  # noqa: F811
) -> None:
    entity = f"late-{uuid.uuid4().hex[:8]}"
    # The entity is not known yet: validate-entity refuses.
    body = tenant_body(entity, requestId=str(uuid.uuid4()))
    failed = api.post(f"{PREFIX}/tenant?wait=30", json=body, headers=auth(token())).json()
    assert (failed["status"], failed["run"]) == ("FAILED", 1)
    wait_until(lambda: forgotten(stack_settings, body["requestId"]), 30, "the tombstone")
    add_entity(migrated, entity, entity)

    again = api.post(f"{PREFIX}/tenant?wait=30", json=body, headers=auth(token()))

    assert again.status_code == 200, again.text
    assert (again.json()["status"], again.json()["run"]) == ("COMPLETED", 2)
    trail = api.get(f"{PREFIX}/{body['requestId']}/events",
                    headers=auth(token(), "platform")).json()
    sequences = [e["sequence"] for e in trail["events"]]
    assert sequences == list(range(1, len(sequences) + 1)), "one gapless trail"
    runs = [e["run"] for e in trail["events"]]
    assert runs == sorted(runs) and set(runs) == {1, 2}, "the runs kept apart, in order"
    assert [e["type"] for e in trail["events"] if e["run"] == 2][0] == "ProvisioningRequested"
    with migrated.connect() as conn:
        tenants = conn.execute(sa.text(
            "SELECT count(*) FROM tenants t JOIN entities e ON e.id = t.entity_id "
            "WHERE e.external_id = :e"), {"e": entity}).scalar_one()
    assert tenants == 1


# --- the same through the Python client ----------------------------------------------------------


def test_the_client_answers_an_old_completed_request_at_once_without_sending_it(
    settings: Settings, topics: TopicLayout, migrated: sa.Engine, tmp_path: Path,
    group_id: str,
) -> None:
    worker, _ = start_worker(settings, tmp_path, group_id)
    entity = f"client-{uuid.uuid4().hex[:8]}"
    add_entity(migrated, entity, entity)
    command = _tenant_command(entity)
    params = {k: v for k, v in command.items()
              if k not in ("requestId", "requestedBy", "replyTo", "requestedAt")}
    with ProvisioningClient(settings) as client:
        first = client.submit_and_wait("tenant", params, request_id=command["requestId"],
                                       requested_by=command["requestedBy"], timeout_s=60)
        assert first.status == "COMPLETED"
        started = time.monotonic()
        again = client.submit_and_wait("tenant", params, request_id=command["requestId"],
                                       requested_by=command["requestedBy"], timeout_s=60)
        took = time.monotonic() - started
    assert (again.status, again.resource_id) == ("COMPLETED", first.resource_id)
    assert took < 5, f"{took:.1f} s"
    assert commands_sent(settings, command["requestId"]) == 1
    assert worker.stop() == 0


# --- an answer for every command a caller waits on ------------------------------------------------


def test_a_dead_lettered_command_with_a_reply_topic_gets_its_provisioning_failed(
    settings: Settings, topics: TopicLayout, migrated: sa.Engine, tmp_path: Path,
    group_id: str, kafka_admin: AdminClient,
) -> None:
    replies_topic = f"{settings.topic_prefix}.caller-replies"
    kafka_admin.create_topics([NewTopic(replies_topic, 1, 1)])[replies_topic].result(10)
    worker, _ = start_worker(settings, tmp_path, group_id)
    replies = TopicReader(settings, replies_topic)
    invalid = {**EXAMPLES["ProvisionUserRequest"], "requestId": str(uuid.uuid4()),
               "email": "not-an-address", "replyTo": replies_topic}
    wrong_key = {**EXAMPLES["ProvisionServiceRequest"], "requestId": str(uuid.uuid4()),
                 "replyTo": replies_topic}
    producer = Producer({**settings.kafka_config(), "partitioner": "murmur2_random"})
    producer.produce(topics.commands, key=invalid["requestId"].encode(),
                     value=codec.encode("ProvisionUserRequest", invalid))
    producer.produce(topics.commands, key=b"not-its-request-id",
                     value=codec.encode("ProvisionServiceRequest", wrong_key))
    producer.produce(topics.commands, key=b"x", value=b"\xc3\x01 not even Avro")
    producer.flush(10)

    replies.wait_for(lambda r: len(r.records) >= 2, 30, "two replies")
    replies.poll(2)
    answered = {r.key: r for r in replies.records}
    assert set(answered) == {invalid["requestId"], wrong_key["requestId"]}
    for record in answered.values():
        assert record.record_name == "ProvisioningFailed"
    assert "email" in answered[invalid["requestId"]].value["reason"]
    assert "is not the command's requestId" in answered[wrong_key["requestId"]].value["reason"]
    assert worker.stop() == 0
    replies.close()


# --- outcomes: a business rule's "no" does not page ----------------------------------------------


def test_a_refusal_and_a_system_failure_land_in_different_outcomes_and_only_one_pages(
    settings: Settings, topics: TopicLayout, migrated: sa.Engine, tmp_path: Path,
    group_id: str,
) -> None:
    down = f"http://127.0.0.1:{free_port()}/steps"  # a participant that is down
    routing = routing_file(tmp_path, {"user.send-invitation": down})
    worker, port = start_worker(settings, tmp_path, group_id, routing=routing)
    events = TopicReader(settings, topics.events)
    entity = f"outcomes-{uuid.uuid4().hex[:8]}"
    add_entity(migrated, entity, entity)
    tenant_command = _tenant_command(entity)
    admin = tenant_command["requestedBy"]
    tenant = _submit(settings, events, "ProvisionTenantRequest", tenant_command)["resourceId"]
    assert _submit(settings, events, "ProvisionServiceRequest", {
        "tenantId": tenant, "serviceName": "CartService", "slaTier": "GOLD",
        "requestedBy": admin})["event"] == "ProvisioningSucceeded"

    over_quota = _submit(settings, events, "ProvisionResourceRequest", {
        "tenantId": tenant, "serviceName": "CartService", "resourceType": "DATABASE",
        "resourceSpec": {"sizeGb": "1000000"}, "requestedBy": admin})
    participant_down = _submit(settings, events, "ProvisionUserRequest", {
        "tenantId": tenant, "email": f"{uuid.uuid4().hex[:8]}@acme.example",
        "roleName": "member", "requestedBy": admin})

    assert (over_quota["event"], over_quota["failedStep"]) == (
        "ProvisioningFailedEvent", "check-quota")
    assert (participant_down["event"], participant_down["failedStep"]) == (
        "ProvisioningFailedEvent", "send-invitation")
    outcomes = {(w, o): metric(port, "provisioning_outcomes_total", workflow_type=w, outcome=o)
                for w in ("resource", "user") for o in ("refused", "failed")}
    assert outcomes == {("resource", "refused"): 1, ("resource", "failed"): 0,
                        ("user", "refused"): 0, ("user", "failed"): 1}
    scraped = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    selectors = _alert_selectors(scraped, "ProvisioningSuccessRateLow")
    for selector, matched in selectors.items():
        assert matched.get("refused", 0) == 0, f"{selector} counts the refusal"
        assert matched.get("failed", 0) in (0, 1), f"{selector}: {matched}"
    assert any(m.get("failed") == 1 for m in selectors.values()), "no selector counts it"
    assert worker.stop() == 0
    events.close()


def _alert_selectors(scraped: str, alert: str) -> dict[str, dict[str, float]]:
    """Per `provisioning_outcomes_total` selector of `alert`'s expression: the scraped samples
    it matches (label matchers `=`, `!=`, `=~` evaluated as PromQL does), summed by outcome."""
    rules = yaml.safe_load((ROOT / "helm/provisioning/files/prometheus/"
                                   "provisioning-alerts.yaml").read_text())
    expr = next(r["expr"] for g in rules["groups"] for r in g["rules"] if r.get("alert") == alert)
    samples = [s for f in text_string_to_metric_families(scraped) for s in f.samples
               if s.name == "provisioning_outcomes_total"]
    found: dict[str, dict[str, float]] = {}
    for matchers in set(re.findall(r"provisioning_outcomes_total\{([^}]*)\}", expr)):
        wanted = {k: (op, v) for k, op, v in
                  re.findall(r'(\w+)\s*(=~|!=|=)\s*"([^"]*)"', matchers)}
        sums = found.setdefault(matchers, {})
        for sample in samples:
            if all(_admits(m, sample.labels.get(k, "")) for k, m in wanted.items()):
                outcome = sample.labels["outcome"]
                sums[outcome] = sums.get(outcome, 0) + sample.value
    return found


def _admits(matcher: tuple[str, str], value: str) -> bool:
    op, pattern = matcher
    if op == "=":
        return value == pattern
    if op == "!=":
        return value != pattern
    return re.fullmatch(pattern, value) is not None


def test_the_success_rate_alert_counts_refusals_as_neither_success_nor_failure() -> None:
    """The alert's expression, read as PromQL selectors: none of them admits refused or
    cancelled runs, so they count neither for nor against the success rate."""
    rules = yaml.safe_load((ROOT / "helm/provisioning/files/prometheus/"
                                   "provisioning-alerts.yaml").read_text())
    expr = next(r["expr"] for g in rules["groups"] for r in g["rules"]
                if r.get("alert") == "ProvisioningSuccessRateLow")
    selectors = re.findall(r"provisioning_outcomes_total\{([^}]*)\}", expr)
    assert selectors, expr
    for matchers in selectors:
        outcome = dict((k, (op, v)) for k, op, v in
                       re.findall(r'(\w+)\s*(=~|!=|=)\s*"([^"]*)"', matchers))["outcome"]
        assert not _admits(outcome, "refused") and not _admits(outcome, "cancelled"), matchers


# --- each run carries its own tenant --------------------------------------------------------------


def test_a_tenant_run_retried_by_an_operator_over_kafka_carries_its_own_tenant(
    stack_settings: Settings, kafka_admin: AdminClient, migrated: sa.Engine,  # noqa: F811
    tmp_path: Path, signing_key: DevSigningKey, token: Token,  # noqa: F811
) -> None:
    """Run 1 creates tenant T1 and fails at setup-billing: T1 is compensated (deleted). An
    operator's RETRY (a command on Kafka) starts run 2, which creates T2. Everything that
    names the request's tenant — the state, run 2's events, the projection, the API — names T2,
    never the compensated T1."""
    settings = stack_settings.model_copy(
        update={"topic_prefix": f"{stack_settings.topic_prefix}.runs{uuid.uuid4().hex[:6]}"})
    billing, billing_url = serve_http(_FailsInRunOne)
    routing = f'[steps."tenant.setup-billing"]\nadapter = "{billing_url}/billing"\n'
    with running_stack(settings, kafka_admin, tmp_path, signing_key,
                       routing=routing) as (url, _), httpx.Client(base_url=url,
                                                                  timeout=40) as api:
        entity = f"runs-{uuid.uuid4().hex[:8]}"
        add_entity(migrated, entity, entity)
        first = api.post(f"{PREFIX}/tenant?wait=30", json=tenant_body(entity),
                         headers=auth(token())).json()
        assert (first["status"], first["failedStep"]) == ("FAILED", "setup-billing"), first
        request_id = first["requestId"]
        with CommandPublisher(settings) as publisher:
            publisher.publish("ProvisioningOperatorCommand", {
                "requestId": request_id, "operator": "olga", "action": "RETRY",
                "reason": "billing is back", "requestedAt": int(time.time() * 1000),
                "step": None})
        wait_until(lambda: api.get(f"{PREFIX}/{request_id}/status", headers=auth(
            token(), "platform")).json()["status"] == "COMPLETED", 60, "run 2's end")
        status = api.get(f"{PREFIX}/{request_id}/status", headers=auth(token(), "platform"))
        trail = api.get(f"{PREFIX}/{request_id}/events",
                        headers=auth(token(), "platform")).json()["events"]
    billing.shutdown()
    billing.server_close()

    created = {e["run"]: e["details"]["output"]["tenantId"] for e in trail
               if e["type"] == "ProvisioningStepCompleted" and e["step"] == "create-tenant"}
    first_tenant, second_tenant = created[1], created[2]
    assert first_tenant != second_tenant
    assert (status.json()["run"], status.json()["tenantId"]) == (2, second_tenant)
    assert status.json()["resourceId"] == second_tenant
    state = _latest_state(settings, request_id)
    assert (state["tenantId"], state["run"]) == (second_tenant, 2)
    events = TopicReader(settings, TopicLayout(settings.topic_prefix).events)
    events.poll(2)
    run_two = [r for r in events.by_key[request_id] if r.value["run"] == 2]
    events.close()
    created_at = next(i for i, r in enumerate(run_two) if r.value.get("step") == "create-tenant"
                      and r.record_name == "ProvisioningStepCompleted")
    assert {r.value["tenantId"] for r in run_two[:created_at]} == {None}, "no tenant yet"
    assert {r.value["tenantId"] for r in run_two[created_at:]} == {second_tenant}
    with migrated.connect() as conn:
        live = set(conn.execute(sa.text(
            "SELECT t.id::text FROM tenants t JOIN entities e ON e.id = t.entity_id "
            "WHERE e.external_id = :e"), {"e": entity}).scalars())
    assert live == {second_tenant}


def _latest_state(settings: Settings, request_id: str) -> dict:
    topic = TopicLayout(settings.topic_prefix).state
    consumer = Consumer({**settings.kafka_config(), "group.id": f"st-{uuid.uuid4().hex[:6]}",
                         "isolation.level": "read_committed", "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(settings.topic_partitions)])
    latest: dict = {}
    for _ in range(6):
        for message in consumer.consume(1000, timeout=0.3):
            if not message.error() and message.key() == request_id.encode() and message.value():
                latest = codec.decode(message.value()).value
    consumer.close()
    return latest


class _FailsInRunOne(JsonParticipant):
    """`setup-billing` over HTTP: refuses run 1 for good (422), does it in any later run."""

    def do_POST(self) -> None:  # noqa: N802 - the http.server API
        body = self.body()
        if body["run"] == 1 and body["action"] == "EXECUTE":
            self.answer(422, {"detail": "billing is down for maintenance"})
        else:
            self.answer(200, {"output": {"billingAccountId": f"b-{body['run']}"}})
