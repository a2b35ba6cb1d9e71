"""Settings map to librdkafka's keys and keep secrets out of reprs."""

from __future__ import annotations

from provisioning.settings import Settings


def test_kafka_config_passes_sasl_ssl_through_with_dotted_keys() -> None:
    settings = Settings(
        kafka_bootstrap_servers="broker:9093",
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="svc",
        kafka_sasl_password="s3cr3t",
        kafka_ssl_ca_location="/etc/ca.pem",
    )

    assert settings.kafka_config() == {
        "bootstrap.servers": "broker:9093",
        "security.protocol": "sasl_ssl",
        "client.id": "provisioning-service",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "svc",
        "sasl.password": "s3cr3t",
        "ssl.ca.location": "/etc/ca.pem",
    }


def test_secrets_do_not_appear_in_repr() -> None:
    settings = Settings(
        kafka_sasl_password="s3cr3t",
        database_url="postgresql+psycopg://u:hunter2@db/x",
    )

    assert "s3cr3t" not in repr(settings)
    assert "hunter2" not in repr(settings)


def test_settings_are_frozen() -> None:
    settings = Settings()
    try:
        settings.topic_prefix = "x"  # type: ignore[misc]
    except Exception as exc:  # noqa: BLE001
        assert "frozen" in str(exc).lower()
    else:
        raise AssertionError("settings must be immutable")
