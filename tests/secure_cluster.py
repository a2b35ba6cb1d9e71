"""The tests' production-like Kafka: three nodes, TLS, SASL/SCRAM-SHA-512 and ACLs.

Started once per test session (the `secure_cluster` fixture) through the launcher behind
`provisioning dev up --brokers 3 --secure`, in a folder of its own (`.local/test-cluster`)
beside the single broker the other tests use, and stopped at the end of the session unless it
was already running (or `PROVISIONING_TEST_CLUSTER_KEEP=1`). Its ports are the first free
block from 29192 (or `PROVISIONING_TEST_CLUSTER_KAFKA_PORT`), remembered in the folder so that a
cluster left running is found again.

Every process of a test runs under the principal of its role, with the settings
`provisioning dev env --role ROLE` prints; the operator (a super user) creates topics and
applies the ACLs with the service's own commands (`topics create`, `acls apply`).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka.admin import AdminClient

from provisioning.devservices import ClusterShape, LocalServices
from provisioning.devservices.kafka import PORT_STRIDE
from provisioning.devservices.kafka_principals import DEV_PARTICIPANT
from provisioning.devservices.process import port_in_use
from provisioning.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
FOLDER = ROOT / ".local" / "test-cluster"
PORTS_FILE = FOLDER / "ports.json"
SHAPE = ClusterShape(brokers=3, secure=True)
PARTICIPANT = DEV_PARTICIPANT


@dataclass
class SecureCluster:
    services: LocalServices
    database_url: str
    started_here: bool

    @property
    def kafka(self):  # noqa: ANN201 - LocalKafka
        return self.services.kafka

    def env(self, role: str) -> dict[str, str]:
        """What `provisioning dev env --role ROLE` prints for this cluster (Kafka part)."""
        env = self.services.env(role)
        return {k: v for k, v in env.items() if k.startswith(("PROVISIONING_KAFKA",
                                                               "PROVISIONING_TOPIC",
                                                               "PROVISIONING_REQUIRED"))}

    def settings(self, role: str, prefix: str, **update: object) -> Settings:
        """Settings of a process in `role` on topic prefix `prefix` (partitions: 3)."""
        fields = {k.removeprefix("PROVISIONING_").lower(): v for k, v in self.env(role).items()}
        fields |= {"database_url": self.database_url, "topic_prefix": prefix,
                   "topic_partitions": 3}
        return Settings(**fields).model_copy(update=update)

    def admin(self) -> AdminClient:
        """The operator's admin client; librdkafka's complaints while a broker is down go to a
        quiet logger, not the test's output."""
        from provisioning.kafka_access import client_config

        quiet = logging.getLogger("tests.secure_cluster")
        quiet.setLevel(logging.CRITICAL)
        return AdminClient(client_config(self.settings("operator", "")), logger=quiet)

    def cli(self, role: str, prefix: str, *args: str, timeout_s: float = 120,
            extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """`provisioning ARGS` as `role`, on topic prefix `prefix`."""
        from harness import process_env

        env = {**process_env(self.settings(role, prefix)), **(extra_env or {})}
        return subprocess.run([sys.executable, "-m", "provisioning.cli", *args], env=env,
                              capture_output=True, text=True, cwd=ROOT, timeout=timeout_s)

    def prepare(self, prefix: str, *acl_args: str) -> None:
        """Topics of `prefix` (with its Kafka participant's) and every role's ACLs on them,
        by the operator through the service's own commands."""
        routing = FOLDER / f"routing-{prefix}.toml"
        routing.write_text(f'[steps."tenant.create-tenant"]\nadapter = "kafka:{PARTICIPANT}"\n')
        env = {"PROVISIONING_ROUTING_FILE": str(routing)}
        for args in (("topics", "create"), ("acls", "apply", *acl_args)):
            done = self.cli("operator", prefix, *args, extra_env=env)
            assert done.returncode == 0, done.stderr

    def close(self) -> None:
        if self.started_here and os.environ.get("PROVISIONING_TEST_CLUSTER_KEEP") != "1":
            self.kafka.stop()


def start_secure_cluster(database_url: str) -> SecureCluster:
    port = _port()
    settings = Settings(dev_dir=str(FOLDER), dev_kafka_port=port,
                        dev_kafka_controller_port=port + 1)
    services = LocalServices.from_settings(settings, SHAPE)
    running = all(node.running_pid() is not None for node in services.kafka.nodes)
    services.up_kafka()
    return SecureCluster(services, database_url, started_here=not running)


def _port() -> int:
    """The client port of node 1: the one remembered with a running cluster, the one asked
    for, or the first block from 29192 whose nine ports are all free."""
    FOLDER.mkdir(parents=True, exist_ok=True)
    if PORTS_FILE.exists():
        remembered = int(json.loads(PORTS_FILE.read_text())["port"])
        folder = FOLDER / SHAPE.folder_name / "node-1" / "kafka.pid"
        from provisioning.devservices.process import read_pid

        if read_pid(folder) is not None:
            return remembered
    asked = os.environ.get("PROVISIONING_TEST_CLUSTER_KAFKA_PORT")
    candidates = [int(asked)] if asked else range(29192, 30000, 100)
    for base in candidates:
        ports = [base + PORT_STRIDE * n + k for n in range(SHAPE.brokers) for k in (0, 1, 2)]
        if not any(port_in_use(p) for p in ports):
            PORTS_FILE.write_text(json.dumps({"port": base}) + "\n")
            return base
    raise RuntimeError("no free block of ports for the test cluster from 29192; set "
                       "PROVISIONING_TEST_CLUSTER_KAFKA_PORT")
