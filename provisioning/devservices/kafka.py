"""A single-node Apache Kafka broker in KRaft mode, run from the official jars.

The jars come from Maven Central: `pom.xml` beside this file names kafka_2.13, and Maven
resolves it with its runtime dependencies into the local Maven cache once. The resolved
classpath is cached under the data dir, keyed by the pom's hash, so later starts need no Maven.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import subprocess
import uuid
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from provisioning.devservices.process import (
    DevServiceError,
    port_in_use,
    read_pid,
    refuse_taken_port,
    require_executable,
    wait_until,
)

START_TIMEOUT_S = 90.0

SERVER_PROPERTIES = """\
# Local development broker: one node that is both broker and KRaft controller, loopback only.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{controller_port}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs={log_dir}
auto.create.topics.enable=false
num.partitions=1
# One node: internal topics must not ask for more replicas than exist, or consumer groups
# and transactions never initialise.
offsets.topic.replication.factor=1
offsets.topic.num.partitions=12
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=12
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
# Tests create many short-lived consumer groups; do not wait for more members to join.
group.initial.rebalance.delay.ms=0
# Let the compacted state topic be cleaned promptly on a developer machine.
log.cleaner.backoff.ms=1000
"""


@dataclass(frozen=True, slots=True)
class LocalKafka:
    root: Path
    port: int
    controller_port: int

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.root / "kafka.pid"

    @property
    def log_file(self) -> Path:
        return self.root / "kafka.log"

    def running_pid(self) -> int | None:
        return read_pid(self.pid_file)

    def start(self) -> bool:
        """Start the broker unless it runs; True when this call started it."""
        if self.running_pid() is not None:
            return False
        java = require_executable("java", "install a Java 17+ runtime (e.g. openjdk-17-jre)")
        refuse_taken_port(self.port, "Kafka", "PROVISIONING_DEV_KAFKA_PORT")
        refuse_taken_port(
            self.controller_port, "the Kafka controller", "PROVISIONING_DEV_KAFKA_CONTROLLER_PORT"
        )
        self.root.mkdir(parents=True, exist_ok=True)
        classpath = self._classpath()
        properties = self._write_properties()
        self._format_storage(java, classpath, properties)
        with self.log_file.open("ab") as log:
            process = subprocess.Popen(
                [java, *self._jvm_options(), "-cp", classpath, "kafka.Kafka", str(properties)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.pid_file.write_text(str(process.pid))
        wait_until(self.answers, START_TIMEOUT_S, "Kafka broker", self.log_file)
        return True

    def answers(self) -> bool:
        """The broker returns cluster metadata (not just an open port)."""
        from confluent_kafka.admin import AdminClient

        if self.running_pid() is None:
            raise DevServiceError(f"Kafka broker exited during start; see {self.log_file}")
        if not port_in_use(self.port):
            return False
        quiet = logging.getLogger("provisioning.devservices.kafka.probe")
        quiet.setLevel(logging.CRITICAL)
        admin = AdminClient(
            {"bootstrap.servers": self.bootstrap, "socket.timeout.ms": 2000}, logger=quiet
        )
        try:
            return len(admin.list_topics(timeout=2).brokers) > 0
        except Exception:  # noqa: BLE001 - any failure here means "not yet"
            return False

    def _jvm_options(self) -> list[str]:
        log4j = resources.files("provisioning.devservices") / "log4j2.xml"
        return [
            "-Xms256m",
            "-Xmx1g",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={log4j}",
        ]

    def _classpath(self) -> str:
        pom = Path(str(resources.files("provisioning.devservices") / "pom.xml"))
        digest = hashlib.sha256(pom.read_bytes()).hexdigest()[:16]
        cached = self.root / f"classpath-{digest}.txt"
        if cached.exists():
            return cached.read_text().strip()
        mvn = require_executable(
            "mvn", "install Maven (needed once to fetch the Kafka jars from Maven Central)"
        )
        result = subprocess.run(
            [mvn, "-q", "-B", "-f", str(pom), "dependency:build-classpath",
             f"-Dmdep.outputFile={cached}"],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0 or not cached.exists():
            tail = (result.stdout + result.stderr).strip().splitlines()[-3:]
            cached.unlink(missing_ok=True)
            raise DevServiceError("Maven could not resolve the Kafka jars: " + " | ".join(tail))
        return cached.read_text().strip()

    def _write_properties(self) -> Path:
        path = self.root / "server.properties"
        path.write_text(
            SERVER_PROPERTIES.format(
                port=self.port,
                controller_port=self.controller_port,
                log_dir=self.root / "data",
            )
        )
        return path

    def _format_storage(self, java: str, classpath: str, properties: Path) -> None:
        if (self.root / "data" / "meta.properties").exists():
            return
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        result = subprocess.run(
            [java, "-cp", classpath, "kafka.tools.StorageTool", "format",
             "-t", cluster_id, "-c", str(properties)],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            last = (result.stdout + result.stderr).strip().splitlines()[-1:]
            raise DevServiceError("formatting Kafka storage failed: " + " ".join(last))
