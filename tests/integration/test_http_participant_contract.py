"""The HTTP participant contract end to end: a real worker, broker and database, and real
participants on loopback (one plain http, one https that requires a client certificate),
routed by a routing file with per-route credentials.

What each participant must be able to rely on: every call (execute and compensate) carries the
saga's `traceparent` and the route's bearer token (and, over https, the route's client
certificate); "not now" answers (408, 429, 503) are retried, a 429's `Retry-After` is waited
for; any other 4xx is a refusal; a wait past the step's deadline ends the step. The tokens never
reach an event or the worker's log.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest
import sqlalchemy as sa
from confluent_kafka.admin import AdminClient
from harness import JsonParticipant, WorkerProcess, wait_until
from test_remote_participants import start_stack, stop_stack, tenant, tenants_of
from tls_certs import TlsFiles, make_tls_files, server_context

from producers.commands import CommandPublisher
from provisioning.settings import Settings

IDENTITY_TOKEN = "identity-" + uuid.uuid4().hex
SERVICES_TOKEN = "services-" + uuid.uuid4().hex
BACKOFF_MS = 100  # the step's own first backoff: a 1 s gap can only be the Retry-After


@dataclass
class Call:
    request_id: str
    entity: str
    action: str
    attempt: int
    key: str
    traceparent: str | None
    authorization: str | None
    client: str | None  # the client certificate's common name, over https
    arrived: float  # time.monotonic() at the server


@dataclass
class ScriptedService:
    """A participant that, when `scripted`, answers by the entity's name prefix and attempt:
    `limited-`: 429 with Retry-After 1 on attempt 1; `timeout-`: 408 on attempt 1; `down-`:
    503 on attempt 1; `missing-`: 404; `never-`: 429 with Retry-After 3600. Anything else, and
    every compensation, succeeds."""

    tls: TlsFiles | None = None
    scripted: bool = True
    calls: list[Call] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    def start(self) -> str:
        service = self

        class Handler(JsonParticipant):
            def do_POST(self) -> None:  # noqa: N802 - the http.server API
                arrived = time.monotonic()
                body = self.body()
                peer = (self.connection.getpeercert()  # type: ignore[attr-defined]
                        if service.tls is not None else None) or {}
                entity = body["params"].get("entityId", "")
                service.calls.append(Call(
                    body["requestId"], entity, body["action"], body["attempt"],
                    self.headers["Idempotency-Key"], self.headers.get("traceparent"),
                    self.headers.get("Authorization"),
                    dict(p[0] for p in peer.get("subject", ())).get("commonName"), arrived))
                status, headers = (service.answer(entity, body["action"], body["attempt"])
                                   if service.scripted else (200, {}))
                self.answer(status, {"output": {"adminUserId": f"admin-{entity}"}}
                            if status == 200 else {"detail": f"scripted {status}"}, headers)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        scheme = "http"
        if self.tls is not None:
            self.server.socket = server_context(self.tls).wrap_socket(
                self.server.socket, server_side=True)
            scheme = "https"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return f"{scheme}://127.0.0.1:{self.server.server_address[1]}/steps"

    @staticmethod
    def answer(entity: str, action: str, attempt: int) -> tuple[int, dict[str, str]]:
        if action == "COMPENSATE":
            return 200, {}
        first = attempt == 1
        if entity.startswith("limited-") and first:
            return 429, {"Retry-After": "1"}
        if entity.startswith("timeout-") and first:
            return 408, {}
        if entity.startswith("down-") and first:
            return 503, {}
        if entity.startswith("missing-"):
            return 404, {}
        if entity.startswith("never-"):
            return 429, {"Retry-After": "3600"}
        return 200, {}

    def of(self, request_id: str, action: str = "EXECUTE") -> list[Call]:
        return [c for c in self.calls if c.request_id == request_id and c.action == action]

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


@pytest.fixture
def services(tmp_path: Path) -> Iterator[tuple[ScriptedService, ScriptedService, TlsFiles]]:
    tls = make_tls_files(tmp_path / "tls")
    identity, subscriptions = ScriptedService(), ScriptedService(tls=tls, scripted=False)
    yield identity, subscriptions, tls
    identity.stop()
    subscriptions.stop()


def _traceparent() -> str:
    return f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01"


def test_every_call_is_traced_and_authenticated_and_not_now_answers_are_retried(
    settings: Settings, kafka_admin: AdminClient, migrated: sa.Engine, tmp_path: Path,
    group_id: str, services: tuple[ScriptedService, ScriptedService, TlsFiles],
) -> None:
    identity, subscriptions, tls = services
    identity_url, subscriptions_url = identity.start(), subscriptions.start()
    (tmp_path / "identity-token").write_text(IDENTITY_TOKEN + "\n")
    (tmp_path / "services-token").write_text(SERVICES_TOKEN)
    stack = start_stack(settings, kafka_admin, migrated, tmp_path, group_id, f"""
[steps."tenant.activate-services"]
adapter = "{subscriptions_url}"
bearer_token_file = "services-token"
client_cert_file = "{tls.client_cert}"
client_key_file = "{tls.client_key}"
ca_file = "{tls.ca_cert}"

[steps."tenant.create-admin-role"]
adapter = "{identity_url}"
bearer_token_file = "identity-token"
deadline_s = 60
retry = {{ max_retries = 3, initial_backoff_ms = {BACKOFF_MS} }}
""")
    commands = {prefix: tenant(migrated, prefix)
                for prefix in ("limited-", "timeout-", "down-", "missing-", "never-", "plain-")}
    traces = {c["requestId"]: _traceparent() for c in commands.values()}
    try:
        with CommandPublisher(settings) as publisher:
            for command in commands.values():
                publisher.publish("ProvisionTenantRequest", command, traces[command["requestId"]])
        ids = list(traces)
        stack.events.wait_for(lambda r: all(r.terminal(i) for i in ids), 120, "every saga")
    finally:
        stop_stack(stack)
    rid = {prefix: c["requestId"] for prefix, c in commands.items()}

    def outcome(prefix: str) -> str:
        return stack.events.terminal(rid[prefix])[0].record_name

    def admin_role_failures(prefix: str) -> list[dict]:
        return [e for e in stack.events_of(rid[prefix], "ProvisioningStepFailed")
                if e["step"] == "create-admin-role"]

    # 429 with Retry-After: 1 -- the second attempt arrives a second later, not 100 ms later.
    assert outcome("limited-") == "ProvisioningSucceeded", stack.names(rid["limited-"])
    first, second = identity.of(rid["limited-"])
    gap_s = second.arrived - first.arrived
    print(f"Retry-After: 1 -> measured gap between attempts {gap_s:.3f} s")
    assert 1.0 <= gap_s < 2.5, gap_s
    (waited,) = admin_role_failures("limited-")
    assert waited["transient"] and "HTTP 429" in waited["reason"]
    assert waited["nextRetryAt"] - waited["occurredAt"] == 1000  # not BACKOFF_MS

    # 408 and 503 are "not now": retried after the step's backoff, and the saga succeeds.
    for prefix, status in (("timeout-", 408), ("down-", 503)):
        assert outcome(prefix) == "ProvisioningSucceeded", stack.names(rid[prefix])
        (retried,) = admin_role_failures(prefix)
        assert retried["transient"] and f"HTTP {status}" in retried["reason"]
        assert retried["nextRetryAt"] - retried["occurredAt"] == BACKOFF_MS
        assert [c.attempt for c in identity.of(rid[prefix])] == [1, 2]

    # 404 is a refusal: no retry; the saga compensates (the refused step did nothing to undo).
    assert outcome("missing-") == "ProvisioningFailedEvent"
    (refused,) = admin_role_failures("missing-")
    assert not refused["transient"] and "HTTP 404" in refused["reason"]
    assert [c.attempt for c in identity.of(rid["missing-"])] == [1]
    assert identity.of(rid["missing-"], "COMPENSATE") == []
    compensated = stack.events_of(rid["missing-"], "ProvisioningStepCompensated")
    assert [e["step"] for e in compensated] == ["activate-services", "setup-billing",
                                                "create-tenant"]
    assert len(subscriptions.of(rid["missing-"], "COMPENSATE")) == 1  # over https
    assert tenants_of(migrated, commands["missing-"]["entityId"]) == 0

    # A wait past the step's deadline (60 s) ends the step at once; it may have acted: undone.
    assert outcome("never-") == "ProvisioningFailedEvent"
    (gave_up,) = admin_role_failures("never-")
    assert gave_up["transient"] and gave_up["nextRetryAt"] is None
    assert gave_up["reason"].startswith("deadline exceeded before the next attempt (the "
                                        "participant asked to wait 3600000 ms)")
    assert [c.attempt for c in identity.of(rid["never-"])] == [1]
    (undo,) = identity.of(rid["never-"], "COMPENSATE")
    assert undo.key == f"{rid['never-']}:1:create-admin-role:compensate"

    # Every call, execute or compensate, on both routes: the saga's traceparent, the route's
    # token, and over https the route's client certificate.
    for service, token in ((identity, IDENTITY_TOKEN), (subscriptions, SERVICES_TOKEN)):
        assert {c.action for c in service.calls} == {"EXECUTE", "COMPENSATE"}
        for call in service.calls:
            assert call.traceparent == traces[call.request_id], call
            assert call.authorization == f"Bearer {token}", call
    assert {c.client for c in subscriptions.calls} == {"provisioning-worker"}
    assert outcome("plain-") == "ProvisioningSucceeded"

    # The tokens are in no event and not in the worker's log.
    recorded = json.dumps([r.value for r in stack.events.records], default=str)
    for secret in (IDENTITY_TOKEN, SERVICES_TOKEN):
        assert secret not in recorded
        assert secret not in stack.worker.log_text()


def test_a_missing_token_file_stops_the_worker_at_start_naming_the_route(
    settings: Settings, tmp_path: Path, group_id: str,
) -> None:
    routing = tmp_path / "routing.toml"
    routing.write_text('[steps."tenant.create-admin-role"]\n'
                       'adapter = "http://127.0.0.1:9/steps"\n'
                       'bearer_token_file = "absent-token"\n')
    worker = WorkerProcess(settings, tmp_path, group_id,
                           extra_env={"PROVISIONING_ROUTING_FILE": str(routing)}).start()
    try:
        wait_until(lambda: not worker.alive(), 60, "the worker's exit")
    finally:
        worker.kill()
    assert worker.process is not None and worker.process.returncode == 2
    log = worker.log_text()
    assert ("provisioning: routing: steps.'tenant.create-admin-role': bearer_token_file "
            f"'{tmp_path / 'absent-token'}' cannot be read: No such file or directory") in log
    assert "Traceback" not in log
    assert os.path.exists(routing)
