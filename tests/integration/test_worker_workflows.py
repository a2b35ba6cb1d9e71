"""All four workflows through the worker, chained as a platform would use them, and a resend."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from harness import TopicReader, WorkerProcess
from test_worker import _tenant_command

from consumer.participants.builtin.registry import add_entity
from producers.commands import CommandPublisher
from provisioning.database import upgrade
from provisioning.settings import Settings
from provisioning.topics import TopicLayout


@pytest.fixture
def running(settings: Settings, topics: TopicLayout, db_engine: sa.Engine, tmp_path: Path,
            group_id: str) -> Iterator[tuple[WorkerProcess, TopicReader]]:
    upgrade(db_engine)
    worker = WorkerProcess(settings, tmp_path, group_id).start()
    events = TopicReader(settings, topics.events)
    yield worker, events
    events.close()
    assert worker.stop() == 0, worker.log_text()[-3000:]


def _submit(settings: Settings, events: TopicReader, record: str, command: dict) -> dict:
    """Publish one command and return its terminal event's value."""
    command.setdefault("requestId", str(uuid.uuid4()))
    command.setdefault("replyTo", None)
    command.setdefault("requestedAt", int(time.time() * 1000))
    with CommandPublisher(settings) as publisher:
        publisher.publish(record, command)
    request_id = command["requestId"]
    before = len(events.terminal(request_id))
    events.wait_for(lambda r: len(r.terminal(request_id)) > before, 60, f"{record} to finish")
    last = events.terminal(request_id)[-1]
    return {"event": last.record_name, **last.value}


def _count(engine: sa.Engine, sql: str, **params: str) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.text(sql), params).scalar_one()


def test_tenant_service_user_resource_chain(
    settings: Settings, running: tuple[WorkerProcess, TopicReader], db_engine: sa.Engine
) -> None:
    _, events = running
    entity = f"chain-{uuid.uuid4().hex[:10]}"
    add_entity(db_engine, entity, "Chain Corp")
    tenant_command = _tenant_command(entity)
    admin = tenant_command["requestedBy"]

    tenant = _submit(settings, events, "ProvisionTenantRequest", tenant_command)
    assert tenant["event"] == "ProvisioningSucceeded", tenant
    tenant_id = tenant["resourceId"]
    service = _submit(settings, events, "ProvisionServiceRequest", {
        "tenantId": tenant_id, "serviceName": "CartService", "slaTier": "GOLD",
        "requestedBy": admin})
    assert service["event"] == "ProvisioningSucceeded", service
    user = _submit(settings, events, "ProvisionUserRequest", {
        "tenantId": tenant_id, "email": f"{uuid.uuid4().hex[:8]}@chain.example",
        "roleName": "member", "requestedBy": admin})
    assert user["event"] == "ProvisioningSucceeded", user
    resource = _submit(settings, events, "ProvisionResourceRequest", {
        "tenantId": tenant_id, "serviceName": "CartService", "resourceType": "DATABASE",
        "resourceSpec": {"sizeGb": "5", "name": "carts"}, "requestedBy": admin})
    assert resource["event"] == "ProvisioningSucceeded", resource

    assert _count(db_engine, "SELECT count(*) FROM tenants WHERE id = :id", id=tenant_id) == 1
    assert _count(db_engine, "SELECT count(*) FROM tenant_service_subscriptions WHERE id = :id",
                  id=service["resourceId"]) == 1
    assert _count(db_engine, "SELECT count(*) FROM memberships WHERE user_id = :u "
                  "AND tenant_id = :t", u=user["resourceId"], t=tenant_id) == 1
    assert _count(db_engine, "SELECT count(*) FROM resources WHERE id = :id",
                  id=resource["resourceId"]) == 1


def test_unknown_entity_fails_and_a_resend_after_failed_is_run_2(
    settings: Settings, running: tuple[WorkerProcess, TopicReader], db_engine: sa.Engine
) -> None:
    _, events = running
    entity = f"resend-{uuid.uuid4().hex[:10]}"
    command = _tenant_command(entity)

    failed = _submit(settings, events, "ProvisionTenantRequest", dict(command))
    assert failed["event"] == "ProvisioningFailedEvent"
    assert failed["failedStep"] == "validate-entity"
    assert failed["run"] == 1

    add_entity(db_engine, entity, "Registered late")
    second = _submit(settings, events, "ProvisionTenantRequest", dict(command))

    assert second["event"] == "ProvisioningSucceeded"
    assert second["run"] == 2
    trail = events.by_key[command["requestId"]]
    sequences = [r.value["sequence"] for r in trail]
    assert sequences == list(range(1, len(trail) + 1))
    assert [r.record_name for r in trail].count("ProvisioningRequested") == 2


def test_failure_after_allocation_undoes_the_database_for_real(
    settings: Settings, running: tuple[WorkerProcess, TopicReader], db_engine: sa.Engine
) -> None:
    """Billing closed: update-billing refuses after a real schema and role were created."""
    _, events = running
    entity = f"closed-{uuid.uuid4().hex[:10]}"
    add_entity(db_engine, entity, "Closed Billing Ltd")
    tenant_command = _tenant_command(entity)
    admin = tenant_command["requestedBy"]
    tenant_id = _submit(settings, events, "ProvisionTenantRequest", tenant_command)["resourceId"]
    with db_engine.begin() as conn:
        conn.execute(sa.text("UPDATE billing_accounts SET status = 'closed' "
                             "WHERE tenant_id = :t"), {"t": tenant_id})
    schemas_before = _tenant_schemas(db_engine)

    command = {"tenantId": tenant_id, "serviceName": "CoreService", "resourceType": "DATABASE",
               "resourceSpec": {"sizeGb": "2", "name": "ledger"}, "requestedBy": admin}
    result = _submit(settings, events, "ProvisionResourceRequest", command)

    assert result["event"] == "ProvisioningFailedEvent"
    assert result["failedStep"] == "update-billing"
    assert "no active billing account" in result["reason"]
    names = [r.record_name for r in events.by_key[command["requestId"]]]
    compensated = [r.value["step"] for r in events.by_key[command["requestId"]]
                   if r.record_name == "ProvisioningStepCompensated"]
    assert compensated == ["allocate-resource"]
    assert names.count("ProvisioningFailedEvent") == 1
    assert _count(db_engine, "SELECT count(*) FROM resources WHERE tenant_id = :t",
                  t=tenant_id) == 0
    allocated = next(r.value["output"] for r in events.by_key[command["requestId"]]
                     if r.record_name == "ProvisioningStepCompleted"
                     and r.value["step"] == "allocate-resource")
    assert allocated["databaseSchema"].startswith("tenant_")
    assert allocated["databaseSchema"] not in _tenant_schemas(db_engine)
    assert _tenant_schemas(db_engine) == schemas_before
    with db_engine.connect() as conn:
        roles = conn.execute(sa.text("SELECT count(*) FROM pg_roles WHERE rolname = :r"),
                             {"r": allocated["databaseRole"]}).scalar_one()
    assert roles == 0, "the tenant's database role was dropped"


def _tenant_schemas(engine: sa.Engine) -> set[str]:
    with engine.connect() as conn:
        return set(conn.execute(sa.text(
            "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'tenant\\_%'")).scalars())
