"""The REST API on loopback, with a real worker, projector, broker and database behind it.

One stack (worker, projector, API on their own topic prefix) serves the module; every test
makes its own requestIds, entities and tenants, so tests do not see each other's requests.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import invalid_commands
import pytest
import sqlalchemy as sa
from confluent_kafka.admin import AdminClient
from harness import ServiceProcess, WorkerProcess, free_port, undo_answered, wait_until

from api.auth import ALL_PERMISSIONS, READ, issue_token
from consumer.commands import unflatten
from consumer.participants.builtin.registry import add_entity
from provisioning.devservices.signing_key import KEY_ID, DevSigningKey
from provisioning.settings import Settings
from provisioning.topics import TopicLayout, create_topics

PREFIX = "/api/v1/provisioning"
PROBLEM = "application/problem+json"
Token = Callable[..., str]
# Service requests wait at set-rate-limits (a participant that never answers, 60 s per
# attempt), so operators have an in-flight request to act on; other workflows run built-in.
SILENT = "rate-limits-silent"
ROUTING = f"""
[steps."service.set-rate-limits"]
adapter = "kafka:{SILENT}"
attempt_timeout_s = 60
deadline_s = 600
"""


@pytest.fixture(scope="module")
def signing_key(tmp_path_factory: pytest.TempPathFactory) -> DevSigningKey:
    # Where `provisioning token` looks when PROVISIONING_DEV_DIR is this folder's parent.
    return DevSigningKey(tmp_path_factory.mktemp("dev") / "auth").ensure()


def make_token(key: DevSigningKey, subject: str = "ada", tenant: str = "platform",
               permissions: tuple[str, ...] = ALL_PERMISSIONS, ttl_s: int = 600) -> str:
    """A bearer token signed by `key`, for the issuer and audience the stacks here expect."""
    return issue_token(key.private_key_pem(), key_id=KEY_ID, issuer="provisioning-dev",
                       audience="provisioning-api", subject=subject, tenant_id=tenant,
                       permissions=permissions, ttl_s=ttl_s, now=int(time.time()))


@pytest.fixture(scope="module")
def token(signing_key: DevSigningKey) -> Token:
    return functools.partial(make_token, signing_key)


def start_api(settings: Settings, log_dir: Path, signing_key: DevSigningKey,
              max_wait_s: float = 30, extra_env: dict[str, str] | None = None,
              start_timeout_s: float = 30) -> tuple[ServiceProcess, str]:
    """`provisioning api` trusting `signing_key` (unless `extra_env` says otherwise), once it
    answers; returns the process and its URL."""
    port = free_port()
    api = ServiceProcess(settings, log_dir, ("api", "--port", str(port)), extra_env={
        "PROVISIONING_AUTH_JWKS_FILE": str(signing_key.jwks_file),
        "PROVISIONING_API_MAX_WAIT_S": str(max_wait_s),
        **(extra_env or {}),
    }).start()
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        assert api.alive(), api.log_text()[-3000:]
        try:
            return httpx.get(f"{url}/openapi.json", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_until(answers, start_timeout_s, "the API answering")
    except BaseException:
        api.kill()  # not left running behind a fixture that fails here
        raise
    return api, url


@pytest.fixture(scope="module")
def stack_settings(base_settings: Settings) -> Settings:
    return base_settings.model_copy(
        update={"topic_prefix": f"{base_settings.topic_prefix}.api{uuid.uuid4().hex[:8]}"})


@contextlib.contextmanager
def running_stack(settings: Settings, kafka_admin: AdminClient, log_dir: Path,
                  signing_key: DevSigningKey, *, routing: str | None = None,
                  participants: tuple[str, ...] = (), max_wait_s: float = 30,
                  worker_args: tuple[str, ...] = ()) -> Iterator[tuple[str, ServiceProcess]]:
    """Topics, worker, projector and API on `settings`' topic prefix; yields the API's URL and
    process, and checks on the way out that all three stopped cleanly."""
    create_topics(kafka_admin, TopicLayout(settings.topic_prefix).specs(3, list(participants)))
    extra_env = {}
    if routing is not None:
        (log_dir / "routing.toml").write_text(routing)
        extra_env["PROVISIONING_ROUTING_FILE"] = str(log_dir / "routing.toml")
    group = f"api-{uuid.uuid4().hex[:8]}"
    worker = WorkerProcess(settings, log_dir, group, extra_env=extra_env,
                           extra_args=worker_args).start()
    projector = ServiceProcess(settings, log_dir, ("projector", "--group", f"{group}-p")).start()
    started: list[ServiceProcess] = [worker, projector]
    try:
        api, url = start_api(settings, log_dir, signing_key, max_wait_s=max_wait_s)
        started.append(api)
        yield url, api
    except BaseException:
        # A module fixture's processes outlive the per-test cleanup: end them here when the
        # stack fails to start or its user fails.
        for process in started:
            process.kill()
        raise
    codes = {process.args[0]: (process.stop(), process) for process in (api, projector, worker)}
    for name, (code, process) in codes.items():
        assert code == 0, f"{name} exited {code}: {process.log_text()[-3000:]}"


@pytest.fixture(scope="module")
def stack(stack_settings: Settings, kafka_admin: AdminClient, migrated: sa.Engine,
          tmp_path_factory: pytest.TempPathFactory, signing_key: DevSigningKey
          ) -> Iterator[str]:
    """Worker, projector and API on a topic prefix of this module; yields the API's URL."""
    with running_stack(stack_settings, kafka_admin, tmp_path_factory.mktemp("stack"),
                       signing_key, routing=ROUTING, participants=(SILENT,)) as (url, _):
        yield url


@pytest.fixture
def client(stack: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack, timeout=40) as http:
        yield http


def auth(bearer: str, tenant: str | None = None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {bearer}"}
    if tenant is not None:
        headers["X-Tenant-ID"] = tenant
    return headers


def tenant_body(entity: str, **overrides: object) -> dict:
    return {"entityId": entity, "subscriptionPlan": "BUSINESS",
            "billingInfo": {"accountName": "Acme", "billingEmail": "billing@acme.example",
                            "currency": "EUR"}, **overrides}


def new_entity(engine: sa.Engine) -> str:
    entity = f"api-{uuid.uuid4().hex[:10]}"
    add_entity(engine, entity, entity)
    return entity


def new_tenant(client: httpx.Client, token: Token, engine: sa.Engine) -> str:
    """A real tenant, provisioned through the API; returns its id."""
    answer = client.post(f"{PREFIX}/tenant?wait=30", json=tenant_body(new_entity(engine)),
                         headers=auth(token()))
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "COMPLETED", answer.json()
    return answer.json()["resourceId"]


def assert_problem(answer: httpx.Response, status: int, detail: str) -> None:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith(PROBLEM)
    body = answer.json()
    assert body["status"] == status and detail in body["detail"], body


# --- submitting ---------------------------------------------------------------------------------


def test_submit_returns_202_with_a_request_id_and_the_request_completes(
    client: httpx.Client, token: Token, migrated: sa.Engine
) -> None:
    answer = client.post(f"{PREFIX}/tenant", json=tenant_body(new_entity(migrated)),
                         headers=auth(token()))
    assert answer.status_code == 202, answer.text
    accepted = answer.json()
    request_id = accepted["requestId"]
    assert uuid.UUID(request_id) and accepted["status"] == "PENDING"
    assert answer.headers["location"] == f"{PREFIX}/{request_id}/status"

    def completed() -> dict | None:
        status = client.get(accepted["statusUrl"], headers=auth(token(), "platform")).json()
        return status if status["status"] == "COMPLETED" else None

    status = wait_until(completed, 30, "the tenant request completing")
    assert status["completedSteps"] == ["validate-entity", "create-tenant", "setup-billing",
                                        "activate-services", "create-admin-role"]
    assert status["resourceId"] == status["tenantId"]


def test_waiting_returns_the_final_result_as_soon_as_it_is_projected(
    client: httpx.Client, token: Token, migrated: sa.Engine
) -> None:
    started = time.monotonic()
    answer = client.post(f"{PREFIX}/tenant?wait=30", json=tenant_body(new_entity(migrated)),
                         headers=auth(token()))
    took = time.monotonic() - started
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "COMPLETED" and answer.json()["finishedAt"]
    assert took < 10, f"waited {took:.1f} s"


def test_a_failed_request_waits_to_its_failure_and_can_be_retried(
    client: httpx.Client, token: Token, migrated: sa.Engine
) -> None:
    tenant = new_tenant(client, token, migrated)
    caller = auth(token(tenant=tenant), tenant)
    over_quota = {"serviceName": "CoreService", "resourceType": "DATABASE",
                  "resourceSpec": {"sizeGb": "100000"}}
    failed = client.post(f"{PREFIX}/resource?wait=30", json=over_quota, headers=caller).json()
    assert (failed["status"], failed["failedStep"], failed["run"]) == (
        "FAILED", "check-quota", 1)
    assert "quota" in failed["reason"]

    retried = client.post(f"{PREFIX}/{failed['requestId']}/retry", headers=caller)
    assert retried.status_code == 202, retried.text
    assert retried.json()["status"] == "PENDING"

    def second_run_done() -> dict | None:
        status = client.get(f"{PREFIX}/{failed['requestId']}/status", headers=caller).json()
        return status if status["run"] == 2 and status["status"] == "FAILED" else None

    assert wait_until(second_run_done, 30, "the second run failing")["failedStep"] == "check-quota"
    not_failed = client.post(f"{PREFIX}/{failed['requestId']}/retry", headers=caller)
    assert not_failed.status_code in (202, 409)


def test_a_retry_of_a_request_that_did_not_fail_is_a_conflict(
    client: httpx.Client, token: Token, migrated: sa.Engine
) -> None:
    done = client.post(f"{PREFIX}/tenant?wait=30", json=tenant_body(new_entity(migrated)),
                       headers=auth(token())).json()
    answer = client.post(f"{PREFIX}/{done['requestId']}/retry", headers=auth(token(), "platform"))
    assert_problem(answer, 409, "only FAILED requests can be retried")


def test_the_same_request_id_with_another_body_is_a_409_and_with_the_same_body_a_202(
    client: httpx.Client, token: Token, migrated: sa.Engine
) -> None:
    request_id = str(uuid.uuid4())
    body = tenant_body(new_entity(migrated), requestId=request_id)
    first = client.post(f"{PREFIX}/tenant", json=body, headers=auth(token()))
    assert first.status_code == 202 and first.json()["requestId"] == request_id

    other = client.post(f"{PREFIX}/tenant", json={**body, "subscriptionPlan": "FREE"},
                        headers=auth(token()))
    assert_problem(other, 409, f"requestId {request_id} was already used")

    # Running: 202 with its status; done: 200 with its result (see test_promises.py).
    again = client.post(f"{PREFIX}/tenant", json=body, headers=auth(token()))
    assert again.status_code in (200, 202) and again.json()["requestId"] == request_id


API_BODIES = {
    "ProvisionTenantRequest": ("tenant", tenant_body("api-invalid-entity")),
    "ProvisionServiceRequest": ("service", {"serviceName": "CartService", "slaTier": "GOLD"}),
    "ProvisionUserRequest": ("user", {"email": "jane@acme.example", "roleName": "member"}),
    "ProvisionResourceRequest": ("resource", {
        "serviceName": "CartService", "resourceType": "DATABASE",
        "resourceSpec": {"sizeGb": "5", "name": "carts"}}),
}


@pytest.mark.parametrize("row", invalid_commands.rows(invalid_commands.API), ids=str)
def test_the_api_refuses_each_invalid_command_of_the_table_with_422(
    client: httpx.Client, token: Token, row: invalid_commands.InvalidCommand,
) -> None:
    workflow, body = API_BODIES[row.record]
    changed = json.loads(json.dumps(body))
    for name, value in unflatten(row.changes).items():
        changed[name] = {**changed.get(name, {}), **value} if isinstance(value, dict) else value
    tenant = None if workflow == "tenant" else "platform"

    answer = client.post(f"{PREFIX}/{workflow}", json=changed, headers=auth(token(), tenant))

    assert_problem(answer, 422, row.says)


def test_the_audit_trail_lists_every_event_once_in_order(
    client: httpx.Client, token: Token, migrated: sa.Engine
) -> None:
    done = client.post(f"{PREFIX}/tenant?wait=30", json=tenant_body(new_entity(migrated)),
                       headers=auth(token())).json()
    trail = client.get(f"{PREFIX}/{done['requestId']}/events", headers=auth(token(), "platform"))
    assert trail.status_code == 200, trail.text
    events = trail.json()["events"]
    assert [e["sequence"] for e in events] == list(range(1, len(events) + 1))
    assert events[0]["type"] == "ProvisioningRequested"
    assert events[-1]["type"] == "ProvisioningSucceeded"
    assert events[0]["details"]["params"]["subscriptionPlan"] == "BUSINESS"
    started = [e["step"] for e in events if e["type"] == "ProvisioningStepStarted"]
    assert started == done["completedSteps"]


# --- authentication and isolation --------------------------------------------------------------


def test_missing_expired_and_forged_tokens_get_401(
    client: httpx.Client, token: Token, tmp_path: Path
) -> None:
    url = f"{PREFIX}/{uuid.uuid4()}/status"
    missing = client.get(url, headers={"X-Tenant-ID": "platform"})
    assert_problem(missing, 401, "bearer token is required")
    assert missing.headers["www-authenticate"].startswith("Bearer")

    expired = client.get(url, headers=auth(token(ttl_s=-120), "platform"))
    assert_problem(expired, 401, "expired")

    forger = DevSigningKey(tmp_path).ensure()
    forged = issue_token(forger.private_key_pem(), key_id=KEY_ID, issuer="provisioning-dev",
                         audience="provisioning-api", subject="mallory", tenant_id="platform",
                         permissions=ALL_PERMISSIONS, ttl_s=60, now=int(time.time()))
    assert_problem(client.get(url, headers=auth(forged, "platform")), 401, "not valid")
    assert_problem(client.post(f"{PREFIX}/tenant", json={}, headers={}), 401, "bearer")


def test_another_tenants_request_is_404_for_status_events_and_retry(
    client: httpx.Client, token: Token, migrated: sa.Engine
) -> None:
    tenant = new_tenant(client, token, migrated)
    mine = auth(token(tenant=tenant), tenant)
    user = client.post(f"{PREFIX}/user?wait=30", headers=mine,
                       json={"email": "grace@acme.example", "roleName": "member"}).json()
    assert user["status"] == "COMPLETED", user
    request_id = user["requestId"]

    stranger = auth(token(subject="eve", tenant="other-tenant"), "other-tenant")
    for method, what in (("GET", "status"), ("GET", "events"), ("POST", "retry")):
        answer = client.request(method, f"{PREFIX}/{request_id}/{what}", headers=stranger)
        assert_problem(answer, 404, f"no request {request_id}")
    # A stranger learns exactly what an unknown id tells: nothing about the request.
    unknown_id = str(uuid.uuid4())
    unknown = client.get(f"{PREFIX}/{unknown_id}/status", headers=mine)
    assert_problem(unknown, 404, f"no request {unknown_id} is visible to this caller")
    assert answer.json()["detail"] == f"no request {request_id} is visible to this caller"
    assert client.get(f"{PREFIX}/{request_id}/status", headers=mine).status_code == 200


def test_the_tenant_header_is_required_and_must_match_the_token(
    client: httpx.Client, token: Token
) -> None:
    body = {"serviceName": "CartService", "slaTier": "GOLD"}
    assert_problem(client.post(f"{PREFIX}/service", json=body, headers=auth(token("ada", "t1"))),
                   400, "X-Tenant-ID header is required")
    assert_problem(client.post(f"{PREFIX}/service", json=body,
                               headers=auth(token("ada", "t1"), "t2")),
                   403, "not the tenant of the token")
    assert_problem(client.post(f"{PREFIX}/service", json={**body, "tenantId": "t2"},
                               headers=auth(token("ada", "t1"), "t1")),
                   400, "differs from the X-Tenant-ID")
    assert_problem(client.get(f"{PREFIX}/{uuid.uuid4()}/status", headers=auth(token())),
                   400, "X-Tenant-ID header is required")


def test_a_token_without_the_permission_is_403(client: httpx.Client, token: Token) -> None:
    reader = token(permissions=(READ,))
    assert_problem(client.post(f"{PREFIX}/tenant", json=tenant_body("x"), headers=auth(reader)),
                   403, "provisioning:submit")
    assert_problem(client.post(f"{PREFIX}/{uuid.uuid4()}/retry", headers=auth(reader, "platform")),
                   403, "provisioning:retry")


# --- input validation ---------------------------------------------------------------------------


@pytest.mark.parametrize("workflow, body, field", [
    ("tenant", {"entityId": "e", "subscriptionPlan": "GIGANTIC",
                "billingInfo": {"accountName": "A", "billingEmail": "a@b.example",
                                "currency": "EUR"}}, "subscriptionPlan"),
    ("tenant", {"entityId": "e", "subscriptionPlan": "FREE",
                "billingInfo": {"accountName": "A", "billingEmail": "not-an-email",
                                "currency": "EUR"}}, "billingEmail"),
    ("user", {"email": "a@b.example", "roleName": "member", "isAdmin": True}, "isAdmin"),
    ("resource", {"serviceName": "CoreService", "resourceType": "DATABASE",
                  "resourceSpec": {f"k{i}": "v" for i in range(40)}}, "resourceSpec"),
    ("service", {"serviceName": "x" * 500, "slaTier": "GOLD"}, "serviceName"),
    ("user", {"requestId": "not-a-uuid", "email": "a@b.example", "roleName": "m"}, "requestId"),
])
def test_invalid_bodies_get_422_naming_the_field(
    client: httpx.Client, token: Token, workflow: str, body: dict, field: str
) -> None:
    answer = client.post(f"{PREFIX}/{workflow}", json=body, headers=auth(token(), "platform"))
    assert_problem(answer, 422, field)
    assert any(field in e["field"] for e in answer.json()["errors"])


def test_a_malformed_request_id_in_the_path_is_422_and_openapi_is_served(
    client: httpx.Client, token: Token
) -> None:
    assert_problem(client.get(f"{PREFIX}/not-a-uuid/status", headers=auth(token(), "platform")),
                   422, "request_id")
    paths = client.get("/openapi.json").json()["paths"]
    for workflow in ("tenant", "service", "user", "resource"):
        assert "post" in paths[f"{PREFIX}/{workflow}"]
    assert {f"{PREFIX}/{{request_id}}/{what}" for what in ("status", "events", "retry")} <= set(
        paths)


# --- read-your-writes, on a stack without a worker ---------------------------------------------


def test_an_accepted_request_is_visible_at_once_as_pending(
    settings: Settings, topics: TopicLayout, migrated: sa.Engine, tmp_path: Path,
    signing_key: DevSigningKey, token: Token,
) -> None:
    api, url = start_api(settings, tmp_path, signing_key)  # no worker: nothing moves it on
    try:
        with httpx.Client(base_url=url, timeout=10) as http:
            accepted = http.post(f"{PREFIX}/user", headers=auth(token(tenant="t-9"), "t-9"),
                                 json={"email": "ada@acme.example", "roleName": "member"})
            assert accepted.status_code == 202, accepted.text
            status = http.get(accepted.json()["statusUrl"], headers=auth(token(tenant="t-9"),
                                                                        "t-9"))
            assert status.status_code == 200, status.text
            assert status.json()["status"] == "PENDING"
            assert status.json()["tenantId"] == "t-9" and status.json()["run"] == 1
            waited = http.post(f"{PREFIX}/user?wait=1", headers=auth(token(tenant="t-9"), "t-9"),
                               json={"email": "bob@acme.example", "roleName": "member"})
            assert waited.status_code == 202 and waited.json()["status"] == "PENDING"
    finally:
        assert api.stop() == 0, api.log_text()[-3000:]


# --- operators -----------------------------------------------------------------------------------


def test_an_operator_cancels_an_in_flight_request_through_the_api(
    client: httpx.Client, token: Token, migrated: sa.Engine, stack_settings: Settings
) -> None:
    tenant = new_tenant(client, token, migrated)
    owner = auth(token(tenant=tenant), tenant)
    service = client.post(f"{PREFIX}/service", headers=owner,
                          json={"serviceName": "CartService", "slaTier": "GOLD"}).json()
    request_id = service["requestId"]

    def waiting() -> bool:
        status = client.get(f"{PREFIX}/{request_id}/status", headers=owner).json()
        return status["currentStep"] == "set-rate-limits"

    wait_until(waiting, 30, "the service request waiting at set-rate-limits")
    url = f"{PREFIX}/{request_id}/cancel"
    assert_problem(client.post(url, headers=owner, json={"reason": "x"}), 403,
                   "provisioning:operate")

    operator = auth(token(subject="ops-grace", tenant="platform-ops",
                          permissions=("provisioning:operate", "provisioning:read")),
                    "platform-ops")
    accepted = client.post(url, headers=operator, json={"reason": "wrong tier"})
    assert accepted.status_code == 202, accepted.text

    def failed() -> dict | None:
        status = client.get(f"{PREFIX}/{request_id}/status", headers=owner).json()
        return status if status["status"] == "FAILED" else None

    status = undo_answered(stack_settings, SILENT, "set-rate-limits", failed, 30,
                           "the cancelled request failing")
    assert status["reason"] == "cancelled by ops-grace: wrong tier"
    assert status["compensatedSteps"] == ["set-rate-limits", "init-resources",
                                          "create-subscription"]
    trail = client.get(f"{PREFIX}/{request_id}/events", headers=operator).json()["events"]
    audit = [e for e in trail if e["type"] == "ProvisioningOperatorAction"]
    assert audit[0]["details"] == {"operator": "ops-grace", "action": "CANCEL",
                                   "reason": "wrong tier"}
    assert_problem(client.post(url, headers=operator), 409, "is FAILED")


# --- the CLI, against the same API ---------------------------------------------------------------


def cli(stack: str, signing_key: DevSigningKey, *args: str, token: str | None = None
        ) -> subprocess.CompletedProcess:
    env = {**os.environ, "PROVISIONING_API_URL": stack,
           "PROVISIONING_DEV_DIR": str(signing_key.folder.parent)}
    env.pop("PROVISIONING_API_TOKEN", None)
    if token:
        env["PROVISIONING_API_TOKEN"] = token
    return subprocess.run([sys.executable, "-m", "provisioning.cli", *args], env=env,
                          capture_output=True, text=True, timeout=60)


def test_the_cli_submits_follows_and_retries_requests(
    stack: str, signing_key: DevSigningKey, migrated: sa.Engine
) -> None:
    issued = cli(stack, signing_key, "token", "--subject", "ada", "--tenant", "platform")
    assert issued.returncode == 0, issued.stderr
    platform_token = issued.stdout.strip()

    submitted = cli(stack, signing_key, "submit", "tenant", f"entityId={new_entity(migrated)}",
                    "subscriptionPlan=STARTER", "billingInfo.accountName=Acme",
                    "billingInfo.billingEmail=billing@acme.example", "billingInfo.currency=EUR",
                    "--wait", "30", "--json", token=platform_token)
    assert submitted.returncode == 0, submitted.stderr
    tenant_request = json.loads(submitted.stdout)
    assert tenant_request["status"] == "COMPLETED"
    tenant = tenant_request["tenantId"]

    shown = cli(stack, signing_key, "status", tenant_request["requestId"], token=platform_token)
    assert shown.returncode == 0 and "COMPLETED" in shown.stdout and tenant in shown.stdout
    timeline = cli(stack, signing_key, "events", tenant_request["requestId"],
                   token=platform_token)
    assert timeline.returncode == 0, timeline.stderr
    lines = timeline.stdout.splitlines()
    assert "Requested" in lines[1] and "Succeeded" in lines[-1]
    assert any("validate-entity #1" in line for line in lines)

    tenant_token = cli(stack, signing_key, "token", "--subject", "ada", "--tenant", tenant
                       ).stdout.strip()
    failed = cli(stack, signing_key, "submit", "resource", "serviceName=CoreService",
                 "resourceType=STORAGE", "resourceSpec.sizeGb=99999", "--wait", "30", "--json",
                 token=tenant_token)
    assert json.loads(failed.stdout)["status"] == "FAILED", failed.stdout + failed.stderr
    retried = cli(stack, signing_key, "retry", json.loads(failed.stdout)["requestId"],
                  token=tenant_token)
    assert retried.returncode == 0 and "retrying" in retried.stdout, retried.stderr

    missing = cli(stack, signing_key, "status", str(uuid.uuid4()), token=tenant_token)
    assert missing.returncode == 2 and "404" in missing.stderr
    assert "Traceback" not in missing.stderr
    no_token = cli(stack, signing_key, "status", str(uuid.uuid4()))
    assert no_token.returncode == 2 and "PROVISIONING_API_TOKEN" in no_token.stderr


def test_oversized_bodies_are_refused_with_413(client: httpx.Client, token: Token) -> None:
    huge = tenant_body("e", tenantName="x" * 100_000)
    answer = client.post(f"{PREFIX}/tenant", json=huge, headers=auth(token()))
    assert_problem(answer, 413, "over 65536 bytes")

    def chunks():  # no Content-Length: the stream itself is counted
        for _ in range(100):
            yield b"x" * 1024

    streamed = client.post(f"{PREFIX}/tenant", content=chunks(),
                           headers={**auth(token()), "Content-Type": "application/json"})
    assert_problem(streamed, 413, "over 65536 bytes")
