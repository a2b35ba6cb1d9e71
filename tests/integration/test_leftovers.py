"""Leftovers on the real stack: a compensation that gives up is counted, shown by the status
API, the provisioning_needs_attention view and `provisioning top`; an operator's re-attempt
runs it again under the same idempotency key and clears it, resolving by hand clears it too,
and both are audited.

Tenant sagas run activate-services on a Kafka participant of this module, which refuses to
act (a transient failure, no retries) and whose undo fails (no compensation retries) until the
test lets it work: activate-services is a leftover, setup-billing and create-tenant are undone.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime

import httpx
import pytest
import sqlalchemy as sa
from confluent_kafka.admin import AdminClient
from harness import free_port, wait_until
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from test_api import (
    PREFIX,
    assert_problem,
    auth,
    cli,
    make_token,
    new_entity,
    running_stack,
    tenant_body,
)

from producers.participant import StepParticipant, StepRequest
from provisioning.devservices.signing_key import DevSigningKey
from provisioning.settings import Settings
from provisioning.top import render_frame

PARTICIPANT = "subscriptions-flaky"
STEP = "activate-services"
ROUTING = f"""
[steps."tenant.{STEP}"]
adapter = "kafka:{PARTICIPANT}"
attempt_timeout_s = 10
retry = {{ max_retries = 0 }}
compensation_retry = {{ max_retries = 0 }}
"""
# What the participant's failures become (producers/participant.py: the exception's type and
# text; the saga adds how many attempts it made).
STEP_REASON = "RuntimeError: subscriptions unavailable (gave up after 1 attempts)"
UNDO_REASON = "RuntimeError: subscriptions undo unavailable (gave up after 1 attempts)"


@dataclass
class FlakySubscriptions:
    """The participant's memory: every undo it was asked for, and whose undo works now."""

    undo_works_for: set[str] = field(default_factory=set)
    undo_calls: list[tuple[str, int, str]] = field(default_factory=list)  # id, attempt, key

    def undos_of(self, request_id: str) -> list[tuple[int, str]]:
        return [(attempt, key) for rid, attempt, key in self.undo_calls if rid == request_id]


@dataclass
class Stack:
    url: str
    metrics_url: str
    settings: Settings
    signing_key: DevSigningKey
    subscriptions: FlakySubscriptions
    http: httpx.Client

    def token(self, **claims: object) -> str:
        return make_token(self.signing_key, **claims)

    @property
    def operator(self) -> dict[str, str]:
        return auth(self.token(subject="ops-grace", tenant="platform-ops",
                               permissions=("provisioning:operate", "provisioning:read")),
                    "platform-ops")

    @property
    def platform(self) -> dict[str, str]:
        return auth(self.token(), "platform")


@pytest.fixture(scope="module")
def stack(base_settings: Settings, kafka_admin: AdminClient, migrated: sa.Engine,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    settings = base_settings.model_copy(
        update={"topic_prefix": f"{base_settings.topic_prefix}.left{uuid.uuid4().hex[:8]}"})
    signing_key = DevSigningKey(tmp_path_factory.mktemp("dev") / "auth").ensure()
    metrics_port = free_port()
    with running_stack(settings, kafka_admin, tmp_path_factory.mktemp("leftovers"), signing_key,
                       routing=ROUTING, participants=(PARTICIPANT,),
                       worker_args=("--metrics-port", str(metrics_port))) as (url, _):
        subscriptions = FlakySubscriptions()
        stop = threading.Event()
        participant = threading.Thread(target=_serve, args=(settings, subscriptions, stop),
                                       daemon=True)
        participant.start()
        with httpx.Client(base_url=url, timeout=40) as http:
            yield Stack(url, f"http://127.0.0.1:{metrics_port}", settings, signing_key,
                        subscriptions, http)
        stop.set()
        participant.join(30)


def _serve(settings: Settings, subscriptions: FlakySubscriptions, stop: threading.Event
           ) -> None:
    participant = StepParticipant(settings, PARTICIPANT, group_id=f"flaky-{uuid.uuid4().hex}")

    @participant.step(STEP)
    def activate(request: StepRequest) -> None:
        raise RuntimeError("subscriptions unavailable")

    @participant.compensation(STEP)
    def deactivate(request: StepRequest) -> None:
        subscriptions.undo_calls.append((request.request_id, request.attempt,
                                         request.idempotency_key))
        if request.request_id not in subscriptions.undo_works_for:
            raise RuntimeError("subscriptions undo unavailable")

    try:
        participant.run(stop)
    finally:
        participant.close()


def compensation_failures(stack: Stack) -> float:
    # The worker serves its metrics a moment after the stack answers (the API is what the
    # stack waits for): the first read waits for the port to open.
    def metrics() -> str | None:
        try:
            return httpx.get(f"{stack.metrics_url}/metrics", timeout=5).text
        except httpx.ConnectError:
            return None

    text = wait_until(metrics, 30, "the worker's metrics port", interval_s=0.2)
    return sum(s.value for family in text_string_to_metric_families(text)
               for s in family.samples
               if s.name == "provisioning_compensation_failures_total"
               and s.labels == {"workflow_type": "tenant", "step": STEP})


def failed_with_a_leftover(stack: Stack, migrated: sa.Engine) -> tuple[str, dict, dict]:
    """A tenant request through the API that ends FAILED with activate-services left over;
    returns its id, the body it was sent with and its status."""
    body = tenant_body(new_entity(migrated))
    answer = stack.http.post(f"{PREFIX}/tenant", json=body, headers=stack.platform)
    assert answer.status_code == 202, answer.text
    request_id = answer.json()["requestId"]

    def failed() -> dict | None:
        status = stack.http.get(f"{PREFIX}/{request_id}/status", headers=stack.platform).json()
        return status if status["status"] == "FAILED" else None

    return request_id, body, wait_until(failed, 60, "the tenant request failing")


def needs_attention(migrated: sa.Engine, request_id: str) -> dict | None:
    with migrated.connect() as conn:
        row = conn.execute(sa.text("SELECT * FROM provisioning_needs_attention "
                                   "WHERE request_id = :id"), {"id": request_id}).first()
    return None if row is None else dict(row._mapping)


def trail(stack: Stack, request_id: str) -> list[dict]:
    return stack.http.get(f"{PREFIX}/{request_id}/events", headers=stack.operator
                          ).json()["events"]


def test_a_given_up_compensation_shows_everywhere_and_a_re_attempt_clears_it(
    stack: Stack, migrated: sa.Engine
) -> None:
    counted_before = compensation_failures(stack)
    request_id, body, status = failed_with_a_leftover(stack, migrated)

    # The status API: the run's failure, what was undone, and the leftover with its reason.
    assert (status["failedStep"], status["reason"]) == (STEP, STEP_REASON)
    assert status["compensatedSteps"] == ["setup-billing", "create-tenant"]
    [leftover] = status["uncompensatedSteps"]
    assert (leftover["step"], leftover["reason"]) == (STEP, UNDO_REASON)
    # The metric, once for this request's give-up.
    assert compensation_failures(stack) == counted_before + 1
    # The view.
    row = needs_attention(migrated, request_id)
    assert row is not None
    assert (row["workflow_type"], row["tenant_id"], row["status"]) == (
        "tenant", status["tenantId"], "FAILED")
    assert (row["steps"], row["reasons"]) == ([STEP], {STEP: UNDO_REASON})
    assert row["since"] == datetime.fromisoformat(leftover["since"])
    # `provisioning top`.
    console = Console(record=True, width=250)
    console.print(render_frame(migrated))
    frame = console.export_text()
    assert "Needs attention" in frame and request_id in frame and UNDO_REASON in frame
    # The CLI's status shows it too.
    shown = cli(stack.url, stack.signing_key, "status", request_id, token=stack.token())
    assert shown.returncode == 0 and f"uncompensated {STEP}" in shown.stdout, shown.stderr

    # Nothing runs it again while the leftover is there.
    assert_problem(stack.http.post(f"{PREFIX}/{request_id}/retry", headers=stack.platform),
                   409, f"left {STEP} uncompensated")
    assert_problem(stack.http.post(f"{PREFIX}/tenant", headers=stack.platform,
                                   json={**body, "requestId": request_id}),
                   409, f"left {STEP} uncompensated")
    assert_problem(stack.http.post(f"{PREFIX}/{request_id}/recompensate",
                                   headers=stack.operator, json={"step": "create-tenant"}),
                   409, "recompensate needs a FAILED request with create-tenant uncompensated")
    assert_problem(stack.http.post(f"{PREFIX}/{request_id}/recompensate",
                                   headers=stack.platform, json={"step": STEP}),
                   403, "provisioning:operate")

    # The participant works again: the operator re-attempts the undo with the CLI.
    stack.subscriptions.undo_works_for.add(request_id)
    sent = cli(stack.url, stack.signing_key, "recompensate", request_id, "--step", STEP,
               "--reason", "subscriptions is back", token=stack.token(
                   subject="ops-grace", tenant="platform-ops",
                   permissions=("provisioning:operate", "provisioning:read")))
    assert sent.returncode == 0 and "recompensate" in sent.stdout, sent.stderr

    def cleared() -> dict | None:
        status = stack.http.get(f"{PREFIX}/{request_id}/status", headers=stack.platform).json()
        return status if STEP in status["compensatedSteps"] else None

    after = wait_until(cleared, 60, "the re-attempted undo")
    assert after["status"] == "FAILED" and after["uncompensatedSteps"] == []
    assert (after["failedStep"], after["reason"]) == (STEP, STEP_REASON)
    assert after["finishedAt"] == status["finishedAt"]
    # A new attempt under the same idempotency key.
    key = f"{request_id}:1:{STEP}"
    assert stack.subscriptions.undos_of(request_id) == [(1, key), (2, key)]
    events = trail(stack, request_id)
    at = next(i for i, e in enumerate(events) if e["type"] == "ProvisioningOperatorAction")
    assert (events[at]["step"], events[at]["details"]) == (STEP, {
        "operator": "ops-grace", "action": "RECOMPENSATE", "reason": "subscriptions is back"})
    assert [(e["type"], e["step"], e["attempt"]) for e in events[at + 1:]] == [
        ("ProvisioningCompensationStarted", STEP, 2), ("ProvisioningStepCompensated", STEP, 2)]
    assert [e["type"] for e in events].count("ProvisioningFailedEvent") == 1
    assert needs_attention(migrated, request_id) is None
    assert compensation_failures(stack) == counted_before + 1


def test_resolving_a_leftover_by_hand_clears_it_and_is_audited(
    stack: Stack, migrated: sa.Engine
) -> None:
    request_id, _, status = failed_with_a_leftover(stack, migrated)
    assert [x["step"] for x in status["uncompensatedSteps"]] == [STEP]
    assert needs_attention(migrated, request_id) is not None
    url = f"{PREFIX}/{request_id}/resolve"
    assert_problem(stack.http.post(url, headers=stack.operator, json={"step": STEP}), 422,
                   "reason")

    answer = stack.http.post(url, headers=stack.operator,
                             json={"step": STEP, "reason": "subscription removed by hand"})
    assert answer.status_code == 202, answer.text

    def cleared() -> dict | None:
        status = stack.http.get(f"{PREFIX}/{request_id}/status", headers=stack.platform).json()
        return status if not status["uncompensatedSteps"] else None

    after = wait_until(cleared, 60, "the leftover resolved")
    assert after["status"] == "FAILED" and STEP not in after["compensatedSteps"]
    events = trail(stack, request_id)
    assert (events[-1]["type"], events[-1]["step"], events[-1]["details"]) == (
        "ProvisioningOperatorAction", STEP, {"operator": "ops-grace", "action": "RESOLVE",
                                             "reason": "subscription removed by hand"})
    assert needs_attention(migrated, request_id) is None
    # Resolved means nobody undid it: the participant was asked once, by the saga.
    assert len(stack.subscriptions.undos_of(request_id)) == 1
    # A second resolve finds nothing to resolve.
    assert_problem(stack.http.post(url, headers=stack.operator,
                                   json={"step": STEP, "reason": "again"}), 409,
                   "uncompensated: none")
    printed = cli(stack.url, stack.signing_key, "events", request_id, "--json",
                  token=stack.token())
    assert json.loads(printed.stdout)["events"][-1]["details"]["action"] == "RESOLVE"
