"""`provisioning demo`: the main job, end to end, on the local services.

It starts a worker process, registers entities in the built-in registry, and submits a mixed
batch the way platform services would: tenants, then services, users and resources for them,
including a resource over its SLA quota (refused before anything is allocated), a database
resource for a tenant whose billing account was closed (allocated, then refused at
update-billing and compensated: the schema and role are dropped), and a duplicate command
(answered again, not re-run). It shows progress while the batch runs and ends with a table
read back from the events topic, not from its own memory.

A projector and the API run beside the worker, so the batch is in the projection and the
operators' console (`/console` on the API) shows it: the demo prints its address and how to get
a token. With `--serve` (`make demo` in a terminal) the three keep running until Ctrl-C.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field

import sqlalchemy as sa
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient
from rich.console import Console
from rich.table import Table

from producers.commands import CommandPublisher
from provisioning.database import create_engine, upgrade
from provisioning.errors import TransientError
from provisioning.kafka_access import client_config
from provisioning.settings import Settings
from provisioning.topics import TopicLayout, create_topics
from schemas import codec

TERMINAL = ("ProvisioningSucceeded", "ProvisioningFailedEvent")


@dataclass
class Timeline:
    """What the events topic says about each request."""

    events: dict[str, list[tuple[str, dict]]] = field(default_factory=dict)

    def add(self, key: str, name: str, value: dict) -> None:
        self.events.setdefault(key, []).append((name, value))

    def finished(self, key: str) -> bool:
        return any(name in TERMINAL for name, _ in self.events.get(key, []))


def run_demo(settings: Settings, console: Console | None = None, serve: bool = False) -> int:
    from consumer.participants.builtin.registry import add_entity

    console = console or Console()
    layout = TopicLayout(settings.topic_prefix)
    specs = layout.specs(settings.topic_partitions, max_command_bytes=settings.max_command_bytes)
    create_topics(AdminClient(client_config(settings)), specs,
                  settings.topic_replication_factor,
                  min_insync_replicas=settings.topic_min_insync_replicas, settings=settings)
    upgrade(settings)
    processes = [_start("worker", "--group", "provisioning-demo", "--instance-id", "demo"),
                 _start("projector")]
    console_url = f"http://127.0.0.1:{settings.dev_api_port}/console"
    api_port_free = _port_free(settings.dev_api_port)
    if api_port_free:
        processes.append(_start("api", "--port", str(settings.dev_api_port)))
    reader = _events_reader(settings, layout.events)
    timeline = Timeline()
    try:
        engine = create_engine(settings)
        tenants = []
        for name in ("Acme Widgets", "Globex", "Initech"):
            entity = f"entity-{uuid.uuid4().hex[:8]}"
            add_entity(engine, entity, name)
            tenants.append(_tenant(entity, name))
        console.print(f"worker started; submitting {len(tenants)} tenants")
        _publish(settings, tenants)
        _follow(console, reader, timeline, [c["requestId"] for _, c in tenants])
        batch = _second_wave(tenants, timeline)
        # Finance closes the third tenant's billing account: its database resource will be
        # allocated, then refused at update-billing, and the allocation compensated.
        closed_tenant = _resource_id(timeline, tenants[2][1]["requestId"])
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE billing_accounts SET status = 'closed' "
                                 "WHERE tenant_id = :t"), {"t": closed_tenant})
        batch.append(("ProvisionResourceRequest", _command(
            tenantId=closed_tenant, serviceName="CoreService", resourceType="DATABASE",
            resourceSpec={"sizeGb": "2", "name": "ledger"},
            requestedBy=tenants[2][1]["requestedBy"])))
        console.print(f"submitting {len(batch)} service, user and resource requests (one over "
                      "quota, one on a closed billing account) and one duplicate tenant command")
        _publish(settings, batch + [tenants[0]])
        _follow(console, reader, timeline, [c["requestId"] for _, c in batch])
        time.sleep(1.0)
        _drain(reader, timeline, 1.0)
        console.print(_table(timeline, tenants + batch))
        duplicates = [n for n, _ in timeline.events[tenants[0][1]["requestId"]]].count(
            "ProvisioningSucceeded")
        console.print(f"duplicate tenant command: {duplicates} ProvisioningSucceeded event "
                      "(answered again, not re-run)")
        _console_address(console, console_url, api_port_free, serve)
        if serve and api_port_free:
            console.print("worker, projector and API keep running; Ctrl-C stops them")
            while all(p.poll() is None for p in processes):
                time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        reader.close()
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(30)
    return 0


def _start(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "provisioning.cli", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


def _console_address(console: Console, url: str, started: bool, serve: bool) -> None:
    console.print(f"\n[bold]Operators' console:[/] {url}")
    console.print("  sign in with the token that `provisioning token --operator` prints")
    if not started:
        console.print("  (an API already listens on that port: the demo did not start its own)")
    elif not serve:
        console.print("  the demo's API has stopped with it; to browse: `provisioning api` (and "
                      "`provisioning projector` while requests run), or `make demo` in a terminal")


def _tenant(entity: str, name: str) -> tuple[str, dict]:
    return "ProvisionTenantRequest", _command(
        entityId=entity, tenantName=name, subscriptionPlan="BUSINESS",
        billingInfo={"accountName": name, "billingEmail": "billing@example.com",
                     "currency": "EUR", "paymentMethod": "invoice"},
        requestedBy=f"admin-{uuid.uuid4().hex[:6]}")


def _second_wave(tenants: list[tuple[str, dict]], timeline: Timeline) -> list[tuple[str, dict]]:
    batch = []
    for index, (_, tenant) in enumerate(tenants):
        tenant_id = _resource_id(timeline, tenant["requestId"])
        admin = tenant["requestedBy"]
        batch += [
            ("ProvisionServiceRequest", _command(tenantId=tenant_id, serviceName="CartService",
                                                 slaTier="GOLD", requestedBy=admin)),
            ("ProvisionUserRequest", _command(tenantId=tenant_id, roleName="member",
                                              email=f"user{index}@example.com",
                                              requestedBy=admin)),
        ]
    tenant_id = _resource_id(timeline, tenants[0][1]["requestId"])
    admin = tenants[0][1]["requestedBy"]
    for size in ("5", "100000"):
        batch.append(("ProvisionResourceRequest", _command(
            tenantId=tenant_id, serviceName="CoreService", resourceType="DATABASE",
            resourceSpec={"sizeGb": size, "name": f"db{size}"}, requestedBy=admin)))
    return batch


def _command(**fields: object) -> dict:
    return {"requestId": str(uuid.uuid4()), "replyTo": None,
            "requestedAt": int(time.time() * 1000), **fields}


def _publish(settings: Settings, commands: list[tuple[str, dict]]) -> None:
    with CommandPublisher(settings) as publisher:
        for record, command in commands:
            publisher.publish(record, command)


def _events_reader(settings: Settings, topic: str) -> Consumer:
    consumer = Consumer({**client_config(settings), "group.id": f"demo-{uuid.uuid4().hex[:8]}",
                         "isolation.level": "read_committed", "enable.auto.commit": False})
    partitions = [TopicPartition(topic, p) for p in range(settings.topic_partitions)]
    ends = [consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in partitions]
    consumer.assign([TopicPartition(topic, p, end) for p, end in enumerate(ends)])
    return consumer


def _drain(reader: Consumer, timeline: Timeline, timeout_s: float) -> None:
    for message in reader.consume(1000, timeout=timeout_s):
        if message.error() or not message.value():
            continue
        decoded = codec.decode(message.value())
        timeline.add(message.key().decode(), decoded.record_name, decoded.value)


def _follow(console: Console, reader: Consumer, timeline: Timeline, ids: list[str],
            timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    with console.status("") as status:
        while not all(timeline.finished(i) for i in ids):
            if time.monotonic() > deadline:
                raise TransientError("the demo's requests did not finish in time; is the "
                                     "worker running? see `provisioning worker`")
            _drain(reader, timeline, 0.3)
            done = sum(timeline.finished(i) for i in ids)
            events = sum(len(timeline.events.get(i, [])) for i in ids)
            status.update(f"{done}/{len(ids)} finished, {events} events so far")


def _resource_id(timeline: Timeline, request_id: str) -> str:
    for name, value in timeline.events[request_id]:
        if name == "ProvisioningSucceeded":
            return value["resourceId"]
    raise TransientError(f"request {request_id} did not succeed")


def _table(timeline: Timeline, commands: list[tuple[str, dict]]) -> Table:
    table = Table(title="Every request, as the events topic tells it")
    for column in ("requestId", "workflow", "status", "steps", "result / reason"):
        table.add_column(column)
    for _, command in commands:
        trail = timeline.events.get(command["requestId"], [])
        names = [name for name, _ in trail]
        requested = next((v for n, v in trail if n == "ProvisioningRequested"), {})
        final = next((v for n, v in reversed(trail) if n in TERMINAL), {})
        status = "COMPLETED" if "ProvisioningSucceeded" in names else "FAILED"
        steps = names.count("ProvisioningStepCompleted")
        compensated = names.count("ProvisioningStepCompensated")
        detail = final.get("resourceId") or final.get("reason", "")
        table.add_row(command["requestId"][:8], requested.get("workflowType", "?"), status,
                      f"{steps} done, {compensated} undone", str(detail)[:60])
    return table
