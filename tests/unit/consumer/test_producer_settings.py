"""Every producer of the service writes with acks=all and idempotence, on any cluster."""

from __future__ import annotations

from pydantic import SecretStr

from consumer.kafka_clients import transactional_config
from producers.commands import command_producer_config, producer_config
from provisioning.settings import Settings

SECURE = Settings(kafka_bootstrap_servers="k1:9093,k2:9093,k3:9093",
                  kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="SCRAM-SHA-512",
                  kafka_sasl_username="provisioning-worker", kafka_sasl_password=SecretStr("x"))


def test_every_producer_waits_for_all_in_sync_replicas_and_is_idempotent() -> None:
    for config in (producer_config(SECURE), command_producer_config(SECURE),
                   transactional_config(SECURE, "provisioning-worker-0")):
        assert (config["acks"], config["enable.idempotence"]) == ("all", True)
        assert config["bootstrap.servers"] == "k1:9093,k2:9093,k3:9093"  # every broker
        assert config["partitioner"] == "murmur2_random"
        assert callable(config["error_cb"])  # a refused login raises instead of retrying
