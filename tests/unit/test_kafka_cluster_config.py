"""The local cluster's shape: ports, folders, replication and the secure listeners."""

from __future__ import annotations

import stat
from pathlib import Path

from provisioning.devservices import ClusterShape, LocalServices
from provisioning.devservices.kafka import LocalKafka
from provisioning.devservices.kafka_principals import DEV_ROLES, DevPrincipals
from provisioning.devservices.kafka_properties import NodeAddress, Replication, render
from provisioning.devservices.kafka_tls import ClusterCertificates
from provisioning.settings import Settings


def _properties(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines()
                if line and not line.startswith("#"))


def test_a_single_plain_node_keeps_its_folder_ports_and_replication_of_one(
        tmp_path: Path) -> None:
    kafka = LocalKafka(tmp_path / "kafka", 19092, 19093)
    (node,) = kafka.nodes
    props = _properties(render(node.address, [node.address], node.data_dir, None))

    assert node.folder == tmp_path / "kafka" and kafka.bootstrap == "127.0.0.1:19092"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert (props["offsets.topic.replication.factor"], props["transaction.state.log.min.isr"],
            props["min.insync.replicas"]) == ("1", "1", "1")


def test_three_nodes_each_broker_and_controller_with_three_replicas_and_min_isr_two(
        tmp_path: Path) -> None:
    shape = ClusterShape(brokers=3, secure=True)
    kafka = LocalKafka(tmp_path / shape.folder_name, 39092, 39093, shape)
    voters = [n.address for n in kafka.nodes]
    props = _properties(render(voters[1], voters, tmp_path / "data",
                               ClusterCertificates(tmp_path / "tls")))

    assert [n.folder.name for n in kafka.nodes] == ["node-1", "node-2", "node-3"]
    assert kafka.bootstrap == "127.0.0.1:39092,127.0.0.1:39102,127.0.0.1:39112"
    assert voters[1] == NodeAddress(2, 39102, 39103, 39104)
    assert props["process.roles"] == "broker,controller" and props["node.id"] == "2"
    assert props["controller.quorum.voters"] == (
        "1@127.0.0.1:39093,2@127.0.0.1:39103,3@127.0.0.1:39113")
    for key in ("default.replication.factor", "offsets.topic.replication.factor",
                "transaction.state.log.replication.factor"):
        assert props[key] == "3", key
    assert props["min.insync.replicas"] == props["transaction.state.log.min.isr"] == "2"
    assert props["listener.security.protocol.map"] == (
        "CLIENT:SASL_SSL,INTERNAL:SSL,CONTROLLER:SSL")
    assert props["allow.everyone.if.no.acl.found"] == "false"
    assert props["super.users"] == "User:kafka-broker;User:provisioning-operator"
    assert Replication.for_nodes(2) == Replication(factor=2, min_insync=1)


def test_the_ca_and_broker_key_are_made_once_and_kept_private(tmp_path: Path) -> None:
    tls = ClusterCertificates(tmp_path / "tls").ensure()
    first = tls.ca_cert.read_bytes()

    assert ClusterCertificates(tmp_path / "tls").ensure().ca_cert.read_bytes() == first
    for private in (tls.ca_key, tls.broker_key, tls.broker_keystore):
        assert stat.S_IMODE(private.stat().st_mode) == 0o600, private
    assert b"PRIVATE KEY" in tls.broker_keystore.read_bytes()


def test_every_role_gets_a_password_kept_across_calls_in_a_private_file(
        tmp_path: Path) -> None:
    principals = DevPrincipals(tmp_path / "principals.json")
    first = {c.role: c for c in principals.ensure()}
    again = {c.role: c for c in principals.ensure()}

    assert set(first) == set(DEV_ROLES)
    assert first["worker"].username == "provisioning-worker"
    assert first["participant:entity-management"].username == "participant-entity-management"
    assert {r: c.password.get_secret_value() for r, c in first.items()} == {
        r: c.password.get_secret_value() for r, c in again.items()}
    assert "SecretStr('**********')" in repr(first["worker"])
    assert stat.S_IMODE(principals.file.stat().st_mode) == 0o600


def test_dev_env_prints_the_settings_of_a_role_on_a_secure_cluster(tmp_path: Path) -> None:
    settings = Settings(dev_dir=str(tmp_path), dev_kafka_port=39092,
                        dev_kafka_controller_port=39093)
    services = LocalServices.from_settings(settings, ClusterShape(brokers=3, secure=True))
    services.kafka.principals.ensure()  # type: ignore[union-attr]

    env = services.env("participant")

    assert env["PROVISIONING_KAFKA_SASL_USERNAME"] == "participant-entity-management"
    assert env["PROVISIONING_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert env["PROVISIONING_KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
    assert env["PROVISIONING_KAFKA_SSL_CA_LOCATION"].endswith("tls/ca.crt")
    assert env["PROVISIONING_TOPIC_REPLICATION_FACTOR"] == "3"
    assert env["PROVISIONING_REQUIRED_MIN_INSYNC_REPLICAS"] == "2"
    assert services.env()["PROVISIONING_KAFKA_SASL_USERNAME"] == "provisioning-operator"
