"""The service's topics: names, keys and configs (DESIGN.md section 3), and their creation.

`TopicLayout` is the single place that knows what each topic is called under a namespace
prefix. `create_topics` makes them idempotently, brings the configs of existing ones to the
specs, and checks the co-partitioning the worker relies on: a saga's command, state and step
replies must land on the same partition number, so those three topics must have the same
partition count. `ReplyTopicRule` says which topics a caller may name as `replyTo`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
)

from provisioning.errors import ConfigurationError, TransientError
from provisioning.kafka_access import denial, worth_retrying
from provisioning.settings import DEFAULT_MAX_COMMAND_BYTES, Settings

DAY_MS = 24 * 60 * 60 * 1000
# The commands topic takes a command of `max_command_bytes` plus this much for headers and the
# record batch's framing: a larger record is refused by the broker, before any worker reads it.
COMMAND_HEADROOM_BYTES = 16 * 1024


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)
    copartitioned: bool = False


@dataclass(frozen=True, slots=True)
class TopicLayout:
    """Topic names under one namespace prefix."""

    prefix: str = ""
    # Made once from the prefix: the worker reads them for every record it writes.
    commands: str = field(init=False)
    events: str = field(init=False)
    state: str = field(init=False)
    step_replies: str = field(init=False)
    commands_dlq: str = field(init=False)
    # Events the projector could decode but not project (malformed records).
    events_dlq: str = field(init=False)

    def __post_init__(self) -> None:
        for name, base in (("commands", "provisioning.commands"),
                           ("events", "provisioning.events"),
                           ("state", "provisioning.state"),
                           ("step_replies", "provisioning.step-replies"),
                           ("commands_dlq", "provisioning.commands.dlq"),
                           ("events_dlq", "provisioning.events.dlq")):
            object.__setattr__(self, name, self._name(base))

    def _name(self, base: str) -> str:
        return f"{self.prefix}.{base}" if self.prefix else base

    def step_requests(self, participant: str) -> str:
        return self._name(f"provisioning.step-requests.{participant}")

    @property
    def step_requests_prefix(self) -> str:
        """What every participant's step-requests topic starts with (for prefixed ACLs)."""
        return self.step_requests("")

    @property
    def service_prefix(self) -> str:
        """What every topic of the service in this namespace starts with."""
        return self._name("provisioning.")

    def own_topics(self) -> frozenset[str]:
        return frozenset({self.commands, self.events, self.state, self.step_replies,
                          self.commands_dlq, self.events_dlq})

    def specs(
        self, partitions: int, participants: Iterable[str] = (), *,
        max_command_bytes: int = DEFAULT_MAX_COMMAND_BYTES,
    ) -> list[TopicSpec]:
        """Every topic with its config; commands, state and step-replies are co-partitioned."""
        delete_7d = {"cleanup.policy": "delete", "retention.ms": str(7 * DAY_MS)}
        commands = {**delete_7d,
                    "max.message.bytes": str(max_command_bytes + COMMAND_HEADROOM_BYTES)}
        specs = [
            TopicSpec(self.commands, partitions, commands, copartitioned=True),
            TopicSpec(
                self.events,
                partitions,
                {"cleanup.policy": "delete", "retention.ms": str(30 * DAY_MS)},
            ),
            TopicSpec(
                self.state,
                partitions,
                {
                    "cleanup.policy": "compact",
                    # Tombstones of expired sagas stay a day so restoring workers see them.
                    "delete.retention.ms": str(DAY_MS),
                    "min.compaction.lag.ms": "0",
                    "segment.ms": str(DAY_MS),
                },
                copartitioned=True,
            ),
            TopicSpec(self.step_replies, partitions, delete_7d, copartitioned=True),
            TopicSpec(self.commands_dlq, partitions, {"cleanup.policy": "delete",
                                                      "retention.ms": str(30 * DAY_MS)}),
            TopicSpec(self.events_dlq, partitions, {"cleanup.policy": "delete",
                                                    "retention.ms": str(30 * DAY_MS)}),
        ]
        specs += [TopicSpec(self.step_requests(p), partitions, delete_7d) for p in participants]
        return specs


# Any namespace's service topics: a reply must never land in this or another environment's
# commands, events, state, step or dead-letter topics.
_SERVICE_TOPIC = re.compile(
    r"(^|.*\.)provisioning\.(commands|events|state|step-replies|step-requests)(\..*)?")


@dataclass(frozen=True, slots=True)
class ReplyTopicRule:
    """Which topics a command may name as `replyTo`: the worker writes there with its own
    rights, so never an internal topic (`__*`), never one of the service's topics (of any
    namespace), and only topics matching `pattern` when one is configured."""

    layout: TopicLayout
    pattern: str | None = None

    def problem(self, topic: str) -> str | None:
        """Why `topic` may not be a reply topic, or None when it may."""
        if topic.startswith("__"):
            return f"replyTo {topic!r} is an internal Kafka topic"
        if topic in self.layout.own_topics() or _SERVICE_TOPIC.fullmatch(topic):
            return f"replyTo {topic!r} is one of the Provisioning Service's own topics"
        if self.pattern is not None and re.fullmatch(self.pattern, topic) is None:
            return f"replyTo {topic!r} is not an allowed reply topic (pattern {self.pattern})"
        return None


@dataclass(frozen=True, slots=True)
class TopicReport:
    created: list[str]
    existing: list[str]
    reconfigured: list[str] = field(default_factory=list)


def create_topics(
    admin: AdminClient,
    specs: list[TopicSpec],
    replication_factor: int | None = None,
    timeout_s: float = 30.0,
    *,
    min_insync_replicas: int | None = None,
    settings: Settings | None = None,
) -> TopicReport:
    """Create the topics that are missing; set the configs of existing ones to their specs
    (only the keys a spec names; other settings an operator made stay).

    `replication_factor` None takes the brokers' `default.replication.factor`, so nothing
    here assumes one broker; `min_insync_replicas` is set on every topic when given (else the
    brokers' default applies). With `settings`, a refusal names the principal
    (`KafkaAccessDenied`).

    Raises ConfigurationError when the co-partitioned topics end up with different partition
    counts (for instance, an existing commands topic with 6 partitions and a request for 12):
    the worker cannot run on such a layout, and repartitioning is an operator's decision.
    """
    if min_insync_replicas is not None:
        specs = [TopicSpec(s.name, s.partitions,
                           {**s.config, "min.insync.replicas": str(min_insync_replicas)},
                           s.copartitioned) for s in specs]
    existing = _partition_counts(admin, timeout_s)
    missing = [s for s in specs if s.name not in existing]
    _check_copartitioning(specs, existing)
    if missing:
        futures = admin.create_topics(
            [
                NewTopic(s.name, num_partitions=s.partitions,
                         replication_factor=replication_factor or -1, config=s.config)
                for s in missing
            ],
            operation_timeout=timeout_s,
            request_timeout=timeout_s,
        )
        for name, future in futures.items():
            try:
                future.result()
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise _wrap(exc, f"creating topic {name}", settings, "Create",
                                name) from exc
        _wait_until_listed(admin, [s.name for s in missing], timeout_s)
    present = [s for s in specs if s.name in existing]
    return TopicReport(
        created=[s.name for s in missing],
        existing=[s.name for s in present],
        reconfigured=reconcile_configs(admin, present, timeout_s, settings=settings),
    )


def reconcile_configs(admin: AdminClient, specs: list[TopicSpec],
                      timeout_s: float = 30.0, *, settings: Settings | None = None,
                      ) -> list[str]:
    """Set every config a spec names that differs on the broker; the topics changed."""
    changed = []
    for spec in specs:
        current = describe_configs(admin, spec.name, timeout_s, settings=settings)
        wrong = {k: v for k, v in spec.config.items() if current.get(k) != v}
        if not wrong:
            continue
        resource = ConfigResource(ConfigResource.Type.TOPIC, spec.name, incremental_configs=[
            ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET)
            for k, v in sorted(wrong.items())])
        try:
            futures = admin.incremental_alter_configs([resource], request_timeout=timeout_s)
            futures[resource].result()
        except KafkaException as exc:
            raise _wrap(exc, f"setting {', '.join(sorted(wrong))} of topic {spec.name}",
                        settings, "AlterConfigs", spec.name) from exc
        changed.append(spec.name)
    return changed


def verify_copartitioning(
    admin: AdminClient, specs: list[TopicSpec], timeout_s: float = 10.0
) -> None:
    """Refuse (ConfigurationError) unless commands, state and step-replies agree on partitions."""
    _check_copartitioning(specs, _partition_counts(admin, timeout_s))


def describe_configs(admin: AdminClient, topic: str, timeout_s: float = 10.0, *,
                     settings: Settings | None = None) -> dict[str, str]:
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    try:
        entries = admin.describe_configs([resource], request_timeout=timeout_s)[resource].result()
    except KafkaException as exc:
        raise _wrap(exc, f"describing topic {topic}", settings, "DescribeConfigs",
                    topic) from exc
    return {name: entry.value for name, entry in entries.items()}


def _partition_counts(admin: AdminClient, timeout_s: float) -> dict[str, int]:
    try:
        metadata = admin.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        raise _wrap(exc, "listing topics") from exc
    return {name: len(topic.partitions) for name, topic in metadata.topics.items()}


def _wait_until_listed(admin: AdminClient, names: list[str], timeout_s: float) -> None:
    """Return once the broker lists every topic of `names` with a leader for each partition.
    A broker started a moment ago answers the creation before its metadata shows the topics,
    and a worker started right after then refused to start ("topics missing"; seen with the
    bench and the integration tests on a fresh broker)."""
    deadline = time.monotonic() + timeout_s
    while True:
        topics = admin.list_topics(timeout=max(1.0, deadline - time.monotonic())).topics
        if all(name in topics and topics[name].error is None and topics[name].partitions
               and all(p.leader >= 0 for p in topics[name].partitions.values())
               for name in names):
            return
        if time.monotonic() > deadline:
            raise TransientError(f"topics created but not listed by the broker within "
                                 f"{timeout_s:.0f} s: {', '.join(sorted(names))}")
        time.sleep(0.2)


def _check_copartitioning(specs: list[TopicSpec], existing: dict[str, int]) -> None:
    counts = {s.name: existing.get(s.name, s.partitions) for s in specs if s.copartitioned}
    if len(set(counts.values())) > 1:
        detail = ", ".join(f"{name}={count}" for name, count in sorted(counts.items()))
        raise ConfigurationError(
            "co-partitioned topics must have the same partition count, but they have "
            f"{detail}; a saga's command, state and step replies must share a partition"
        )


def _wrap(exc: KafkaException, doing: str, settings: Settings | None = None,
          operation: str = "", topic: str | None = None) -> Exception:
    error = exc.args[0]
    refused = None if settings is None else denial(error, settings, operation, topic=topic)
    if refused is not None:
        return refused
    message = f"{doing}: {error.str() if hasattr(error, 'str') else error}"
    if hasattr(error, "retriable") and worth_retrying(error):
        return TransientError(message)
    return ConfigurationError(message)
