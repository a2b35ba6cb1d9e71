"""Which adapter runs each step, and the operator's overrides of its retry policy and deadlines.

Routing is configuration, not code: an operator moves a step to a real service by editing a
TOML file (`PROVISIONING_ROUTING_FILE`) and restarting the workers. Steps not listed run on
the built-in participant. Example:

    [steps."tenant.create-tenant"]
    adapter = "kafka:entity-management"      # StepRequest on provisioning.step-requests.<name>
    attempt_timeout_s = 120                  # how long one attempt is waited for
    deadline_s = 900                         # from the first attempt; then the saga compensates
    retry = { max_retries = 5, initial_backoff_ms = 1000 }

    [steps."tenant.create-admin-role"]
    adapter = "https://identity.internal/provisioning/steps"   # POST, Idempotency-Key header
    compensation_url = "https://identity.internal/provisioning/undo"  # default: the same URL

The file is checked at start: an unknown workflow or step, an adapter that is none of
`builtin`, `kafka:<participant>` or an http(s) URL, or a bad value stops the process with a
message naming the entry.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from provisioning.errors import ConfigurationError
from sagas import DEFAULT_REGISTRY, RetryPolicy, WorkflowRegistry
from sagas.workflows import Step

AdapterKind = Literal["builtin", "kafka", "http"]
PARTICIPANT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,100}$")


@dataclass(frozen=True, slots=True)
class Route:
    kind: AdapterKind
    target: str | None = None  # the Kafka participant name, or the URL
    compensation_url: str | None = None
    http_timeout_s: float | None = None


BUILTIN = Route("builtin")


class _Retry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_retries: int = Field(ge=0, le=1000)
    initial_backoff_ms: int = Field(100, ge=0, le=3_600_000)
    multiplier: float = Field(2.0, ge=1, le=10)
    max_backoff_ms: int = Field(30_000, ge=0, le=86_400_000)


class _StepEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    adapter: str = "builtin"
    compensation_url: str | None = None
    http_timeout_s: float | None = Field(None, gt=0, le=3600)
    attempt_timeout_s: float | None = Field(None, gt=0, le=86_400)
    deadline_s: float | None = Field(None, gt=0, le=30 * 86_400)
    retry: _Retry | None = None
    compensation_retry: _Retry | None = None


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid")

    steps: dict[str, _StepEntry] = {}


@dataclass(frozen=True)
class Routing:
    """Routes by (workflow type, step) and the workflow registry with the overrides applied."""

    routes: Mapping[tuple[str, str], Route]
    registry: WorkflowRegistry

    @classmethod
    def builtin(cls, registry: WorkflowRegistry = DEFAULT_REGISTRY) -> Routing:
        return cls({}, registry)

    def route_for(self, workflow_type: str, step: str) -> Route:
        return self.routes.get((workflow_type, step), BUILTIN)

    def kafka_participants(self) -> frozenset[str]:
        return frozenset(r.target for r in self.routes.values()
                         if r.kind == "kafka" and r.target is not None)


def load_routing(path: str | Path | None,
                 registry: WorkflowRegistry = DEFAULT_REGISTRY) -> Routing:
    if path is None:
        return Routing.builtin(registry)
    try:
        data = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigurationError(f"routing file {path}: {exc}") from None
    return parse_routing(data, registry, source=str(path))


def parse_routing(data: Mapping[str, Any], registry: WorkflowRegistry = DEFAULT_REGISTRY,
                  source: str = "routing") -> Routing:
    try:
        parsed = _File.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigurationError(f"{source}: {where}: {first['msg']}") from None
    routes: dict[tuple[str, str], Route] = {}
    overrides: dict[tuple[str, str], _StepEntry] = {}
    for key, entry in parsed.steps.items():
        workflow_type, step = _known_step(key, registry, source)
        routes[(workflow_type, step)] = _route(entry, f"{source}: steps.{key!r}")
        overrides[(workflow_type, step)] = entry
    return Routing(routes, _with_overrides(registry, overrides))


def _known_step(key: str, registry: WorkflowRegistry, source: str) -> tuple[str, str]:
    workflow_type, _, step = key.partition(".")
    if not registry.knows(workflow_type):
        known = sorted({w.type for w in registry})
        raise ConfigurationError(f"{source}: steps.{key!r}: no workflow {workflow_type!r}; "
                                 f"workflows are {', '.join(known)} (write <workflow>.<step>)")
    steps = {s.name for w in registry if w.type == workflow_type for s in w.steps}
    if step not in steps:
        raise ConfigurationError(f"{source}: steps.{key!r}: workflow {workflow_type} has no "
                                 f"step {step!r}; its steps are {', '.join(sorted(steps))}")
    return workflow_type, step


def _route(entry: _StepEntry, where: str) -> Route:
    adapter = entry.adapter.strip()
    if adapter == "builtin":
        kind: AdapterKind = "builtin"
        target = None
    elif adapter.startswith("kafka:"):
        kind, target = "kafka", adapter.removeprefix("kafka:")
        if not PARTICIPANT_NAME.match(target):
            raise ConfigurationError(f"{where}: {target!r} is not a participant name "
                                     "(letters, digits, '.', '_', '-')")
    elif adapter.startswith(("http://", "https://")):
        kind, target = "http", _url(adapter, where)
    else:
        raise ConfigurationError(f"{where}: adapter {adapter!r} is none of 'builtin', "
                                 "'kafka:<participant>', 'http(s)://...'")
    if kind != "http" and (entry.compensation_url or entry.http_timeout_s):
        raise ConfigurationError(f"{where}: compensation_url and http_timeout_s are for "
                                 "http adapters only")
    compensation_url = _url(entry.compensation_url, where) if entry.compensation_url else None
    return Route(kind, target, compensation_url, entry.http_timeout_s)


def _url(value: str, where: str) -> str:
    parsed = urlparse(value)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ConfigurationError(f"{where}: {value!r} is not an http(s) URL")
    return value


def _with_overrides(registry: WorkflowRegistry,
                    overrides: Mapping[tuple[str, str], _StepEntry]) -> WorkflowRegistry:
    if not any(_changes(e) for e in overrides.values()):
        return registry
    workflows = []
    for workflow in registry:
        steps = tuple(_override(s, overrides.get((workflow.type, s.name))) for s in workflow.steps)
        workflows.append(dataclasses.replace(workflow, steps=steps) if steps != workflow.steps
                         else workflow)
    return WorkflowRegistry(workflows)


def _changes(entry: _StepEntry) -> bool:
    return any(v is not None for v in (entry.attempt_timeout_s, entry.deadline_s, entry.retry,
                                       entry.compensation_retry))


def _override(step: Step, entry: _StepEntry | None) -> Step:
    if entry is None or not _changes(entry):
        return step
    changes: dict[str, Any] = {}
    if entry.attempt_timeout_s is not None:
        changes["attempt_timeout_ms"] = int(entry.attempt_timeout_s * 1000)
    if entry.deadline_s is not None:
        changes["deadline_ms"] = int(entry.deadline_s * 1000)
    if entry.retry is not None:
        changes["retry"] = RetryPolicy(**entry.retry.model_dump())
    if entry.compensation_retry is not None:
        changes["compensation_retry"] = RetryPolicy(**entry.compensation_retry.model_dump())
    return dataclasses.replace(step, **changes)


__all__ = ["BUILTIN", "Route", "Routing", "load_routing", "parse_routing"]
