"""The dashboard and the alert rules the chart ships: parseable, complete, and only about
series the service really exports (a renamed metric fails here, not on a dark dashboard)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from provisioning.metrics import exported_names

FILES = Path(__file__).resolve().parents[3] / "helm" / "provisioning" / "files"
SERIES = re.compile(r"\bprovisioning_[a-z_]+\b")
PANELS = {"Request rate per workflow type", "Success rate",
          "Duration p50 / p95 / p99 per workflow type", "Top failures by failed step",
          "Retry rate per step", "Active workflows", "Stuck workflows",
          "Consumer lag per group", "DLQ messages", "Transaction commit latency p99",
          "Step duration p95 per step", "Success rate per workflow type",
          "Top failure reasons by code", "Compensations given up (leftovers)"}
ALERTS = {"ProvisioningSuccessRateLow", "ProvisioningStuckWorkflows", "ProvisioningDLQGrowing",
          "ProvisioningConsumerLagHigh", "ProvisioningCompensationGivenUp"}


def dashboard() -> dict:
    return json.loads((FILES / "grafana" / "provisioning-dashboard.json").read_text())


def rules() -> list[dict]:
    document = yaml.safe_load((FILES / "prometheus" / "provisioning-alerts.yaml").read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def test_the_dashboard_has_the_seeds_panels() -> None:
    board = dashboard()
    assert {p["title"] for p in board["panels"]} == PANELS
    assert board["uid"] == "provisioning-service"
    assert board["templating"]["list"][0]["type"] == "datasource"


def test_every_expression_uses_exported_series_and_no_tenant_label() -> None:
    exported = exported_names()
    expressions = [t["expr"] for p in dashboard()["panels"] for t in p["targets"]]
    expressions += [r["expr"] for r in rules()]
    assert expressions
    for expression in expressions:
        used = set(SERIES.findall(expression))
        assert used, expression
        assert used <= exported, f"{expression}: {used - exported} are not exported"
        assert "tenant" not in expression


def test_the_alerts_are_complete() -> None:
    by_name = {r["alert"]: r for r in rules()}
    assert set(by_name) == ALERTS
    for name, rule in by_name.items():
        assert rule["labels"]["severity"] in {"page", "ticket"}, name
        assert rule["annotations"]["summary"] and rule["annotations"]["runbook"], name
    assert by_name["ProvisioningSuccessRateLow"]["for"] == "10m"
    assert "0.999" in by_name["ProvisioningSuccessRateLow"]["expr"]


def _expressions(title: str) -> list[str]:
    return [t["expr"] for p in dashboard()["panels"] if p["title"] == title
            for t in p["targets"]]


def test_success_rates_count_only_system_failures() -> None:
    """failed / (succeeded + failed): a business refusal is neither (issue 16)."""
    rule = next(r for r in rules() if r["alert"] == "ProvisioningSuccessRateLow")
    expressions = [rule["expr"], *_expressions("Success rate"),
                   *_expressions("Success rate per workflow type")]
    for expression in expressions:
        assert set(SERIES.findall(expression)) == {"provisioning_outcomes_total"}, expression
        assert 'outcome=~"succeeded|failed"' in expression, expression
        assert "refused" not in expression, expression
    assert 'outcome="failed"' in rule["expr"]
    assert "sum by (workflow_type)" in _expressions("Success rate per workflow type")[0]


def test_leftovers_and_failure_codes_are_on_the_dashboard_and_alerted() -> None:
    [codes] = _expressions("Top failure reasons by code")
    assert codes.startswith("topk(") and "provisioning_failures_total" in codes
    assert "code" in codes
    [leftovers] = _expressions("Compensations given up (leftovers)")
    assert "provisioning_compensation_failures_total" in leftovers
    rule = next(r for r in rules() if r["alert"] == "ProvisioningCompensationGivenUp")
    assert "provisioning_compensation_failures_total" in rule["expr"]
    assert "recompensate" in rule["annotations"]["runbook"]
    assert "resolve" in rule["annotations"]["runbook"]
