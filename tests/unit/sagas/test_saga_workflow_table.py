"""The workflow table (DESIGN.md section 5), retry policies and the registry of versions."""

from __future__ import annotations

import dataclasses

import pytest

from sagas import (
    DEFAULT_REGISTRY,
    TENANT_V1,
    RetryPolicy,
    Step,
    UnknownWorkflow,
    Workflow,
    WorkflowRegistry,
)

TABLE = {
    "tenant": ("validate-entity", "create-tenant", "setup-billing", "activate-services",
               "create-admin-role"),
    "service": ("validate-tenant", "check-availability", "create-subscription",
                "init-resources", "set-rate-limits"),
    "user": ("validate-permission", "resolve-user", "add-to-tenant", "send-invitation",
             "init-preferences"),
    "resource": ("validate-subscription", "check-quota", "allocate-resource", "update-billing",
                 "configure-monitoring"),
}
RESOURCE_ID_FROM = {
    "tenant": ("create-tenant", "tenantId"),
    "service": ("create-subscription", "subscriptionId"),
    "user": ("resolve-user", "userId"),
    "resource": ("allocate-resource", "resourceId"),
}


@pytest.mark.parametrize("workflow_type", list(TABLE))
def test_version_1_has_the_steps_of_the_design(workflow_type: str) -> None:
    workflow = DEFAULT_REGISTRY.get(workflow_type, 1)

    assert tuple(s.name for s in workflow.steps) == TABLE[workflow_type]
    assert workflow.resource_id_from == RESOURCE_ID_FROM[workflow_type]
    assert DEFAULT_REGISTRY.latest(workflow_type) is workflow


@pytest.mark.parametrize("workflow_type", list(TABLE))
def test_only_steps_that_change_something_have_a_compensation(workflow_type: str) -> None:
    for step in DEFAULT_REGISTRY.get(workflow_type, 1).steps:
        read_only = step.name.startswith(("validate-", "check-"))
        assert (step.compensation is None) == read_only, step.name
        assert step.participant


def test_create_tenant_is_undone_by_delete_tenant() -> None:
    assert TENANT_V1.step("create-tenant").compensation == "delete-tenant"


def test_steps_default_to_the_seed_retry_policy_and_two_time_limits() -> None:
    step = TENANT_V1.step("setup-billing")

    assert step.retry == RetryPolicy(max_retries=3, initial_backoff_ms=100, multiplier=2.0)
    assert step.compensation_retry == RetryPolicy()
    assert (step.attempt_timeout_ms, step.deadline_ms) == (10_000, 60_000)


def test_seed_backoff_is_100_ms_doubling_for_3_retries() -> None:
    policy = RetryPolicy()

    assert [policy.backoff_ms(a) for a in (1, 2, 3)] == [100, 200, 400]
    assert [policy.allows_retry_after(a) for a in (1, 2, 3, 4)] == [True, True, True, False]


def test_backoff_is_capped() -> None:
    policy = RetryPolicy(
        max_retries=20, initial_backoff_ms=1_000, multiplier=3, max_backoff_ms=5_000
    )

    assert [policy.backoff_ms(a) for a in (1, 2, 3, 4)] == [1_000, 3_000, 5_000, 5_000]


@pytest.mark.parametrize("bad", [
    {"max_retries": -1}, {"initial_backoff_ms": -5}, {"multiplier": 0.5},
])
def test_nonsense_policies_are_refused(bad: dict) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**bad)


def test_a_workflow_must_name_a_step_of_its_own_for_the_resource_id() -> None:
    with pytest.raises(ValueError, match="resource id step"):
        Workflow(type="x", version=1, steps=(Step("a", "p"),), resource_id_from=("b", "id"))


def test_a_workflow_must_not_repeat_a_step() -> None:
    with pytest.raises(ValueError, match="repeats"):
        Workflow(type="x", version=1, steps=(Step("a", "p"), Step("a", "p")),
                 resource_id_from=("a", "id"))


def test_registry_keeps_versions_and_answers_the_latest() -> None:
    registry = DEFAULT_REGISTRY.copy()
    v2 = dataclasses.replace(TENANT_V1, version=2, steps=TENANT_V1.steps[:3])
    registry.register(v2)

    assert registry.latest("tenant") is v2
    assert registry.get("tenant", 1) is TENANT_V1
    assert DEFAULT_REGISTRY.latest("tenant") is TENANT_V1  # the copy did not touch the default


def test_a_changed_workflow_needs_a_new_version() -> None:
    registry = WorkflowRegistry([TENANT_V1])
    registry.register(TENANT_V1)  # the same definition again is harmless

    with pytest.raises(ValueError, match="new version"):
        registry.register(dataclasses.replace(TENANT_V1, steps=TENANT_V1.steps[:2]))


def test_unknown_workflows_are_named_in_the_error() -> None:
    with pytest.raises(UnknownWorkflow, match="no workflow of type cart"):
        DEFAULT_REGISTRY.latest("cart")
    with pytest.raises(UnknownWorkflow, match="tenant v9"):
        DEFAULT_REGISTRY.get("tenant", 9)
