"""The Kafka ACLs of every principal of the service, as data, and their idempotent application.

For anyone who bypasses the API the topics are the authorisation boundary (README, "Security:
Kafka ACLs"): each process runs under its own principal and gets exactly the grants below,
nothing more. `service_grants` is the one place that lists them; the README's table says the
same, and `provisioning acls apply` prints and creates them on any cluster (an operator with
Alter on the Cluster runs it). Applying twice adds nothing the second time.

Roles: `publisher` (a service that sends commands), `worker`, `projector`, `api`,
`participant:<name>` (a Kafka participant) and `operator` (`provisioning topics create`, the
Helm topics job). Principals default to `User:provisioning-<role>` and
`User:participant-<name>`; groups to the processes' defaults.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from confluent_kafka import KafkaException
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)

from provisioning.errors import ConfigurationError, TransientError
from provisioning.topics import TopicLayout

SERVICE_ROLES = ("publisher", "worker", "projector", "api", "operator")
TRANSACTION_STATE_TOPIC = "__transaction_state"

DEFAULT_GROUPS = {
    "worker": "provisioning-worker",
    "projector": "provisioning-projector",
    "restore": "provisioning-restore-unused",
    "dlq-reader": "provisioning-dlq-reader",
    "client": "provisioning-client-unused",
}


def default_principal(role: str) -> str:
    """`User:provisioning-worker`, ..., `User:participant-<name>` for `participant:<name>`."""
    if role.startswith("participant:"):
        return f"User:participant-{role.split(':', 1)[1]}"
    return f"User:provisioning-{role}"


def participant_group(name: str) -> str:
    return f"provisioning-participant-{name}"


@dataclass(frozen=True, slots=True)
class Grant:
    """ALLOW `operations` on one resource pattern to one principal, from any host."""

    role: str
    principal: str
    resource: str  # Topic, Group, TransactionalId
    name: str
    pattern: str  # literal, prefixed
    operations: tuple[str, ...]
    why: str

    def bindings(self) -> list[AclBinding]:
        return [AclBinding(_RESOURCES[self.resource], self.name, _PATTERNS[self.pattern],
                           self.principal, "*", _OPERATIONS[op], AclPermissionType.ALLOW)
                for op in self.operations]


@dataclass(frozen=True, slots=True)
class AclPlan:
    """What to grant, for one namespace of topics."""

    layout: TopicLayout
    participants: tuple[str, ...] = ()
    principals: Mapping[str, str] = field(default_factory=dict)  # role -> principal override
    groups: Mapping[str, str] = field(default_factory=dict)  # worker/projector -> group id
    reply_topic_prefix: str | None = None  # topics callers may name as replyTo
    publisher_reads_outcomes: bool = False  # ProvisioningClient.await_outcome/submit_and_wait

    def principal(self, role: str) -> str:
        return self.principals.get(role) or default_principal(role)

    def group(self, role: str) -> str:
        return self.groups.get(role) or DEFAULT_GROUPS[role]


def service_grants(plan: AclPlan) -> list[Grant]:
    """Every grant of every role of `plan`, in the README's order."""
    t = plan.layout
    grants: list[Grant] = []

    def grant(role: str, resource: str, name: str, operations: Iterable[str], why: str,
              pattern: str = "literal") -> None:
        grants.append(Grant(role, plan.principal(role), resource, name, pattern,
                            tuple(operations), why))

    grant("publisher", "Topic", t.commands, ["Write"], "ProvisioningClient.submit, "
          "CommandPublisher")
    if plan.publisher_reads_outcomes:
        grant("publisher", "Topic", t.events, ["Read"], "await_outcome")
        grant("publisher", "Topic", t.state, ["Read"], "submit_and_wait of a known requestId "
              "(its saga state)")
        grant("publisher", "Group", DEFAULT_GROUPS["client"], ["Describe"],
              "the outcome reader's group.id (assigned, never joins or commits)")

    worker_group = plan.group("worker")
    for topic in (t.commands, t.step_replies):
        grant("worker", "Topic", topic, ["Read"], "its input, in its consumer group")
    grant("worker", "Topic", t.state, ["Read", "Write", "DescribeConfigs"],
          "saga snapshots, read back at restore; min.insync.replicas checked at start")
    grant("worker", "Topic", t.events, ["Write", "DescribeConfigs"],
          "events; min.insync.replicas checked at start")
    grant("worker", "Topic", t.commands_dlq, ["Write"], "dead-lettered commands")
    grant("worker", "Topic", t.step_requests_prefix, ["Write"],
          "step requests, one topic per Kafka participant", pattern="prefixed")
    grant("worker", "Topic", t.events_dlq, ["Describe"],
          "the start-up check that every topic exists")
    grant("worker", "Topic", TRANSACTION_STATE_TOPIC, ["Describe", "DescribeConfigs"],
          "the start-up check of the transaction log's replication")
    if plan.reply_topic_prefix:
        grant("worker", "Topic", plan.reply_topic_prefix, ["Write", "DescribeConfigs"],
              "replies to the topics callers name as replyTo", pattern="prefixed")
    grant("worker", "Group", worker_group, ["Read"],
          "membership, and the offsets committed in its transactions")
    grant("worker", "Group", DEFAULT_GROUPS["restore"], ["Describe"],
          "the state reader's group.id (never joins or commits)")
    grant("worker", "TransactionalId", f"{worker_group}-", ["Write"],
          "transactional.id <group>-<instance id>", pattern="prefixed")

    grant("projector", "Topic", t.events, ["Read"], "its input")
    grant("projector", "Topic", t.events_dlq, ["Write"], "events it cannot project")
    grant("projector", "Group", plan.group("projector"), ["Read"],
          "membership and offset commits")

    grant("api", "Topic", t.commands, ["Write"], "requests, retries, operator actions, "
          "DLQ redrive")
    grant("api", "Topic", t.commands_dlq, ["Read"], "the operator endpoints /api/v1/admin/dlq")
    grant("api", "Group", DEFAULT_GROUPS["dlq-reader"], ["Describe"],
          "the DLQ reader's group.id (assigned, never joins)")

    for name in plan.participants:
        role = f"participant:{name}"
        grant(role, "Topic", t.step_requests(name), ["Read"], "its step requests")
        grant(role, "Topic", t.step_replies, ["Write"], "its step replies")
        grant(role, "Group", plan.groups.get(role) or participant_group(name), ["Read"],
              "membership and offset commits")

    grant("operator", "Topic", t.service_prefix,
          ["Create", "Describe", "DescribeConfigs", "AlterConfigs"],
          "`provisioning topics create`: creates what is missing, brings configs to the spec",
          pattern="prefixed")
    return grants


@dataclass(frozen=True, slots=True)
class AclReport:
    added: list[tuple[Grant, str]]  # (grant, operation)
    present: list[tuple[Grant, str]]


def apply_grants(admin: AdminClient, grants: list[Grant], dry_run: bool = False,
                 timeout_s: float = 30.0) -> AclReport:
    """Create the bindings of `grants` that the cluster does not have yet (all of them are
    looked up first, so a second run adds nothing). With `dry_run`, only look."""
    existing = _existing(admin, grants, timeout_s)
    added, present, missing = [], [], []
    for grant in grants:
        for operation, binding in zip(grant.operations, grant.bindings(), strict=True):
            if _key(binding) in existing:
                present.append((grant, operation))
            else:
                added.append((grant, operation))
                missing.append(binding)
    if missing and not dry_run:
        try:
            for future in admin.create_acls(missing, request_timeout=timeout_s).values():
                future.result()
        except KafkaException as exc:
            raise _wrap(exc, "creating ACLs") from exc
        _await_visible(admin, grants, missing, timeout_s)
    return AclReport(added=added, present=present)


def _await_visible(admin: AdminClient, grants: list[Grant], created: list[AclBinding],
                   timeout_s: float) -> None:
    """The controller has the new ACLs; the brokers apply them from the metadata log a
    moment later. Return once a broker answers with all of them, so that a process started
    right after `acls apply` is not refused what was just granted."""
    wanted = {_key(b) for b in created}
    deadline = time.monotonic() + timeout_s
    while not wanted <= _existing(admin, grants, timeout_s):
        if time.monotonic() > deadline:
            raise TransientError(f"the new ACLs were not visible within {timeout_s:.0f} s")
        time.sleep(0.2)


def _existing(admin: AdminClient, grants: list[Grant], timeout_s: float) -> set[tuple]:
    found: set[tuple] = set()
    for principal in sorted({g.principal for g in grants}):
        query = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, principal,
                                 None, AclOperation.ANY, AclPermissionType.ANY)
        try:
            bindings = admin.describe_acls(query, request_timeout=timeout_s).result()
        except KafkaException as exc:
            raise _wrap(exc, f"reading the ACLs of {principal}") from exc
        found.update(_key(b) for b in bindings)
    return found


def _key(binding: AclBinding) -> tuple:
    return (binding.restype, binding.name, binding.resource_pattern_type, binding.principal,
            binding.host, binding.operation, binding.permission_type)


def _wrap(exc: KafkaException, doing: str) -> Exception:
    error = exc.args[0]
    message = f"{doing}: {error.str()}"
    return TransientError(message) if error.retriable() else ConfigurationError(message)


_RESOURCES = {"Topic": ResourceType.TOPIC, "Group": ResourceType.GROUP,
              "TransactionalId": ResourceType.TRANSACTIONAL_ID}
_PATTERNS = {"literal": ResourcePatternType.LITERAL, "prefixed": ResourcePatternType.PREFIXED}
_OPERATIONS = {"Read": AclOperation.READ, "Write": AclOperation.WRITE,
               "Create": AclOperation.CREATE, "Describe": AclOperation.DESCRIBE,
               "DescribeConfigs": AclOperation.DESCRIBE_CONFIGS,
               "AlterConfigs": AclOperation.ALTER_CONFIGS}
