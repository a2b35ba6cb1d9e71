"""How a failed run is classed for alerts: a business rule's "no" is not a system failure.

Each run is driven through `decide` to its end; the class comes from its final state (failed
step and reason), as the worker's observer computes it from the ProvisioningFailedEvent.
"""

from __future__ import annotations

import pytest
from saga_driver import Script, command, drive, ok, permanent, silence, transient

from sagas import DEFAULT_REGISTRY, OperatorCancel, Status
from sagas.outcomes import CANCELLED, FAILED, REFUSED, RunOutcome, failed_run


def ended(workflow_type: str, script: Script) -> RunOutcome:
    trace = drive(command(workflow_type), script)
    state = trace.saga
    assert state.status is Status.FAILED
    return failed_run(DEFAULT_REGISTRY.latest(workflow_type), state.failed_step,
                      state.reason or "")


@pytest.mark.parametrize(("workflow_type", "step"), [
    ("tenant", "validate-entity"), ("service", "validate-tenant"),
    ("service", "check-availability"), ("user", "validate-permission"),
    ("resource", "validate-subscription"), ("resource", "check-quota"),
])
def test_a_refusal_at_a_step_that_only_checks_is_a_business_rule(
        workflow_type: str, step: str) -> None:
    assert ended(workflow_type, Script({step: permanent("over quota")})) == RunOutcome(
        REFUSED, "refused")


@pytest.mark.parametrize(("workflow_type", "step"), [
    ("tenant", "create-tenant"), ("service", "create-subscription"),
    ("user", "add-to-tenant"), ("resource", "allocate-resource"),
])
def test_a_refusal_at_a_step_that_changes_something_is_a_failure(
        workflow_type: str, step: str) -> None:
    assert ended(workflow_type, Script({step: permanent("disk full")})) == RunOutcome(
        FAILED, "participant_refused")


def test_spent_retries_of_a_check_are_a_system_failure_not_a_refusal() -> None:
    script = Script({"check-quota": transient("quota service down")})
    assert ended("resource", script) == RunOutcome(FAILED, "retries_exhausted")


def test_a_participant_that_never_answers_is_a_system_failure() -> None:
    # Four attempts of 10 s each fit in the step's 60 s deadline: the retries run out first.
    assert ended("tenant", Script({"validate-entity": silence()})) == RunOutcome(
        FAILED, "retries_exhausted")


def test_an_operator_cancel_is_its_own_class() -> None:
    started = drive(command("tenant"), Script({"setup-billing": silence()}))
    running = next(t.after for t in started.turns if t.after.current_step == "setup-billing")
    trace = drive(OperatorCancel(request_id="req-1", operator="alice", reason="wrong plan"),
                  state=running, at=running.updated_at + 5)
    state = trace.saga
    assert failed_run(DEFAULT_REGISTRY.latest("tenant"), state.failed_step,
                      state.reason or "") == RunOutcome(CANCELLED, "cancelled")


def test_a_success_without_the_result_id_breaks_the_contract() -> None:
    outcome = ended("tenant", Script({"create-tenant": ok(name="acme")}))
    assert outcome == RunOutcome(FAILED, "contract_broken")
