"""The one settings object of the service.

Every process (worker, projector, API, CLI, tests) reads its configuration through
`Settings`, from environment variables prefixed `PROVISIONING_` (and an optional `.env`
file). Nothing else in the code reads `os.environ` for configuration.

`Settings.kafka_config()` maps the typed fields to librdkafka's dotted keys, so SASL/SSL
settings pass straight through to confluent-kafka without each caller knowing the names.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
DEFAULT_MAX_COMMAND_BYTES = 64 * 1024
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER", "GSSAPI"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="PROVISIONING_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
    )

    # --- Kafka connection -------------------------------------------------------------
    kafka_bootstrap_servers: str = Field(
        "127.0.0.1:19092", description="Comma-separated host:port list of Kafka brokers."
    )
    kafka_security_protocol: SecurityProtocol = "PLAINTEXT"
    kafka_sasl_mechanism: SaslMechanism | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_ca_location: str | None = None
    kafka_ssl_certificate_location: str | None = None
    kafka_ssl_key_location: str | None = None
    kafka_ssl_key_password: SecretStr | None = None
    kafka_client_id: str = "provisioning-service"

    # --- Topics -----------------------------------------------------------------------
    topic_prefix: str = Field(
        "",
        description="Namespace put before every topic name ('dev' -> 'dev.provisioning.commands'),"
        " so several environments can share one cluster.",
    )
    topic_partitions: int = Field(12, ge=1, le=10_000)
    topic_replication_factor: int | None = Field(
        None, ge=1, le=10,
        description="Replicas of the topics `topics create` makes (unset: the brokers' "
        "default.replication.factor).",
    )
    topic_min_insync_replicas: int | None = Field(
        None, ge=1, le=10,
        description="min.insync.replicas `topics create` sets on the service's topics (unset: "
        "the brokers' default). With acks=all a write then needs this many replicas.",
    )
    required_min_insync_replicas: int = Field(
        1, ge=1, le=10,
        description="The least min.insync.replicas the worker accepts, at start, on the "
        "transaction-state topic and on its state and events topics (and their replication "
        "factor must reach it): a cluster that acknowledges a commit on fewer copies could "
        "lose a committed saga with one broker.",
    )

    # --- Commands ---------------------------------------------------------------------------
    max_command_bytes: int = Field(
        DEFAULT_MAX_COMMAND_BYTES, ge=1024, le=900_000,
        description="Largest command accepted: the API answers 413 above it, the worker sends it "
        "to the DLQ (a tenant command with its billing details is under 2 KB). `topics create` "
        "sets the commands topic's max.message.bytes from it.",
    )
    idempotency_window_s: int = Field(
        7 * 24 * 3600, ge=1, le=365 * 24 * 3600,
        description="How long the worker keeps a finished saga after its end: a resend within "
        "it is answered from the saga (the seed's idempotency); after it the worker forgets "
        "it. The API still answers from the projection, and the participants' idempotency keys "
        "keep a resend from provisioning twice.",
    )
    reply_topic_pattern: str | None = Field(
        None, description="Regular expression a command's replyTo must match in full (unset: any "
        "topic). The service's own topics and internal topics (__*) are refused whatever it says.",
    )

    # --- Operations -------------------------------------------------------------------------
    metrics_port: int | None = Field(
        None, ge=0, le=65535,
        description="Port of /metrics, /healthz and /readyz (unset: not served).",
    )

    # --- Steps ----------------------------------------------------------------------------
    routing_file: str | None = Field(
        None, description="TOML file routing steps to built-in, kafka:<participant> or http(s) "
        "adapters, with retry and deadline overrides (see consumer/routing.py)."
    )

    # --- PostgreSQL -------------------------------------------------------------------
    database_url: SecretStr = Field(
        SecretStr("postgresql+psycopg://provisioning:provisioning-dev@127.0.0.1:15432/provisioning"),
        description="SQLAlchemy URL of the service's database (contains a password: secret).",
    )
    builtin_concurrency: int = Field(
        8, ge=1, le=256,
        description="Built-in participant calls a worker process runs at once, each on its own "
        "database connection; the other step threads wait their turn asleep. More is slower on "
        "a small machine: threads contending for the interpreter lock cost CPU (README, "
        "Performance).",
    )

    # --- REST API (`provisioning api`) and its callers ----------------------------------
    api_url: str = Field(
        "http://127.0.0.1:18080", description="Where the CLI's submit/status/events/retry call."
    )
    api_token: SecretStr | None = Field(
        None, description="Bearer token the CLI sends (see `provisioning token`)."
    )
    api_max_wait_s: float = Field(
        60.0, ge=0, le=600, description="Longest `?wait=` a caller may ask for."
    )
    console_stuck_after_s: int = Field(
        900, ge=10, le=7 * 86_400,
        description="The console calls a running request stuck when its row has not changed "
        "for this long (the provisioning_stuck_requests view's default: 15 minutes).",
    )
    auth_issuer: str = Field("provisioning-dev", description="Required `iss` of bearer tokens.")
    auth_audience: str = Field("provisioning-api", description="Required `aud` of bearer tokens.")
    auth_jwks_file: str | None = Field(
        None, description="JSON Web Key Set file with the keys that may sign tokens."
    )
    auth_jwks_url: str | None = Field(
        None, description="JWKS URL of the identity provider (used when no file is set)."
    )
    auth_algorithms: tuple[str, ...] = ("RS256", "ES256", "EdDSA")
    auth_leeway_s: int = Field(30, ge=0, le=300, description="Clock skew allowed on exp/nbf.")
    auth_jwks_lifespan_s: float = Field(
        300.0, gt=0, le=86_400,
        description="How long keys fetched from the JWKS URL are trusted before the set is "
        "fetched again: a key the identity provider withdrew is refused after at most this long.",
    )
    auth_jwks_timeout_s: float = Field(
        2.0, gt=0, le=30,
        description="Longest one fetch of the JWKS URL may take; past it the call is answered "
        "503 (the keys are unknown, not the token wrong).",
    )
    auth_jwks_min_refetch_s: float = Field(
        5.0, ge=0, le=300,
        description="Shortest time between two fetches of the JWKS URL: a token with an unknown "
        "kid, or a provider that failed, fetches the set again at most this often.",
    )

    # --- Local development services (`provisioning dev ...`) ----------------------------
    dev_dir: str = Field(".local", description="Where the local broker and database keep data.")
    dev_kafka_port: int = 19092
    dev_kafka_controller_port: int = 19093
    dev_postgres_port: int = 15432
    dev_api_port: int = 18080

    @field_validator("reply_topic_pattern")
    @classmethod
    def _compiles(cls, pattern: str | None) -> str | None:
        if pattern is not None:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"not a regular expression: {exc}") from None
        return pattern

    def kafka_config(self) -> dict[str, Any]:
        """librdkafka's dotted keys for the connection; add role-specific keys on top."""
        config: dict[str, Any] = {
            "bootstrap.servers": self.kafka_bootstrap_servers,
            "security.protocol": self.kafka_security_protocol.lower(),
            "client.id": self.kafka_client_id,
        }
        optional = {
            "sasl.mechanism": self.kafka_sasl_mechanism,
            "sasl.username": self.kafka_sasl_username,
            "sasl.password": _reveal(self.kafka_sasl_password),
            "ssl.ca.location": self.kafka_ssl_ca_location,
            "ssl.certificate.location": self.kafka_ssl_certificate_location,
            "ssl.key.location": self.kafka_ssl_key_location,
            "ssl.key.password": _reveal(self.kafka_ssl_key_password),
        }
        config.update({key: value for key, value in optional.items() if value is not None})
        return config

    def database_url_plain(self) -> str:
        return self.database_url.get_secret_value()


def _reveal(secret: SecretStr | None) -> str | None:
    return None if secret is None else secret.get_secret_value()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
