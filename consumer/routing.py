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
    bearer_token_file = "/run/secrets/identity-token"   # sent as Authorization: Bearer <token>
    client_cert_file = "/run/secrets/worker.crt"        # client TLS (https only), with its key
    client_key_file = "/run/secrets/worker.key"
    ca_file = "/run/secrets/identity-ca.crt"            # default: the system's CAs

The file is checked at start: an unknown workflow or step, an adapter that is none of
`builtin`, `kafka:<participant>` or an http(s) URL, or a bad value stops the process with a
message naming the entry. Credentials are files (relative paths are relative to the routing
file), named here and read by the worker at its start (`read_http_auth`): a missing or empty
token file, or a certificate or key that does not load, stops it with a message naming the
route and the file, never the secret. Other users of the file (`provisioning topics create`)
do not need the secrets.
"""

from __future__ import annotations

import dataclasses
import re
import ssl
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from provisioning.errors import ConfigurationError
from sagas import DEFAULT_REGISTRY, RetryPolicy, WorkflowRegistry
from sagas.workflows import Step

AdapterKind = Literal["builtin", "kafka", "http"]
PARTICIPANT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,100}$")


@dataclass(frozen=True, slots=True)
class HttpCredentials:
    """Where an http route's credentials are kept: paths only, so this is safe to show."""

    bearer_token_file: Path | None = None
    client_cert_file: Path | None = None
    client_key_file: Path | None = None
    ca_file: Path | None = None


@dataclass(frozen=True, slots=True)
class Route:
    kind: AdapterKind
    target: str | None = None  # the Kafka participant name, or the URL
    compensation_url: str | None = None
    http_timeout_s: float | None = None
    credentials: HttpCredentials | None = None


@dataclass(frozen=True, slots=True)
class HttpAuth:
    """An http route's credentials as read at start. The token is a `SecretStr`: every repr,
    log line and error shows it as '**********'."""

    bearer_token: SecretStr | None = None
    tls: ssl.SSLContext | None = None  # the CAs trusted and the client certificate presented


NO_AUTH = HttpAuth()


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
    bearer_token_file: str | None = Field(None, min_length=1)
    client_cert_file: str | None = Field(None, min_length=1)
    client_key_file: str | None = Field(None, min_length=1)
    ca_file: str | None = Field(None, min_length=1)


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
    return parse_routing(data, registry, source=str(path), base_dir=Path(path).parent)


def parse_routing(data: Mapping[str, Any], registry: WorkflowRegistry = DEFAULT_REGISTRY,
                  source: str = "routing", base_dir: Path | None = None) -> Routing:
    """`base_dir`: where relative credential paths start (the routing file's folder)."""
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
        routes[(workflow_type, step)] = _route(entry, f"{source}: steps.{key!r}", base_dir)
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


def _route(entry: _StepEntry, where: str, base_dir: Path | None) -> Route:
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
    credentials = _credentials(entry, where, base_dir, (target or "", compensation_url or ""))
    if kind != "http" and credentials is not None:
        raise ConfigurationError(f"{where}: bearer_token_file, client_cert_file, "
                                 "client_key_file and ca_file are for http adapters only")
    return Route(kind, target, compensation_url, entry.http_timeout_s, credentials)


def _credentials(entry: _StepEntry, where: str, base_dir: Path | None,
                 urls: tuple[str, str]) -> HttpCredentials | None:
    def path(value: str | None) -> Path | None:
        if value is None:
            return None
        given = Path(value)
        return base_dir / given if base_dir is not None and not given.is_absolute() else given

    credentials = HttpCredentials(path(entry.bearer_token_file), path(entry.client_cert_file),
                                  path(entry.client_key_file), path(entry.ca_file))
    if credentials == HttpCredentials():
        return None
    if (credentials.client_cert_file is None) != (credentials.client_key_file is None):
        raise ConfigurationError(f"{where}: client_cert_file and client_key_file go together")
    tls = (credentials.client_cert_file, credentials.ca_file) != (None, None)
    plain = [u for u in urls if u.startswith("http://")]
    if tls and plain:
        raise ConfigurationError(f"{where}: client_cert_file, client_key_file and ca_file are "
                                 f"for https URLs; {plain[0]!r} is plain http")
    return credentials


def read_http_auth(workflow_type: str, step: str, route: Route) -> HttpAuth:
    """The route's credentials, read now (at the worker's start); `ConfigurationError` naming
    the route and the file, never its content, when one cannot be used."""
    credentials = route.credentials
    if credentials is None:
        return NO_AUTH
    where = f"routing: steps.'{workflow_type}.{step}'"
    token = (_bearer_token(credentials.bearer_token_file, where)
             if credentials.bearer_token_file is not None else None)
    tls = None
    if credentials.client_cert_file is not None or credentials.ca_file is not None:
        tls = _tls_context(credentials, where)
    return HttpAuth(token, tls)


# RFC 6750's token68 and what real tokens (JWTs, opaque keys) use: visible ASCII, no spaces.
_TOKEN = re.compile(r"[\x21-\x7e]+")


def _bearer_token(path: Path, where: str) -> SecretStr:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"{where}: bearer_token_file {str(path)!r} cannot be read: "
                                 f"{exc.strerror or type(exc).__name__}") from None
    # The error messages below never quote the content: it is (or is near) the secret.
    try:
        text = raw.decode("ascii").strip()
    except UnicodeDecodeError:
        raise ConfigurationError(f"{where}: bearer_token_file {str(path)!r} is not ASCII "
                                 "text") from None
    if not text:
        raise ConfigurationError(f"{where}: bearer_token_file {str(path)!r} is empty")
    if not _TOKEN.fullmatch(text):
        raise ConfigurationError(f"{where}: bearer_token_file {str(path)!r} holds more than "
                                 "one token (whitespace or control characters inside)")
    return SecretStr(text)


def _tls_context(credentials: HttpCredentials, where: str) -> ssl.SSLContext:
    for name in ("ca_file", "client_cert_file", "client_key_file"):
        file = getattr(credentials, name)
        if file is not None and not file.is_file():
            raise ConfigurationError(f"{where}: {name} {str(file)!r} is not a readable file")
    try:
        context = ssl.create_default_context(
            cafile=str(credentials.ca_file) if credentials.ca_file is not None else None)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigurationError(f"{where}: ca_file {str(credentials.ca_file)!r} holds no "
                                 f"usable CA certificate ({_ssl_reason(exc)})") from None
    if credentials.client_cert_file is not None and credentials.client_key_file is not None:
        try:
            # A key with a passphrase is refused rather than prompted for on the terminal.
            context.load_cert_chain(str(credentials.client_cert_file),
                                    str(credentials.client_key_file), password=_no_passphrase)
        except (ssl.SSLError, OSError) as exc:
            raise ConfigurationError(
                f"{where}: client_cert_file {str(credentials.client_cert_file)!r} and "
                f"client_key_file {str(credentials.client_key_file)!r} do not load as a "
                f"certificate and its unencrypted private key ({_ssl_reason(exc)})") from None
    return context


def _no_passphrase() -> bytes:
    return b""


def _ssl_reason(exc: BaseException) -> str:
    # OpenSSL's reason code (e.g. KEY_VALUES_MISMATCH) names the problem, never key material.
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return exc.reason
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return type(exc).__name__


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


__all__ = ["BUILTIN", "NO_AUTH", "HttpAuth", "HttpCredentials", "Route", "Routing",
           "load_routing", "parse_routing", "read_http_auth"]
