"""Routing configuration: what it accepts, what it refuses (with which words), what it changes."""

from __future__ import annotations

from pathlib import Path

import pytest

from consumer.routing import BUILTIN, Route, load_routing, parse_routing
from provisioning.errors import ConfigurationError
from sagas import DEFAULT_REGISTRY, RetryPolicy

EXAMPLE = """
[steps."tenant.create-tenant"]
adapter = "kafka:entity-management"
attempt_timeout_s = 120
deadline_s = 900
retry = { max_retries = 5, initial_backoff_ms = 1000 }

[steps."tenant.create-admin-role"]
adapter = "https://identity.internal/steps"
compensation_url = "https://identity.internal/undo"
http_timeout_s = 5
"""


def test_the_documented_example_routes_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "routing.toml"
    path.write_text(EXAMPLE)
    routing = load_routing(path)

    assert routing.route_for("tenant", "create-tenant") == Route("kafka", "entity-management")
    assert routing.route_for("tenant", "create-admin-role") == Route(
        "http", "https://identity.internal/steps", "https://identity.internal/undo", 5)
    assert routing.route_for("tenant", "setup-billing") is BUILTIN
    assert routing.kafka_participants() == {"entity-management"}

    step = routing.registry.latest("tenant").step("create-tenant")
    assert (step.attempt_timeout_ms, step.deadline_ms) == (120_000, 900_000)
    assert step.retry == RetryPolicy(max_retries=5, initial_backoff_ms=1000)
    untouched = routing.registry.latest("tenant").step("setup-billing")
    assert untouched == DEFAULT_REGISTRY.latest("tenant").step("setup-billing")


def test_no_file_means_every_step_runs_built_in() -> None:
    routing = load_routing(None)
    assert routing.route_for("user", "resolve-user") is BUILTIN
    assert routing.registry is DEFAULT_REGISTRY


@pytest.mark.parametrize("steps, message", [
    ({"tenant.create-tenat": {"adapter": "builtin"}}, "has no step 'create-tenat'; its steps"),
    ({"tenants.create-tenant": {}}, "no workflow 'tenants'"),
    ({"tenant.create-tenant": {"adapter": "grpc:x"}}, "adapter 'grpc:x' is none of"),
    ({"tenant.create-tenant": {"adapter": "kafka:bad name"}}, "not a participant name"),
    ({"tenant.create-tenant": {"adapter": "http://"}}, "not an http(s) URL"),
    ({"tenant.create-tenant": {"adapter": "kafka:x", "compensation_url": "http://a/b"}},
     "for http adapters only"),
    ({"tenant.create-tenant": {"deadline_s": -1}}, "deadline_s"),
    ({"tenant.create-tenant": {"retry": {"max_retries": 1, "multiplier": 0.5}}}, "multiplier"),
    ({"tenant.create-tenant": {"adaptor": "builtin"}}, "adaptor"),
])
def test_mistakes_are_refused_naming_the_entry(steps: dict, message: str) -> None:
    with pytest.raises(ConfigurationError) as refused:
        parse_routing({"steps": steps})
    assert message in str(refused.value)


def test_an_unreadable_file_is_a_configuration_error(tmp_path: Path) -> None:
    broken = tmp_path / "routing.toml"
    broken.write_text("[steps\n")
    with pytest.raises(ConfigurationError, match="routing.toml"):
        load_routing(broken)
    with pytest.raises(ConfigurationError, match="No such file"):
        load_routing(tmp_path / "missing.toml")
