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


def refusal(helm: Path, *args: str) -> str:
    """What helm says when it refuses to render the chart with `args`."""
    result = run(helm, "template", "rel", str(CHART), "--kube-version", KUBE_VERSION, *args)
    assert result.returncode != 0, args
    return result.stderr


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
    # What topics create sets and what the worker requires at start (README, Replication).
    assert config["PROVISIONING_TOPIC_REPLICATION_FACTOR"] == "3"
    assert config["PROVISIONING_TOPIC_MIN_INSYNC_REPLICAS"] == "2"
    assert config["PROVISIONING_REQUIRED_MIN_INSYNC_REPLICAS"] == "2"
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


def worker_args(deployment: dict) -> list[str]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container["args"]


def processes_of(deployment: dict) -> int:
    args = worker_args(deployment)
    return int(args[args.index("--processes") + 1])


def test_the_worker_runs_several_processes_per_pod(helm: Path) -> None:
    default = by_kind(render(helm), "Deployment")["rel-provisioning-worker"]
    assert processes_of(default) == 2
    assert default["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"][
        "cpu"] == "2"  # a core per process: a lower limit throttles their poll loops
    three = by_kind(render(helm, "--set", "worker.processes=3", "--set", "worker.replicas=4"),
                    "Deployment")["rel-provisioning-worker"]
    assert processes_of(three) == 3
    full = by_kind(render(helm, "--values", str(FULL)), "Deployment")["rel-provisioning-worker"]
    assert processes_of(full) == 3


def test_worker_processes_never_exceed_the_partitions(helm: Path) -> None:
    default = by_kind(render(helm), "Deployment")["rel-provisioning-worker"]
    assert default["spec"]["replicas"] * processes_of(default) <= 12
    for settings, message in [
        (("worker.replicas=7",), "worker.replicas (7) x worker.processes (2) exceeds "
                                 "kafka.partitions (12)"),
        (("worker.replicas=13", "worker.processes=1"),
         "worker.replicas (13) x worker.processes (1) exceeds kafka.partitions (12)"),
        (("worker.keda.enabled=true", "worker.keda.maxReplicas=7"),
         "worker.keda.maxReplicas (7) x worker.processes (2) exceeds kafka.partitions (12)"),
    ]:
        said = refusal(helm, *(arg for setting in settings for arg in ("--set", setting)))
        assert message in said, said
    docs = render(helm, "--values", str(FULL))
    scaled = by_kind(docs, "ScaledObject")["rel-provisioning-worker"]
    full = by_kind(docs, "Deployment")["rel-provisioning-worker"]
    assert scaled["spec"]["maxReplicaCount"] * processes_of(full) <= 24


@pytest.mark.parametrize("setting, message", [
    ("kafka.securityProtocol=TLS", "kafka/securityProtocol"),
    ("workers.replicas=2", "additional properties 'workers' not allowed"),
    ("database.urlSecret.name=", "urlSecret"),
    ("kafka.partitions=0", "kafka/partitions"),
    ("worker.processes=0", "worker/processes"),
    ("podSecurityContext.runAsNonRoot=false", "runAsNonRoot"),
])
def test_wrong_values_fail_with_a_clear_message(helm: Path, setting: str, message: str) -> None:
    assert message in refusal(helm, "--set", setting)


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


# --- blast radius (issue 15): network, secrets, /tmp -------------------------------------------

COMPONENTS = ("worker", "projector", "api")
HOOK_JOBS = ("topics", "migrate")


def pod_specs(docs: list[dict]) -> dict[str, dict]:
    """Every pod template, by component: the three Deployments and the hook Jobs."""
    pods = {}
    for kind in ("Deployment", "Job"):
        for doc in by_kind(docs, kind).values():
            template = doc["spec"]["template"]
            pods[template["metadata"]["labels"]["app.kubernetes.io/component"]] = template
    return pods


def ports_of(rules: list[dict]) -> set[tuple[int, str]]:
    return {(p["port"], p["protocol"]) for rule in rules for p in rule.get("ports", [])}


def egress_to(policy: dict, port: int) -> list[dict]:
    """The peers of the egress rules that open `port` (an empty list: any destination)."""
    rules = [r for r in policy["spec"]["egress"] if (port, "TCP") in ports_of([r])]
    assert rules, f"no egress to port {port}"
    return [peer for rule in rules for peer in rule.get("to", [])]


def values_file(tmp_path: Path, values: dict) -> tuple[str, str]:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    return "--values", str(path)


def test_network_policies_cover_every_pod_and_open_only_what_it_needs(helm: Path) -> None:
    docs = render(helm)
    policies = by_kind(docs, "NetworkPolicy")
    assert set(policies) == {f"rel-provisioning-{c}" for c in (*COMPONENTS, *HOOK_JOBS)}
    pods = pod_specs(docs)
    assert set(pods) == {*COMPONENTS, *HOOK_JOBS}
    for component, pod in pods.items():
        policy = policies[f"rel-provisioning-{component}"]["spec"]
        assert policy["policyTypes"] == ["Ingress", "Egress"]
        selected = policy["podSelector"]["matchLabels"]
        assert selected.items() <= pod["metadata"]["labels"].items(), component
        others = [c for c in pods if c != component]
        assert not any(selected.items() <= pods[c]["metadata"]["labels"].items() for c in others)

    monitoring = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name":
                                                        "monitoring"}}}
    metrics_rule = {"from": [monitoring], "ports": [{"port": 9100, "protocol": "TCP"}]}
    api_rule = {"from": [{"namespaceSelector": {}}], "ports": [{"port": 8080, "protocol": "TCP"}]}
    spec = {name.removeprefix("rel-provisioning-"): p["spec"] for name, p in policies.items()}
    assert spec["worker"]["ingress"] == [metrics_rule]
    assert spec["projector"]["ingress"] == [metrics_rule]
    assert spec["api"]["ingress"] == [api_rule, metrics_rule]  # the API port from the cluster
    assert spec["topics"]["ingress"] == [] and spec["migrate"]["ingress"] == []

    dns = {(53, "UDP"), (53, "TCP")}
    kafka, postgres, jwks = (9092, "TCP"), (5432, "TCP"), (443, "TCP")
    expected = {"worker": dns | {kafka, postgres}, "projector": dns | {kafka, postgres},
                "api": dns | {kafka, postgres, jwks}, "topics": dns | {kafka},
                "migrate": dns | {postgres}}
    for component, ports in expected.items():
        assert ports_of(spec[component]["egress"]) == ports, component
        (dns_rule,) = [r for r in spec[component]["egress"] if ports_of([r]) == dns]
        assert dns_rule["to"] == [{"namespaceSelector": {"matchLabels": {
            "kubernetes.io/metadata.name": "kube-system"}}}]


def test_hook_jobs_policies_exist_before_the_jobs_run(helm: Path) -> None:
    docs = render(helm)
    policies, jobs = by_kind(docs, "NetworkPolicy"), by_kind(docs, "Job")
    for name in HOOK_JOBS:
        annotations = policies[f"rel-provisioning-{name}"]["metadata"]["annotations"]
        job = jobs[f"rel-provisioning-{name}"]["metadata"]["annotations"]
        assert annotations["helm.sh/hook"] == job["helm.sh/hook"]
        assert int(annotations["helm.sh/hook-weight"]) < int(job["helm.sh/hook-weight"])
        assert "hook-succeeded" in annotations["helm.sh/hook-delete-policy"]
    for name in COMPONENTS:  # the long-lived ones belong to the release
        assert "annotations" not in policies[f"rel-provisioning-{name}"]["metadata"]
    without_hooks = render(helm, "--set", "hooks.createTopics=false",
                           "--set", "hooks.migrateDatabase=false")
    assert set(by_kind(without_hooks, "NetworkPolicy")) == {
        f"rel-provisioning-{c}" for c in COMPONENTS}


def test_network_policy_can_be_disabled(helm: Path) -> None:
    docs = render(helm, "--set", "networkPolicy.enabled=false")
    assert by_kind(docs, "NetworkPolicy") == {}
    assert by_kind(docs, "Deployment")


def test_network_policy_takes_the_chosen_peers(helm: Path, tmp_path: Path) -> None:
    prometheus = {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}
    observability = {"matchLabels": {"team": "observability"}}
    # Helm merges maps: another label key replaces the default one only when that is nulled
    chosen = {"matchLabels": {"team": "observability", "kubernetes.io/metadata.name": None}}
    participant = {"to": [{"ipBlock": {"cidr": "10.30.4.0/24"}}],
                   "ports": [{"port": 8443, "protocol": "TCP"}]}
    docs = render(helm, *values_file(tmp_path, {
        "kafka": {"bootstrapServers": "b-1.kafka.example:9096,b-2.kafka.example:9096"},
        "auth": {"jwksUrl": "https://id.example.com:8443/jwks.json"},
        "networkPolicy": {
            "metricsFrom": {"namespaceSelector": chosen, "podSelector": prometheus},
            "kafka": {"to": [{"ipBlock": {"cidr": "10.20.0.0/24"}}]},
            "postgresql": {"ports": [6432], "to": [{"namespaceSelector": {
                "matchLabels": {"kubernetes.io/metadata.name": "db"}}}]},
            "identityProvider": {"to": [{"ipBlock": {"cidr": "192.0.2.0/24"}}]},
            "extraEgress": {"worker": [participant]},
        }}))
    policies = {n.removeprefix("rel-provisioning-"): p for n, p in
                by_kind(docs, "NetworkPolicy").items()}
    for component in COMPONENTS:
        policy = policies[component]
        metrics = [r for r in policy["spec"]["ingress"] if (9100, "TCP") in ports_of([r])]
        assert metrics == [{"from": [{"namespaceSelector": observability,
                                      "podSelector": prometheus}],
                            "ports": [{"port": 9100, "protocol": "TCP"}]}]
        # Kafka's port comes from bootstrapServers; PostgreSQL's from the values
        assert egress_to(policy, 9096) == [{"ipBlock": {"cidr": "10.20.0.0/24"}}]
        assert egress_to(policy, 6432) == [{"namespaceSelector": {
            "matchLabels": {"kubernetes.io/metadata.name": "db"}}}]
        assert (5432, "TCP") not in ports_of(policy["spec"]["egress"])
    # the worker reaches its HTTP participant, nobody else does; the API its identity provider
    assert participant in policies["worker"]["spec"]["egress"]
    assert participant not in policies["projector"]["spec"]["egress"]
    assert egress_to(policies["api"], 8443) == [{"ipBlock": {"cidr": "192.0.2.0/24"}}]
    assert (8443, "TCP") not in ports_of(policies["projector"]["spec"]["egress"])
    for doc in docs:
        if doc["kind"] not in CUSTOM_KINDS:
            kubernetes_validate.validate(doc, KUBE_VERSION.rsplit(".", 1)[0], strict=True)


def test_metrics_namespace_chosen_by_name(helm: Path) -> None:
    docs = render(helm, "--set",
                  "networkPolicy.metricsFrom.namespaceSelector.matchLabels."
                  "kubernetes\\.io/metadata\\.name=observability")
    rules = [rule for policy in by_kind(docs, "NetworkPolicy").values()
             for rule in policy["spec"]["ingress"] if (9100, "TCP") in ports_of([rule])]
    assert len(rules) == len(COMPONENTS)
    for rule in rules:
        assert rule["from"] == [{"namespaceSelector": {"matchLabels": {
            "kubernetes.io/metadata.name": "observability"}}}]


def test_api_with_a_jwks_config_map_gets_no_egress_to_an_identity_provider(helm: Path) -> None:
    policies = by_kind(render(helm, "--values", str(FULL)), "NetworkPolicy")
    api, worker = policies["rel-provisioning-api"], policies["rel-provisioning-worker"]
    assert ports_of(api["spec"]["egress"]) == {(53, "UDP"), (53, "TCP"), (9093, "TCP"),
                                               (5432, "TCP"), (6432, "TCP")}
    assert (443, "TCP") in ports_of(worker["spec"]["egress"])  # its HTTP participant


def test_api_service_does_not_expose_the_metrics_port(helm: Path) -> None:
    for values in ((), ("--values", str(FULL))):
        docs = render(helm, *values)
        services = by_kind(docs, "Service")
        api = services["rel-provisioning-api"]
        assert [p["name"] for p in api["spec"]["ports"]] == ["http"]
        assert {p["targetPort"] for p in api["spec"]["ports"]} == {"http"}
        # every pod is still scraped: a headless metrics Service per component
        for component in COMPONENTS:
            metrics = services[f"rel-provisioning-{component}-metrics"]
            assert metrics["spec"]["clusterIP"] == "None"
            assert metrics["spec"]["selector"]["app.kubernetes.io/component"] == component
            assert [p["name"] for p in metrics["spec"]["ports"]] == ["metrics"]
    monitor = by_kind(docs, "ServiceMonitor")["rel-provisioning"]
    wanted = monitor["spec"]["selector"]["matchLabels"].items()
    scraped = {name for name, s in services.items() if wanted <= s["metadata"]["labels"].items()}
    assert scraped == {f"rel-provisioning-{c}-metrics" for c in COMPONENTS}


def test_topics_job_gets_no_database_secret(helm: Path) -> None:
    for values in ((), ("--values", str(FULL))):
        docs = render(helm, *values)
        database_secrets = {"provisioning-database", "provisioning-database-owner"}
        pod = by_kind(docs, "Job")["rel-provisioning-topics"]["spec"]["template"]["spec"]
        text = json.dumps(pod)
        assert "PROVISIONING_DATABASE_URL" not in text
        assert not any(secret in text for secret in database_secrets)
        (container,) = pod["containers"]
        assert "envFrom" not in container
        referenced = {e["valueFrom"]["secretKeyRef"]["name"] for e in container["env"]
                      if "valueFrom" in e}
        assert referenced.isdisjoint(database_secrets)
    # with SASL it gets Kafka's credentials; the migration job gets none of Kafka's
    jobs = by_kind(docs, "Job")
    topics_env = {e["name"] for e in
                  jobs["rel-provisioning-topics"]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert "PROVISIONING_KAFKA_SASL_PASSWORD" in topics_env
    migrate = jobs["rel-provisioning-migrate"]["spec"]["template"]["spec"]
    assert "kafka-credentials" not in json.dumps(migrate)
    assert "kafka-tls" not in {v["name"] for v in migrate["volumes"]}


@pytest.mark.parametrize("values", [(), ("--values", str(FULL))], ids=["default", "full"])
def test_every_empty_dir_has_a_size_limit(helm: Path, values: tuple[str, ...]) -> None:
    limit = "32Mi" if values else "64Mi"
    for component, template in pod_specs(render(helm, *values)).items():
        pod = template["spec"]
        empty_dirs = {v["name"]: v["emptyDir"] for v in pod["volumes"] if "emptyDir" in v}
        assert empty_dirs, component
        assert all(e.get("sizeLimit") == limit for e in empty_dirs.values()), component
        for container in pod["containers"]:
            # a read-only root filesystem: /tmp is a size-limited emptyDir
            assert container["securityContext"]["readOnlyRootFilesystem"] is True
            (tmp,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
            assert tmp["name"] in empty_dirs, component


@pytest.mark.parametrize("setting, message", [
    ("tmpSizeLimit=\"64 MB\"", "at '/tmpSizeLimit'"),
    # no port list for DNS or PostgreSQL: a rule without ports would open every port
    ("networkPolicy.dns.ports=null", "at '/networkPolicy/dns'"),
    ("networkPolicy.postgresql.ports=[]", "at '/networkPolicy/postgresql/ports'"),
    ("networkPolicy.metricsFrom.namespaceSelector={\"matchLabels\": \"monitoring\"}",
     "at '/networkPolicy/metricsFrom/namespaceSelector/matchLabels'"),
    ("networkPolicy.kafka.ports=[0]", "at '/networkPolicy/kafka/ports/0'"),
    ("networkPolicy.extraEgress.worker=[{\"to\": [{\"cidr\": \"10.0.0.0/8\"}]}]",
     "at '/networkPolicy/extraEgress/worker/0/to/0'"),
])
def test_wrong_network_values_fail_with_a_clear_message(helm: Path, setting: str,
                                                        message: str) -> None:
    assert message in refusal(helm, "--set-json", setting)


# --- the operators' console (issue 18): the API Service and an optional Ingress ----------------


def test_an_ingress_exposes_the_console_through_the_api_service_only_when_enabled(
    helm: Path,
) -> None:
    assert by_kind(render(helm), "Ingress") == {}  # off by default: port-forward the Service
    docs = render(helm, "--values", str(FULL))
    ingress = by_kind(docs, "Ingress")["rel-provisioning"]["spec"]
    assert ingress["ingressClassName"] == "nginx"
    assert ingress["tls"] == [{"hosts": ["provisioning.platform.example.com"],
                               "secretName": "provisioning-tls"}]
    (rule,) = ingress["rules"]
    assert rule["host"] == "provisioning.platform.example.com"
    paths = {p["path"]: p for p in rule["http"]["paths"]}
    assert set(paths) == {"/console", "/api"}
    service = by_kind(docs, "Service")["rel-provisioning-api"]
    for path in paths.values():
        assert path["pathType"] == "Prefix"
        assert path["backend"]["service"] == {"name": "rel-provisioning-api",
                                              "port": {"name": "http"}}
    assert [p["name"] for p in service["spec"]["ports"]] == ["http"]
    # the controller's namespace may reach the API port next to networkPolicy.apiFrom
    api_policy = by_kind(docs, "NetworkPolicy")["rel-provisioning-api"]["spec"]
    api_rule = next(r for r in api_policy["ingress"] if (8080, "TCP") in ports_of([r]))
    assert {"namespaceSelector": {"matchLabels": {
        "kubernetes.io/metadata.name": "ingress-nginx"}}} in api_rule["from"]
    console_only = by_kind(render(helm, "--set", "ingress.enabled=true"), "Ingress")
    (rule,) = console_only["rel-provisioning"]["spec"]["rules"]
    assert [p["path"] for p in rule["http"]["paths"]] == ["/console"]
    assert "tls" not in console_only["rel-provisioning"]["spec"]


@pytest.mark.parametrize("setting, message", [
    ("ingress.paths=[\"/metrics\"]", "at '/ingress/paths/0'"),
    ("ingress.host=\"Not A Host\"", "at '/ingress/host'"),
])
def test_wrong_ingress_values_fail_with_a_clear_message(helm: Path, setting: str,
                                                        message: str) -> None:
    assert message in refusal(helm, "--set-json", setting)
