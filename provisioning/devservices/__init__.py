"""Local Kafka and PostgreSQL for development, tests and CI (`provisioning dev ...`).

Both run from installed software (the official Kafka jars via Maven, the PostgreSQL server
binaries), on loopback ports, with their data under one project-local folder (`.local/` by
default). `up` is idempotent; `env` prints the exports every other command and test reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from provisioning.devservices.kafka import LocalKafka
from provisioning.devservices.postgres import LocalPostgres
from provisioning.devservices.process import DevServiceError, stop_pid
from provisioning.devservices.signing_key import DevSigningKey
from provisioning.settings import Settings

__all__ = ["DevServiceError", "LocalServices"]

DEV_TOPIC_PREFIX = "dev"


@dataclass(frozen=True, slots=True)
class LocalServices:
    kafka: LocalKafka
    postgres: LocalPostgres
    signing_key: DevSigningKey
    api_port: int

    @classmethod
    def from_settings(cls, settings: Settings) -> LocalServices:
        root = Path(settings.dev_dir).resolve()
        return cls(
            kafka=LocalKafka(root / "kafka", settings.dev_kafka_port,
                             settings.dev_kafka_controller_port),
            postgres=LocalPostgres(root / "postgres", settings.dev_postgres_port),
            signing_key=DevSigningKey(root / "auth"),
            api_port=settings.dev_api_port,
        )

    def up(self) -> list[str]:
        """Start what is not running and wait until both answer; lines saying what happened."""
        lines = []
        started = self.kafka.start()
        lines.append(f"kafka     {'started' if started else 'running'} on {self.kafka.bootstrap}")
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

    def down(self) -> list[str]:
        lines = []
        pid = self.kafka.running_pid()
        if pid is not None:
            stop_pid(pid)
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
        kafka_pid = self.kafka.running_pid()
        pg_pid = self.postgres.running_pid()
        return [
            _status_line("kafka", kafka_pid, self.kafka.bootstrap, self.kafka.log_file),
            _status_line("postgres", pg_pid, f"127.0.0.1:{self.postgres.port}",
                         self.postgres.log_file),
        ]

    def env(self) -> dict[str, str]:
        return {
            "PROVISIONING_KAFKA_BOOTSTRAP_SERVERS": self.kafka.bootstrap,
            "PROVISIONING_DATABASE_URL": self.postgres.url,
            "PROVISIONING_TOPIC_PREFIX": DEV_TOPIC_PREFIX,
            "PROVISIONING_AUTH_JWKS_FILE": str(self.signing_key.jwks_file),
            "PROVISIONING_API_URL": f"http://127.0.0.1:{self.api_port}",
        }


def _status_line(name: str, pid: int | None, where: str, log: Path) -> str:
    if pid is None:
        return f"{name:<9} stopped"
    return f"{name:<9} running on {where} (pid {pid}, log {log})"
