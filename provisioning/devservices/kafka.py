"""A local Apache Kafka cluster in KRaft mode, run from the official jars: one node by default,
or several (`dev up --brokers 3`), optionally secured (`dev up --secure`).

The jars come from Maven Central: `pom.xml` beside this file names kafka_2.13, and Maven
resolves it with its runtime dependencies into the local Maven cache once. The resolved
classpath is cached under the data dir, keyed by the pom's hash, so later starts need no Maven.

Every node is a broker and a KRaft controller (`kafka_properties.py` says why and what each
listens on). Node n of a cluster listens for clients on `PROVISIONING_DEV_KAFKA_PORT` plus
10·(n−1), for the controller quorum on `PROVISIONING_DEV_KAFKA_CONTROLLER_PORT` plus
10·(n−1), and, when secure, for the other brokers on the port after that. A single plain node
keeps the layout it always had (its files directly in `.local/kafka`); other shapes have a
folder of their own (`.local/kafka-3nodes-secure/node-1`, ...), so switching shapes never
mixes the data of two clusters.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import os
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from provisioning.devservices.kafka_principals import DevPrincipals
from provisioning.devservices.kafka_properties import NodeAddress, Replication, render
from provisioning.devservices.kafka_tls import ClusterCertificates
from provisioning.devservices.process import (
    DevServiceError,
    port_in_use,
    read_pid,
    refuse_taken_port,
    require_executable,
    stop_pid,
    wait_until,
)

START_TIMEOUT_S = 90.0
# A node of a cluster replays the metadata log and catches up its replicas before it counts as
# started; three JVMs on a loaded two-core machine were seen to take 110 s.
CLUSTER_START_TIMEOUT_S = 300.0
PORT_STRIDE = 10  # node n's ports are node 1's plus PORT_STRIDE·(n−1)
ROLES = ("broker", "controller")


@dataclass(frozen=True, slots=True)
class ClusterShape:
    brokers: int = 1
    secure: bool = False

    @property
    def folder_name(self) -> str:
        if self == ClusterShape():
            return "kafka"
        nodes = f"-{self.brokers}nodes" if self.brokers > 1 else ""
        return f"kafka{nodes}{'-secure' if self.secure else ''}"

    def describe(self) -> str:
        size = "a single-node broker" if self.brokers == 1 else f"a {self.brokers}-node cluster"
        return f"{size}{' (TLS, SASL/SCRAM, ACLs)' if self.secure else ''}"

    @property
    def replication(self) -> Replication:
        return Replication.for_nodes(self.brokers)


@dataclass(frozen=True, slots=True)
class KafkaNode:
    address: NodeAddress
    folder: Path

    @property
    def node_id(self) -> int:
        return self.address.node_id

    @property
    def port(self) -> int:
        return self.address.port

    @property
    def pid_file(self) -> Path:
        return self.folder / "kafka.pid"

    @property
    def log_file(self) -> Path:
        return self.folder / "kafka.log"

    @property
    def data_dir(self) -> Path:
        return self.folder / "data"

    @property
    def properties_file(self) -> Path:
        return self.folder / "server.properties"

    def running_pid(self) -> int | None:
        return read_pid(self.pid_file)

    def quorum_state(self) -> dict[str, Any]:
        """This node's view of the KRaft quorum (leaderId, leaderEpoch), from its data dir."""
        path = self.data_dir / "__cluster_metadata-0" / "quorum-state"
        try:
            return dict(json.loads(path.read_text()))
        except (FileNotFoundError, ValueError):
            return {}


def new_cluster_id() -> str:
    """A cluster id as Kafka makes them (a random UUID in URL-safe base64), never one that
    begins with "-": the storage tool reads such an id as an option and refuses to format
    ("argument --cluster-id/-t: expected one argument", one fresh cluster in 64; Kafka's own
    `Uuid.randomUuid` draws again for the same reason)."""
    while True:
        made = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not made.startswith("-"):
            return made


@dataclass(frozen=True, slots=True)
class LocalKafka:
    folder: Path
    port: int
    controller_port: int
    shape: ClusterShape = ClusterShape()

    # --- what it is -------------------------------------------------------------------------

    @property
    def nodes(self) -> tuple[KafkaNode, ...]:
        single = self.shape == ClusterShape()
        return tuple(
            KafkaNode(self._address(n), self.folder if single else self.folder / f"node-{n}")
            for n in range(1, self.shape.brokers + 1))

    def node(self, node_id: int) -> KafkaNode:
        for node in self.nodes:
            if node.node_id == node_id:
                return node
        raise DevServiceError(f"no Kafka node {node_id}; nodes are 1 to {self.shape.brokers}")

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)

    @property
    def log_file(self) -> Path:
        return self.nodes[0].log_file

    @property
    def certificates(self) -> ClusterCertificates | None:
        return ClusterCertificates(self.folder / "tls") if self.shape.secure else None

    @property
    def principals(self) -> DevPrincipals | None:
        return DevPrincipals(self.folder / "principals.json") if self.shape.secure else None

    def running_pid(self) -> int | None:
        """The first running node's pid (None: no node runs)."""
        return next((pid for node in self.nodes if (pid := node.running_pid()) is not None),
                    None)

    def active_controller(self) -> int | None:
        """The node id that leads the controller quorum, by the newest epoch any node saw."""
        states = [node.quorum_state() for node in self.nodes if node.running_pid() is not None]
        known = [s for s in states if s.get("leaderId", -1) >= 0]
        if not known:
            return None
        return int(max(known, key=lambda s: s.get("leaderEpoch", -1))["leaderId"])

    def status(self) -> list[dict[str, Any]]:
        controller = self.active_controller()
        return [{"id": node.node_id, "roles": list(ROLES), "port": node.port,
                 "controller_port": node.address.controller_port,
                 "internal_port": node.address.internal_port if self.shape.secure else None,
                 "pid": node.running_pid(), "data_dir": str(node.data_dir),
                 "log": str(node.log_file), "active_controller": node.node_id == controller}
                for node in self.nodes]

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> bool:
        """Start every node that does not run and wait until the cluster answers; True when
        this call started any. A secure cluster gets its certificates and SCRAM users."""
        stopped = [node for node in self.nodes if node.running_pid() is None]
        if stopped:
            java = require_executable("java", "install a Java 17+ runtime (e.g. openjdk-17-jre)")
            for node in stopped:
                self._refuse_taken_ports(node)
            self.folder.mkdir(parents=True, exist_ok=True)
            if self.certificates is not None:
                self.certificates.ensure()
            classpath = self._classpath()
            for node in stopped:
                self._prepare(node, java, classpath)
            for node in stopped:
                self._spawn(node, java, classpath)
        wait_until(self.answers, self._start_timeout_s, self.shape.describe(), self.log_file)
        if self.principals is not None:
            self._with_admin(self.principals.register, probe=False)
        return bool(stopped)

    def stop(self) -> bool:
        """Stop every node (controlled shutdown); True when any ran."""
        running = [node for node in self.nodes if node.running_pid() is not None]
        for node in running:
            self.stop_node(node.node_id)
        return bool(running)

    def start_node(self, node_id: int) -> None:
        """Start one stopped node and wait until the cluster counts it again."""
        node = self.node(node_id)
        if node.running_pid() is None:
            java = require_executable("java", "install a Java 17+ runtime")
            self._refuse_taken_ports(node)
            self._spawn(node, java, self._classpath())
        wait_until(lambda: self.answers([node_id]), self._start_timeout_s,
                   f"Kafka node {node_id}", node.log_file)

    def stop_node(self, node_id: int) -> None:
        """SIGTERM: the node hands its partitions over and leaves (controlled shutdown)."""
        pid = self.node(node_id).running_pid()
        if pid is not None:
            stop_pid(pid, timeout_s=60)

    def kill_node(self, node_id: int) -> None:
        """kill -9: the node is gone at once, without handing anything over."""
        node = self.node(node_id)
        pid = node.running_pid()
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        wait_until(lambda: node.running_pid() is None, 10, f"kill -9 of Kafka node {node_id}",
                   None)

    # --- clients of the cluster itself ------------------------------------------------------

    def admin_config(self) -> dict[str, Any]:
        """librdkafka settings of an all-powerful client: plaintext on a plain cluster; on a
        secure one the broker identity (client certificate) over the broker-to-broker
        listener, which needs no SCRAM user (it registers them)."""
        if self.certificates is None:
            return {"bootstrap.servers": self.bootstrap}
        return {
            "bootstrap.servers": ",".join(f"127.0.0.1:{n.address.internal_port}"
                                          for n in self.nodes),
            "security.protocol": "ssl",
            "ssl.ca.location": str(self.certificates.ca_cert),
            "ssl.certificate.location": str(self.certificates.broker_cert),
            "ssl.key.location": str(self.certificates.broker_key),
        }

    def answers(self, node_ids: list[int] | None = None) -> bool:
        """The nodes (default: all) run and are registered with the cluster (not just an
        open port)."""
        nodes = [self.node(n) for n in node_ids] if node_ids else list(self.nodes)
        stopped = [node for node in nodes if node.running_pid() is None]
        if stopped:
            raise DevServiceError(f"Kafka node {stopped[0].node_id} exited; "
                                  f"see {stopped[0].log_file}")
        if not all(port_in_use(node.port) for node in nodes):
            return False
        try:
            brokers = self._with_admin(lambda admin: admin.list_topics(timeout=2).brokers)
        except Exception:  # noqa: BLE001 - any failure here means "not yet"
            return False
        return {node.node_id for node in nodes} <= set(brokers)

    def _with_admin(self, use: Any, probe: bool = True) -> Any:
        """`use(admin)` with an all-powerful admin client; a probe gives up after 2 s."""
        from confluent_kafka.admin import AdminClient

        quiet = logging.getLogger("provisioning.devservices.kafka.probe")
        quiet.setLevel(logging.CRITICAL)
        timeouts = {"socket.timeout.ms": 2000} if probe else {}
        return use(AdminClient({**self.admin_config(), **timeouts}, logger=quiet))

    # --- internals -------------------------------------------------------------------------

    @property
    def _start_timeout_s(self) -> float:
        return START_TIMEOUT_S if self.shape.brokers == 1 else CLUSTER_START_TIMEOUT_S

    def _address(self, node_id: int) -> NodeAddress:
        offset = PORT_STRIDE * (node_id - 1)
        return NodeAddress(node_id, self.port + offset, self.controller_port + offset,
                           self.controller_port + offset + 1)

    def _refuse_taken_ports(self, node: KafkaNode) -> None:
        which = "Kafka" if self.shape.brokers == 1 else f"Kafka node {node.node_id}"
        hint = "" if node.node_id == 1 else f" (node {node.node_id} uses it plus " \
                                            f"{PORT_STRIDE * (node.node_id - 1)})"
        refuse_taken_port(node.port, which, "PROVISIONING_DEV_KAFKA_PORT" + hint)
        refuse_taken_port(node.address.controller_port, f"the controller of {which}",
                          "PROVISIONING_DEV_KAFKA_CONTROLLER_PORT" + hint)
        if self.shape.secure:
            refuse_taken_port(node.address.internal_port, f"the broker listener of {which}",
                              "PROVISIONING_DEV_KAFKA_CONTROLLER_PORT (plus one)" + hint)

    def _prepare(self, node: KafkaNode, java: str, classpath: str) -> None:
        node.folder.mkdir(parents=True, exist_ok=True)
        voters = [n.address for n in self.nodes]
        node.properties_file.write_text(
            render(node.address, voters, node.data_dir, self.certificates))
        if (node.data_dir / "meta.properties").exists():
            return
        result = subprocess.run(
            [java, "-cp", classpath, "kafka.tools.StorageTool", "format",
             "-t", self._cluster_id(), "-c", str(node.properties_file)],
            capture_output=True, text=True, check=False)
        if result.returncode != 0:
            last = (result.stdout + result.stderr).strip().splitlines()[-1:]
            raise DevServiceError(f"formatting Kafka node {node.node_id}'s storage failed: "
                                  + " ".join(last))

    def _cluster_id(self) -> str:
        """One id for every node of the cluster, made once. One that begins with "-", left by
        an earlier start that could not format with it, is replaced (see `new_cluster_id`)."""
        path = self.folder / "cluster-id"
        if path.exists():
            kept = path.read_text().strip()
            if kept and not kept.startswith("-"):
                return kept
        made = new_cluster_id()
        path.write_text(made)
        return made

    def _spawn(self, node: KafkaNode, java: str, classpath: str) -> None:
        with node.log_file.open("ab") as log:
            process = subprocess.Popen(
                [java, *self._jvm_options(), "-cp", classpath, "kafka.Kafka",
                 str(node.properties_file)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)
        node.pid_file.write_text(str(process.pid))
        time.sleep(0.1)  # a JVM that cannot start at all exits at once: answers() says so

    def _jvm_options(self) -> list[str]:
        log4j = resources.files("provisioning.devservices") / "log4j2.xml"
        options = ["-Xms256m", "-Xmx1g", "-XX:+UseG1GC", "-Djava.awt.headless=true",
                   f"-Dlog4j2.configurationFile={log4j}"]
        if self.shape.brokers > 1:
            # Several JVMs share a developer machine's cores: the C1 compiler only (a fraction
            # of the start-up CPU of C2) and one GC thread each. Throughput here is the
            # service's, not the brokers'.
            options += ["-XX:TieredStopAtLevel=1", "-XX:CICompilerCount=1",
                        "-XX:ParallelGCThreads=1", "-XX:ConcGCThreads=1"]
        return options

    def _classpath(self) -> str:
        pom = Path(str(resources.files("provisioning.devservices") / "pom.xml"))
        digest = hashlib.sha256(pom.read_bytes()).hexdigest()[:16]
        self.folder.mkdir(parents=True, exist_ok=True)
        cached = self.folder / f"classpath-{digest}.txt"
        if cached.exists():
            return cached.read_text().strip()
        mvn = require_executable(
            "mvn", "install Maven (needed once to fetch the Kafka jars from Maven Central)"
        )
        result = subprocess.run(
            [mvn, "-q", "-B", "-f", str(pom), "dependency:build-classpath",
             f"-Dmdep.outputFile={cached}"],
            capture_output=True, text=True, check=False,
        )
        if result.returncode != 0 or not cached.exists():
            tail = (result.stdout + result.stderr).strip().splitlines()[-3:]
            cached.unlink(missing_ok=True)
            raise DevServiceError("Maven could not resolve the Kafka jars: " + " | ".join(tail))
        return cached.read_text().strip()
