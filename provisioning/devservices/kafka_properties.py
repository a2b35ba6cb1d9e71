"""The `server.properties` of one node of the local Kafka cluster.

Every node is both broker and KRaft controller (combined mode): three JVMs instead of six on
a developer machine, and a controller quorum of three that survives the loss of any one node.
(A production cluster usually runs the controllers apart; nothing in the service depends on
which.) Replication follows the node count: with three nodes every topic, the consumer offsets
and the transaction state get three replicas and `min.insync.replicas=2`, so one node may be
down without stopping writes; a single node needs 1 and 1, or transactions never initialise.

Secure clusters have three listeners per node:

- CLIENT (SASL_SSL, SCRAM-SHA-512): every client of the service, each under its own principal;
- INTERNAL (SSL, client certificate required): replication between brokers;
- CONTROLLER (SSL, client certificate required): the KRaft quorum and broker registration.

The nodes prove who they are with the broker certificate (`kafka_tls.py`), whose CN becomes
the principal `User:kafka-broker`; the standard authorizer denies everything not granted by an
ACL, except to that principal and the operator (the super users).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from provisioning.devservices.kafka_tls import BROKER_NAME, ClusterCertificates

OPERATOR_PRINCIPAL = "User:provisioning-operator"


@dataclass(frozen=True, slots=True)
class Replication:
    """The replication a cluster of `nodes` nodes gives every topic."""

    factor: int
    min_insync: int

    @classmethod
    def for_nodes(cls, nodes: int) -> Replication:
        factor = min(nodes, 3)
        return cls(factor=factor, min_insync=max(1, factor - 1))


@dataclass(frozen=True, slots=True)
class NodeAddress:
    node_id: int
    port: int  # clients
    controller_port: int
    internal_port: int  # broker to broker (secure clusters only)


def render(node: NodeAddress, voters: list[NodeAddress], log_dir: Path,
           certificates: ClusterCertificates | None) -> str:
    """The properties file of `node` in a cluster whose controller quorum is `voters`."""
    replication = Replication.for_nodes(len(voters))
    lines = [
        "# Local development cluster: every node is broker and KRaft controller, loopback only.",
        "process.roles=broker,controller",
        f"node.id={node.node_id}",
        "controller.quorum.voters="
        + ",".join(f"{v.node_id}@127.0.0.1:{v.controller_port}" for v in voters),
        "controller.listener.names=CONTROLLER",
        f"log.dirs={log_dir}",
        "auto.create.topics.enable=false",
        "num.partitions=1",
        f"default.replication.factor={replication.factor}",
        f"min.insync.replicas={replication.min_insync}",
        "# Internal topics: as many replicas as the service's own, or consumer groups and",
        "# transactions never initialise on a single node.",
        f"offsets.topic.replication.factor={replication.factor}",
        "offsets.topic.num.partitions=12",
        f"transaction.state.log.replication.factor={replication.factor}",
        f"transaction.state.log.min.isr={replication.min_insync}",
        "transaction.state.log.num.partitions=12",
        f"share.coordinator.state.topic.replication.factor={replication.factor}",
        f"share.coordinator.state.topic.min.isr={replication.min_insync}",
        "# Tests create many short-lived consumer groups; do not wait for more members to join.",
        "group.initial.rebalance.delay.ms=0",
        "# Let the compacted state topic be cleaned promptly on a developer machine.",
        "log.cleaner.backoff.ms=1000",
    ]
    lines += _secure(node, certificates) if certificates else _plaintext(node)
    return "\n".join(lines) + "\n"


def _plaintext(node: NodeAddress) -> list[str]:
    return [
        f"listeners=PLAINTEXT://127.0.0.1:{node.port},"
        f"CONTROLLER://127.0.0.1:{node.controller_port}",
        f"advertised.listeners=PLAINTEXT://127.0.0.1:{node.port}",
        "inter.broker.listener.name=PLAINTEXT",
        "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
    ]


def _secure(node: NodeAddress, certificates: ClusterCertificates) -> list[str]:
    return [
        f"listeners=CLIENT://127.0.0.1:{node.port},"
        f"INTERNAL://127.0.0.1:{node.internal_port},"
        f"CONTROLLER://127.0.0.1:{node.controller_port}",
        f"advertised.listeners=CLIENT://127.0.0.1:{node.port},"
        f"INTERNAL://127.0.0.1:{node.internal_port}",
        "inter.broker.listener.name=INTERNAL",
        "listener.security.protocol.map=CLIENT:SASL_SSL,INTERNAL:SSL,CONTROLLER:SSL",
        "# Clients: SCRAM-SHA-512 over TLS; the credentials live in the cluster metadata.",
        "sasl.enabled.mechanisms=SCRAM-SHA-512",
        "listener.name.client.sasl.enabled.mechanisms=SCRAM-SHA-512",
        "listener.name.client.scram-sha-512.sasl.jaas.config="
        "org.apache.kafka.common.security.scram.ScramLoginModule required;",
        "# Nodes among themselves: mutual TLS with the broker certificate.",
        "listener.name.internal.ssl.client.auth=required",
        "listener.name.controller.ssl.client.auth=required",
        "ssl.keystore.type=PEM",
        f"ssl.keystore.location={certificates.broker_keystore}",
        "ssl.truststore.type=PEM",
        f"ssl.truststore.location={certificates.ca_cert}",
        "ssl.principal.mapping.rules=RULE:^CN=([^,]+)$/$1/,DEFAULT",
        "# Deny what no ACL grants; the nodes and the operator (who applies the ACLs) may all.",
        "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "allow.everyone.if.no.acl.found=false",
        f"super.users=User:{BROKER_NAME};{OPERATOR_PRINCIPAL}",
    ]
