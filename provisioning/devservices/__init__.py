"""Local Kafka and PostgreSQL for development, tests and CI (`provisioning dev ...`).

Both run from installed software (the official Kafka jars via Maven, the PostgreSQL server
binaries), on loopback ports, with their data under one project-local folder (`.local/` by
default). `up` is idempotent; `env` prints the exports every other command and test reads.

Kafka runs as one plain node unless `up` is asked for more (`--brokers 3`) or for TLS, SASL
and ACLs (`--secure`). The shape last brought up is recorded in the folder
(`kafka-cluster.json`), so `status`, `env` and `down` speak of the cluster that runs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from provisioning.devservices.kafka import ClusterShape, LocalKafka
from provisioning.devservices.kafka_principals import DEV_PARTICIPANT, role_named
from provisioning.devservices.postgres import LocalPostgres
from provisioning.devservices.process import DevServiceError
from provisioning.devservices.signing_key import DevSigningKey
from provisioning.settings import Settings

__all__ = ["ClusterShape", "DevServiceError", "LocalServices"]

DEV_TOPIC_PREFIX = "dev"
SHAPE_FILE = "kafka-cluster.json"


@dataclass(frozen=True, slots=True)
class LocalServices:
    kafka: LocalKafka
    postgres: LocalPostgres
    signing_key: DevSigningKey
    api_port: int

    @classmethod
    def from_settings(cls, settings: Settings, shape: ClusterShape | None = None,
                      ) -> LocalServices:
        """The local services; Kafka in `shape`, or in the shape last brought up."""
        root = Path(settings.dev_dir).resolve()
        shape = shape or recorded_shape(root)
        return cls(
            kafka=LocalKafka(root / shape.folder_name, settings.dev_kafka_port,
                             settings.dev_kafka_controller_port, shape),
            postgres=LocalPostgres(root / "postgres", settings.dev_postgres_port),
            signing_key=DevSigningKey(root / "auth"),
            api_port=settings.dev_api_port,
        )

    @property
    def root(self) -> Path:
        return self.postgres.root.parent

    def up(self) -> list[str]:
        """Start what is not running and wait until both answer; lines saying what happened."""
        lines = self.up_kafka()
        started = self.postgres.start()
        if not self.postgres.service_answers():
            raise DevServiceError(
                "PostgreSQL runs but the service database does not answer; "
                f"see {self.postgres.log_file}"
            )
        lines.append(
            f"postgres  {'started' if started else 'running'} on 127.0.0.1:{self.postgres.port}"
        )
        self.signing_key.ensure()
        lines.append(f"auth      dev signing key in {self.signing_key.folder}")
        return lines

    def up_kafka(self) -> list[str]:
        """Kafka alone (the tests' secure cluster beside the shared database)."""
        self._refuse_other_shape()
        _record_shape(self.root, self.kafka.shape)
        started = self.kafka.start()
        lines = [f"kafka     {'started' if started else 'running'} on {self.kafka.bootstrap}"
                 + ("" if self.kafka.shape == ClusterShape()
                    else f" ({self.kafka.shape.describe()})")]
        if self.kafka.shape.secure:
            self._apply_dev_acls()
            lines.append(f"kafka     a principal per role, ACLs for topic prefix "
                         f"{DEV_TOPIC_PREFIX!r}: `provisioning dev env --role ROLE`")
        return lines

    def down(self) -> list[str]:
        lines = []
        if self.kafka.stop():
            lines.append("kafka     stopped")
        else:
            lines.append("kafka     was not running")
        if self.postgres.running_pid() is not None:
            self.postgres.stop()
            lines.append("postgres  stopped")
        else:
            lines.append("postgres  was not running")
        return lines

    def status(self) -> list[str]:
        lines = []
        for node in self.kafka.status():
            name = "kafka" if len(self.kafka.nodes) == 1 else f"kafka-{node['id']}"
            where = f"127.0.0.1:{node['port']}"
            lines.append(_status_line(name, node["pid"], where, Path(node["log"])))
        pg_pid = self.postgres.running_pid()
        lines.append(_status_line("postgres", pg_pid, f"127.0.0.1:{self.postgres.port}",
                                  self.postgres.log_file))
        return lines

    def status_json(self) -> dict[str, Any]:
        shape = self.kafka.shape
        return {
            "kafka": {"brokers": shape.brokers, "secure": shape.secure,
                      "bootstrap": self.kafka.bootstrap,
                      "replication_factor": shape.replication.factor,
                      "min_insync_replicas": shape.replication.min_insync,
                      "nodes": self.kafka.status()},
            "postgres": {"port": self.postgres.port, "pid": self.postgres.running_pid(),
                         "data_dir": str(self.postgres.data_dir)},
        }

    def env(self, role: str | None = None) -> dict[str, str]:
        """The settings of the local services; on a secure cluster those of `role` (default:
        the operator, who runs the admin commands)."""
        env = {
            "PROVISIONING_KAFKA_BOOTSTRAP_SERVERS": self.kafka.bootstrap,
            "PROVISIONING_DATABASE_URL": self.postgres.url,
            "PROVISIONING_TOPIC_PREFIX": DEV_TOPIC_PREFIX,
            "PROVISIONING_AUTH_JWKS_FILE": str(self.signing_key.jwks_file),
            "PROVISIONING_API_URL": f"http://127.0.0.1:{self.api_port}",
        }
        replication = self.kafka.shape.replication
        if replication.factor > 1:
            env |= {"PROVISIONING_TOPIC_REPLICATION_FACTOR": str(replication.factor),
                    "PROVISIONING_TOPIC_MIN_INSYNC_REPLICAS": str(replication.min_insync),
                    "PROVISIONING_REQUIRED_MIN_INSYNC_REPLICAS": str(replication.min_insync)}
        return env | self.kafka_client_env(role)

    def kafka_client_env(self, role: str | None) -> dict[str, str]:
        """The Kafka security settings of `role` (nothing on a plain cluster)."""
        principals, certificates = self.kafka.principals, self.kafka.certificates
        if principals is None or certificates is None:
            if role not in (None, "operator"):
                raise DevServiceError("roles have their own principals only on a secure "
                                      "cluster (`provisioning dev up --secure`)")
            return {}
        credentials = principals.of(role_named(role or "operator"))
        return {
            "PROVISIONING_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "PROVISIONING_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "PROVISIONING_KAFKA_SASL_USERNAME": credentials.username,
            "PROVISIONING_KAFKA_SASL_PASSWORD": credentials.password.get_secret_value(),
            "PROVISIONING_KAFKA_SSL_CA_LOCATION": str(certificates.ca_cert),
        }

    def _apply_dev_acls(self) -> None:
        from confluent_kafka.admin import AdminClient

        from provisioning.acls import AclPlan, apply_grants, service_grants
        from provisioning.topics import TopicLayout

        plan = AclPlan(TopicLayout(DEV_TOPIC_PREFIX), participants=(DEV_PARTICIPANT,))
        apply_grants(AdminClient(self.kafka.admin_config()), service_grants(plan))

    def _refuse_other_shape(self) -> None:
        recorded = recorded_shape(self.root)
        if recorded == self.kafka.shape:
            return
        other = LocalKafka(self.root / recorded.folder_name, self.kafka.port,
                           self.kafka.controller_port, recorded)
        if other.running_pid() is not None:
            raise DevServiceError(
                f"{recorded.describe()} runs from {other.folder}; stop it with "
                "`provisioning dev down` before starting "
                f"{self.kafka.shape.describe()}")


def recorded_shape(root: Path) -> ClusterShape:
    """The shape `dev up` last started in `root` (a single plain node if none was recorded)."""
    try:
        recorded = json.loads((root / SHAPE_FILE).read_text())
        return ClusterShape(brokers=int(recorded["brokers"]), secure=bool(recorded["secure"]))
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return ClusterShape()


def _record_shape(root: Path, shape: ClusterShape) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / SHAPE_FILE).write_text(json.dumps({"brokers": shape.brokers,
                                               "secure": shape.secure}) + "\n")


def _status_line(name: str, pid: int | None, where: str, log: Path) -> str:
    if pid is None:
        return f"{name:<9} stopped"
    return f"{name:<9} running on {where} (pid {pid}, log {log})"
