"""Dead letters for operators, on a real worker: list, show, refuse a still-broken redrive,
redrive a fixed command that then completes, through the library, the CLI and the API."""

from __future__ import annotations

import argparse
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from confluent_kafka import Consumer, Producer, TopicPartition
from harness import TopicReader, WorkerProcess, wait_until
from test_api import auth, make_token, start_api
from test_worker import _tenant_command

from consumer.participants.builtin.registry import add_entity
from producers.commands import CommandPublisher
from provisioning import dlq_cli
from provisioning.devservices.signing_key import DevSigningKey
from provisioning.dlq_admin import DeadLetterNotFound, NotRedriven, find, read_dead_letters, redrive
from provisioning.settings import Settings
from provisioning.topics import TopicLayout


@pytest.fixture
def running(settings: Settings, topics: TopicLayout, migrated: sa.Engine, tmp_path: Path,
            group_id: str) -> Iterator[TopicReader]:
    worker = WorkerProcess(settings, tmp_path, group_id).start()
    events = TopicReader(settings, topics.events)
    yield events
    events.close()
    assert worker.stop() == 0, worker.log_text()[-3000:]


def new_tenant(settings: Settings, events: TopicReader, engine: sa.Engine) -> tuple[str, str]:
    entity = f"dlq-{uuid.uuid4().hex[:8]}"
    add_entity(engine, entity, entity)
    command = _tenant_command(entity)
    with CommandPublisher(settings) as publisher:
        publisher.publish("ProvisionTenantRequest", command)
    events.wait_for(lambda r: r.terminal(command["requestId"]), 60, "the tenant")
    done = events.terminal(command["requestId"])[0]
    assert done.record_name == "ProvisioningSucceeded"
    return done.value["resourceId"], command["requestedBy"]


def user_command(tenant_id: str, admin: str, email: str) -> dict:
    return {"requestId": str(uuid.uuid4()), "requestedBy": admin, "replyTo": None,
            "requestedAt": int(time.time() * 1000), "tenantId": tenant_id, "email": email,
            "roleName": "member"}


def dead_letter_of(settings: Settings, request_id: str) -> str:
    def found() -> str | None:
        return next((x.ref for x in read_dead_letters(settings) if x.key == request_id), None)

    return wait_until(found, 30, "the command in the DLQ", interval_s=0.3)


def commands_end(settings: Settings) -> int:
    """Records ever written to the commands topic (the sum of its end offsets)."""
    topic = TopicLayout(settings.topic_prefix).commands
    consumer = Consumer({**settings.kafka_config(), "group.id": "unused"})
    total = sum(consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in range(settings.topic_partitions))
    consumer.close()
    return total


def test_a_fixed_dead_letter_is_redriven_and_completes(
    settings: Settings, running: TopicReader, migrated: sa.Engine,
    capsys: pytest.CaptureFixture[str],
) -> None:
    events = running
    tenant_id, admin = new_tenant(settings, events, migrated)
    broken = user_command(tenant_id, admin, "not-an-email")
    with CommandPublisher(settings) as publisher:
        publisher.publish("ProvisionUserRequest", broken)
    ref = dead_letter_of(settings, broken["requestId"])

    letter = find(settings, ref)
    assert letter.record_name == "ProvisionUserRequest" and letter.command is not None
    assert letter.error_class == "InvalidCommand" and "email" in (letter.reason or "")

    before = commands_end(settings)
    with pytest.raises(NotRedriven, match="still not valid"):
        redrive(settings, letter, operator="ops-ada")
    with pytest.raises(NotRedriven, match="has no field 'emial'"):
        redrive(settings, letter, changes={"emial": "x@y.example"}, operator="ops-ada")
    assert commands_end(settings) == before  # nothing was sent

    dlq_cli.list_letters(argparse.Namespace(limit=100, json=True), settings)
    listed = json.loads(capsys.readouterr().out)
    assert any(x["ref"] == ref and "email" in x["reason"] for x in listed)
    dlq_cli.redrive_letter(argparse.Namespace(ref=ref, set=["email=fixed@acme.example"],
                                              operator="ops-ada"), settings)
    assert broken["requestId"] in capsys.readouterr().out

    request_id = broken["requestId"]
    events.wait_for(lambda r: r.terminal(request_id), 60, "the redriven command's saga")
    assert events.terminal(request_id)[0].record_name == "ProvisioningSucceeded"
    requested = next(r for r in events.by_key[request_id]
                     if r.record_name == "ProvisioningRequested")
    assert requested.value["params"]["email"] == "fixed@acme.example"


def test_undecodable_bytes_are_shown_but_not_redriven(
    settings: Settings, running: TopicReader, capsys: pytest.CaptureFixture[str],
) -> None:
    key = str(uuid.uuid4())
    producer = Producer(settings.kafka_config())
    producer.produce(TopicLayout(settings.topic_prefix).commands, key=key.encode(),
                     value=b"\x00garbage that is not Avro")
    producer.flush(10)
    ref = dead_letter_of(settings, key)
    letter = find(settings, ref)
    assert letter.record_name is None and letter.command is None

    dlq_cli.show_letter(argparse.Namespace(ref=ref, json=False), settings)
    shown = capsys.readouterr().out
    assert "not decodable" in shown and "00 67 61 72" in shown
    with pytest.raises(NotRedriven, match="not a command this service can decode"):
        redrive(settings, letter, operator="ops-ada")
    with pytest.raises(DeadLetterNotFound):
        find(settings, "0:999999")
    with pytest.raises(DeadLetterNotFound, match="not <partition>:<offset>"):
        find(settings, "nonsense")


def test_operators_list_and_redrive_through_the_api(
    settings: Settings, running: TopicReader, migrated: sa.Engine, tmp_path: Path,
) -> None:
    events = running
    key = DevSigningKey(tmp_path / "auth").ensure()
    api, url = start_api(settings, tmp_path, key)

    def token(*permissions: str) -> str:
        return make_token(key, subject="ops-grace", tenant="ops", permissions=permissions,
                          ttl_s=300)

    try:
        tenant_id, admin = new_tenant(settings, events, migrated)
        broken = user_command(tenant_id, admin, "still-not-an-email")
        with CommandPublisher(settings) as publisher:
            publisher.publish("ProvisionUserRequest", broken)
        ref = dead_letter_of(settings, broken["requestId"])
        partition, offset = ref.split(":")
        operator = auth(token("provisioning:operate"), "ops")
        with httpx.Client(base_url=url, timeout=30) as http:
            denied = http.get("/api/v1/admin/dlq", headers=auth(token("provisioning:read"), "ops"))
            assert denied.status_code == 403
            listed = http.get("/api/v1/admin/dlq", headers=operator).json()
            assert any(x["ref"] == ref and x["errorClass"] == "InvalidCommand" for x in listed)
            refused = http.post(f"/api/v1/admin/dlq/{partition}/{offset}/redrive",
                                headers=operator, json={"changes": {}})
            assert refused.status_code == 422 and "still not valid" in refused.json()["detail"]
            fixed = http.post(f"/api/v1/admin/dlq/{partition}/{offset}/redrive",
                              headers=operator, json={"changes": {"email": "ok@acme.example"}})
            assert fixed.status_code == 202, fixed.text
            assert fixed.json() == {"requestId": broken["requestId"], "redrivenFrom": ref}
            missing = http.post("/api/v1/admin/dlq/0/99999/redrive", headers=operator)
            assert missing.status_code == 404
        events.wait_for(lambda r: r.terminal(broken["requestId"]), 60, "the redriven saga")
        assert events.terminal(broken["requestId"])[0].record_name == "ProvisioningSucceeded"
    finally:
        assert api.stop() == 0, api.log_text()[-2000:]


