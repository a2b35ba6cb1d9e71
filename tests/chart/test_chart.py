"""The Helm chart: lint, render, and validate strictly and offline against the Kubernetes
schemas (`kubernetes-validate`), for the default values and for every feature switched on;
then what the rendered manifests must say (probes, non-root, env wiring, replicas)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from provisioning.devservices.process import DevServiceError
from provisioning.devservices.tools import ensure_helm

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "provisioning"
FULL = Path(__file__).with_name("full-values.yaml")
KUBE_VERSION = "1.31.0"
# Custom resources have no schema in kubernetes-validate: checked by the assertions below.
CUSTOM_KINDS = {"ServiceMonitor", "PrometheusRule", "ScaledObject"}


@pytest.fixture(scope="module")
def helm() -> Path:
    try:
        return ensure_helm()
    except DevServiceError as exc:
        pytest.fail(f"helm is needed to validate the chart and could not be built: {exc}",
                    pytrace=False)


def render(helm: Path, *args: str) -> list[dict[str, Any]]:
    result = run(helm, "template", "rel", str(CHART), "--kube-version", KUBE_VERSION, *args)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def run(helm: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(helm), *args], capture_output=True, text=True, timeout=120)


def by_kind(docs: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def test_lint_passes_strictly_for_default_and_full_values(helm: Path) -> None:
    for extra in ((), ("--values", str(FULL))):
        result = run(helm, "lint", "--strict", str(CHART), "--kube-version", KUBE_VERSION,
                     *extra)
        assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("values", [(), ("--values", str(FULL))], ids=["default", "full"])
def test_every_manifest_is_valid_against_the_kubernetes_schemas(
    helm: Path, values: tuple[str, ...]
) -> None:
    docs = render(helm, *values)
    checked = 0
    for doc in docs:
        if doc["kind"] in CUSTOM_KINDS:
            continue
        kubernetes_validate.validate(doc, KUBE_VERSION.rsplit(".", 1)[0], strict=True)
        checked += 1
    assert checked >= 12


def test_pods_run_as_non_root_read_only_with_probes_and_resources(helm: Path) -> None:
    docs = render(helm, "--values", str(FULL))
    deployments = by_kind(docs, "Deployment")
    assert set(deployments) == {"rel-provisioning-worker", "rel-provisioning-projector",
                                "rel-provisioning-api"}
    pods = [d["spec"]["template"]["spec"] for d in deployments.values()]
    pods += [j["spec"]["template"]["spec"] for j in by_kind(docs, "Job").values()]
    for pod in pods:
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["automountServiceAccountToken"] is False
        for container in pod["containers"]:
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True
            assert security["allowPrivilegeEscalation"] is False
            assert security["capabilities"]["drop"] == ["ALL"]
            assert container["resources"]["limits"]
    for deployment in deployments.values():
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["args"][0] in {"worker", "projector", "api"}


def test_settings_are_wired_from_the_config_map_and_secrets_by_reference(helm: Path) -> None:
    docs = render(helm, "--values", str(FULL))
    config = by_kind(docs, "ConfigMap")["rel-provisioning"]["data"]
    assert config["PROVISIONING_KAFKA_BOOTSTRAP_SERVERS"] == "kafka-0.kafka:9093,kafka-1.kafka:9093"
    assert config["PROVISIONING_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert config["PROVISIONING_KAFKA_SSL_CA_LOCATION"] == "/etc/provisioning/kafka-tls/ca.crt"
    assert config["PROVISIONING_AUTH_JWKS_FILE"] == "/etc/provisioning/jwks/jwks.json"
    assert config["PROVISIONING_ROUTING_FILE"] == "/etc/provisioning/routing/routing.toml"
    worker = by_kind(docs, "Deployment")["rel-provisioning-worker"]
    container = worker["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert env["PROVISIONING_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "provisioning-database", "key": "url"}
    assert env["PROVISIONING_KAFKA_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == (
        "kafka-credentials")
    assert all("value" not in e for e in env.values())  # no secret is ever a plain value
    assert container["envFrom"] == [{"configMapRef": {"name": "rel-provisioning"}}]
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/tmp", "/etc/provisioning/kafka-tls", "/etc/provisioning/routing"} <= mounts

    migrate = by_kind(docs, "Job")["rel-provisioning-migrate"]
    job_env = {e["name"]: e for e in migrate["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert job_env["PROVISIONING_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"] == (
        "provisioning-database-owner")
    assert job_env["PROVISIONING_TOPIC_PARTITIONS"]["value"] == "24"


def test_hook_jobs_create_topics_then_migrate_before_install_and_upgrade(helm: Path) -> None:
    jobs = by_kind(render(helm), "Job")
    topics, migrate = jobs["rel-provisioning-topics"], jobs["rel-provisioning-migrate"]
    for job, args in ((topics, ["topics", "create"]), (migrate, ["db", "upgrade"])):
        assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
        assert job["spec"]["template"]["spec"]["containers"][0]["args"] == args
    weight = [int(j["metadata"]["annotations"]["helm.sh/hook-weight"]) for j in (topics, migrate)]
    assert weight[0] < weight[1]


def test_worker_replicas_never_exceed_the_partitions(helm: Path) -> None:
    default = by_kind(render(helm), "Deployment")["rel-provisioning-worker"]
    assert default["spec"]["replicas"] <= 12
    too_many = run(helm, "template", "rel", str(CHART), "--kube-version", KUBE_VERSION,
                   "--set", "worker.replicas=13")
    assert too_many.returncode != 0
    assert "worker.replicas (13) exceeds kafka.partitions (12)" in too_many.stderr
    scaled = by_kind(render(helm, "--values", str(FULL)), "ScaledObject")
    assert scaled["rel-provisioning-worker"]["spec"]["maxReplicaCount"] <= 24


@pytest.mark.parametrize("setting, message", [
    ("kafka.securityProtocol=TLS", "kafka/securityProtocol"),
    ("workers.replicas=2", "additional properties 'workers' not allowed"),
    ("database.urlSecret.name=", "urlSecret"),
    ("kafka.partitions=0", "kafka/partitions"),
    ("podSecurityContext.runAsNonRoot=false", "runAsNonRoot"),
])
def test_wrong_values_fail_with_a_clear_message(helm: Path, setting: str, message: str) -> None:
    result = run(helm, "template", "rel", str(CHART), "--kube-version", KUBE_VERSION,
                 "--set", setting)
    assert result.returncode != 0
    assert message in result.stderr


def test_monitoring_ships_the_alerts_and_the_dashboard(helm: Path) -> None:
    docs = render(helm, "--values", str(FULL))
    rule = by_kind(docs, "PrometheusRule")["rel-provisioning"]
    alerts = {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r}
    assert {"ProvisioningSuccessRateLow", "ProvisioningStuckWorkflows",
            "ProvisioningDLQGrowing", "ProvisioningConsumerLagHigh"} <= alerts
    dashboard = by_kind(docs, "ConfigMap")["rel-provisioning-dashboard"]
    assert json.loads(dashboard["data"]["provisioning-dashboard.json"])["panels"]
    monitor = by_kind(docs, "ServiceMonitor")["rel-provisioning"]
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
