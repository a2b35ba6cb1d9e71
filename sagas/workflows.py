"""The four provisioning workflows: their steps, who does each, and how each is undone.

This module is the seed's workflow table. Each step names
- its participant: a logical name (a later configuration routes it to a built-in, Kafka or HTTP
  adapter, so moving a step to a real service needs no change here);
- its compensation: the action that undoes it, or None when the step changes nothing
  (validations and checks);
- its retry policies (transient failures of the step; failures of its compensation);
- two time limits: `attempt_timeout_ms`, after which an attempt that gave no answer counts as a
  transient failure and is retried, and `deadline_ms`, counted from the step's first attempt,
  after which the step fails for good and the saga compensates.

Workflows are versioned. A run records the version it started on and finishes on it, so a
deploy that changes a workflow's steps must add a new version (`register` refuses to redefine
an existing one) and keep the old one for the sagas still running on it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from sagas.retry import RetryPolicy


@dataclass(frozen=True, slots=True)
class Step:
    """One step of a workflow. Its compensation reuses `attempt_timeout_ms` for each attempt
    and is bounded by `compensation_retry` alone: undoing has no overall deadline, since giving
    up early only leaves more for an operator to clean."""

    name: str
    participant: str
    compensation: str | None = None
    retry: RetryPolicy = RetryPolicy()
    compensation_retry: RetryPolicy = RetryPolicy()
    attempt_timeout_ms: int = 10_000
    deadline_ms: int = 60_000

    def __post_init__(self) -> None:
        if self.attempt_timeout_ms <= 0 or self.deadline_ms <= 0:
            raise ValueError(f"step {self.name}: time limits must be positive")


@dataclass(frozen=True, slots=True)
class Workflow:
    type: str
    version: int
    steps: tuple[Step, ...]
    resource_id_from: tuple[str, str]  # (step, output key) that names what was provisioned
    required_params: tuple[str, ...] = ()
    _index: dict[str, int] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        names = [s.name for s in self.steps]
        if not names:
            raise ValueError(f"workflow {self.type} v{self.version} has no steps")
        if len(set(names)) != len(names):
            raise ValueError(f"workflow {self.type} v{self.version} repeats a step name")
        if self.resource_id_from[0] not in names:
            raise ValueError(
                f"workflow {self.type} v{self.version}: resource id step "
                f"{self.resource_id_from[0]} is not one of its steps"
            )
        object.__setattr__(self, "_index", {name: i for i, name in enumerate(names)})

    @property
    def first_step(self) -> Step:
        return self.steps[0]

    def step(self, name: str) -> Step:
        return self.steps[self._index[name]]

    def has_step(self, name: str) -> bool:
        return name in self._index

    def step_after(self, name: str) -> Step | None:
        """The step that follows `name`, or None after the last one."""
        following = self._index[name] + 1
        return self.steps[following] if following < len(self.steps) else None

    def missing_params(self, params: Iterable[str]) -> list[str]:
        given = set(params)
        return [p for p in self.required_params if p not in given]


class UnknownWorkflow(KeyError):
    """No workflow of that type (and version) is registered."""

    def __str__(self) -> str:
        return str(self.args[0])


class WorkflowRegistry:
    """Workflow definitions by (type, version)."""

    def __init__(self, workflows: Iterable[Workflow] = ()) -> None:
        self._workflows: dict[tuple[str, int], Workflow] = {}
        for workflow in workflows:
            self.register(workflow)

    def register(self, workflow: Workflow) -> None:
        key = (workflow.type, workflow.version)
        existing = self._workflows.get(key)
        if existing is not None and existing != workflow:
            raise ValueError(
                f"workflow {workflow.type} v{workflow.version} is already defined differently: "
                "a changed workflow needs a new version, since sagas may be running on this one"
            )
        self._workflows[key] = workflow

    def get(self, workflow_type: str, version: int) -> Workflow:
        try:
            return self._workflows[(workflow_type, version)]
        except KeyError:
            raise UnknownWorkflow(f"no workflow {workflow_type} v{version}") from None

    def latest(self, workflow_type: str) -> Workflow:
        versions = [v for (t, v) in self._workflows if t == workflow_type]
        if not versions:
            raise UnknownWorkflow(f"no workflow of type {workflow_type}")
        return self._workflows[(workflow_type, max(versions))]

    def knows(self, workflow_type: str) -> bool:
        return any(t == workflow_type for t, _ in self._workflows)

    def __iter__(self) -> Iterator[Workflow]:
        return iter(self._workflows.values())

    def copy(self) -> WorkflowRegistry:
        return WorkflowRegistry(self)


# --- the table ---------------------------------------------------------------------------------
#
# Unless a step says otherwise: transient failures of the step and of its compensation are
# retried 3 times after 100, 200 and 400 ms (`RetryPolicy()`); an attempt is waited for 10 s;
# the step fails for good 60 s after its first attempt started.

TENANT_V1 = Workflow(
    type="tenant",
    version=1,
    steps=(
        Step("validate-entity", participant="entity-management"),
        Step("create-tenant", participant="entity-management", compensation="delete-tenant"),
        Step("setup-billing", participant="billing", compensation="delete-billing-account"),
        Step("activate-services", participant="subscriptions", compensation="deactivate-services"),
        Step("create-admin-role", participant="identity", compensation="delete-admin-role"),
    ),
    resource_id_from=("create-tenant", "tenantId"),
    required_params=(
        "entityId",
        "subscriptionPlan",
        "billingInfo.accountName",
        "billingInfo.billingEmail",
        "billingInfo.currency",
    ),
)

SERVICE_V1 = Workflow(
    type="service",
    version=1,
    steps=(
        Step("validate-tenant", participant="entity-management"),
        Step("check-availability", participant="subscriptions"),
        Step(
            "create-subscription", participant="subscriptions",
            compensation="cancel-subscription",
        ),
        Step("init-resources", participant="resources", compensation="release-service-resources"),
        Step("set-rate-limits", participant="rate-limits", compensation="remove-rate-limits"),
    ),
    resource_id_from=("create-subscription", "subscriptionId"),
    required_params=("tenantId", "serviceName", "slaTier"),
)

USER_V1 = Workflow(
    type="user",
    version=1,
    steps=(
        Step("validate-permission", participant="identity"),
        # Creates the user when the e-mail is new; the compensation removes only a user
        # created under this idempotency key.
        Step("resolve-user", participant="identity", compensation="release-user"),
        Step("add-to-tenant", participant="identity", compensation="remove-from-tenant"),
        Step("send-invitation", participant="notifications", compensation="revoke-invitation"),
        Step("init-preferences", participant="identity", compensation="delete-preferences"),
    ),
    resource_id_from=("resolve-user", "userId"),
    required_params=("tenantId", "email", "roleName"),
)

RESOURCE_V1 = Workflow(
    type="resource",
    version=1,
    steps=(
        Step("validate-subscription", participant="subscriptions"),
        Step("check-quota", participant="resources"),
        # Creating a database or a volume takes longer than a table row.
        Step(
            "allocate-resource", participant="resources", compensation="release-resource",
            attempt_timeout_ms=60_000, deadline_ms=300_000,
        ),
        Step("update-billing", participant="billing", compensation="revert-billing"),
        Step("configure-monitoring", participant="monitoring", compensation="remove-monitoring"),
    ),
    resource_id_from=("allocate-resource", "resourceId"),
    required_params=("tenantId", "serviceName", "resourceType"),
)

DEFAULT_REGISTRY = WorkflowRegistry([TENANT_V1, SERVICE_V1, USER_V1, RESOURCE_V1])
