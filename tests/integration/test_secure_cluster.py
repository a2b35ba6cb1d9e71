"""The service on a production-like Kafka: three brokers (replication factor 3,
min.insync.replicas 2), TLS, SASL/SCRAM-SHA-512 and the standard authorizer, every process under
its own principal with exactly the ACLs of the README's table (`provisioning acls apply`).

One stack serves the module: worker, projector and API, and the Kafka participant
`entity-management` doing `create-tenant`, each under its role's principal. The refusals are
checked the way a misconfigured or hostile client meets them: as the service's own error,
naming the principal, the operation and the topic, within seconds.
"""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from harness import ServiceProcess, TopicReader, WorkerProcess
from pydantic import SecretStr
from secure_cluster import PARTICIPANT, SecureCluster
from test_api import PREFIX, auth, make_token, new_entity, start_api, tenant_body
from test_remote_participants import participant_process
from test_worker import _tenant_command

from producers.commands import CommandPublisher, producer_config
from producers.participant import StepParticipant
from provisioning.devservices.signing_key import DevSigningKey
from provisioning.kafka_access import KafkaAccessDenied, KafkaLoginRefused
from provisioning.settings import Settings
from provisioning.topics import TopicLayout

ROLES = ("publisher", "worker", "projector", "api", "participant")


@dataclass
class SecureStack:
    cluster: SecureCluster
    prefix: str
    url: str
    processes: list[ServiceProcess]

    @property
    def layout(self) -> TopicLayout:
        return TopicLayout(self.prefix)

    def settings(self, role: str, **update: object) -> Settings:
        return self.cluster.settings(role, self.prefix, **update)


@pytest.fixture(scope="module")
def signing_key(tmp_path_factory: pytest.TempPathFactory) -> DevSigningKey:
    return DevSigningKey(tmp_path_factory.mktemp("dev") / "auth").ensure()


@pytest.fixture(scope="module")
def stack(secure_cluster: SecureCluster, migrated: sa.Engine, signing_key: DevSigningKey,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureStack]:
    prefix = f"sec{uuid.uuid4().hex[:8]}"
    secure_cluster.prepare(prefix, "--reply-topic-prefix", f"{prefix}.replies.")
    logs = tmp_path_factory.mktemp("secure-stack")
    routing = logs / "routing.toml"
    routing.write_text(f'[steps."tenant.create-tenant"]\nadapter = "kafka:{PARTICIPANT}"\n'
                       "attempt_timeout_s = 30\n")
    worker_env = {"PROVISIONING_ROUTING_FILE": str(routing),
                  "PROVISIONING_REPLY_TOPIC_PATTERN": rf"{prefix}\.replies\..+"}

    def settings(role: str) -> Settings:
        return secure_cluster.settings(role, prefix)

    processes: list[ServiceProcess] = []
    try:
        processes += [
            # Default group names: the ACLs name them.
            WorkerProcess(settings("worker"), logs, "provisioning-worker",
                          extra_env=worker_env).start(),
            ServiceProcess(settings("projector"), logs, ("projector",)).start(),
            participant_process(settings("participant"), logs, "--name", PARTICIPANT),
        ]
        # Four processes start at once, each opening TLS connections to three brokers.
        api, url = start_api(settings("api"), logs, signing_key, start_timeout_s=120)
        processes.append(api)
        yield SecureStack(secure_cluster, prefix, url, processes)
    finally:
        codes = [(process, process.stop()) for process in processes]
    for process, code in codes:
        assert code == 0, f"{process.args[0]} exited {code}: {process.log_text()[-3000:]}"
    _assert_no_password_in(logs, secure_cluster)


def _assert_no_password_in(logs: Path, cluster: SecureCluster) -> None:
    secrets = [cluster.env(role)["PROVISIONING_KAFKA_SASL_PASSWORD"] for role in ROLES]
    for log in logs.glob("*.log"):
        text = log.read_text(errors="replace")
        assert not any(secret in text for secret in secrets), f"a SCRAM password in {log}"


@pytest.fixture
def client(stack: SecureStack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.url, timeout=90) as http:
        yield http


@pytest.fixture(scope="module")
def token(signing_key: DevSigningKey) -> functools.partial[str]:
    return functools.partial(make_token, signing_key)


# --- the service works under its principals -----------------------------------------------------


def test_the_four_workflows_succeed_with_every_process_under_its_own_principal(
    stack: SecureStack, client: httpx.Client, token: functools.partial[str],
    migrated: sa.Engine,
) -> None:
    tenant = client.post(f"{PREFIX}/tenant?wait=60", json=tenant_body(new_entity(migrated)),
                         headers=auth(token())).json()
    assert tenant["status"] == "COMPLETED", tenant
    trail = client.get(f"{PREFIX}/{tenant['requestId']}/events",
                       headers=auth(token(), "platform")).json()["events"]
    create = next(e for e in trail if e["type"] == "ProvisioningStepStarted"
                  and e["step"] == "create-tenant")
    assert create["details"]["participant"] == PARTICIPANT, create  # over Kafka, as itself

    tenant_id = tenant["resourceId"]
    caller = auth(token(tenant=tenant_id), tenant_id)
    bodies = {
        "service": {"serviceName": "CartService", "slaTier": "GOLD"},
        "user": {"email": f"{uuid.uuid4().hex[:8]}@acme.example", "roleName": "member"},
        "resource": {"serviceName": "CoreService", "resourceType": "STORAGE",
                     "resourceSpec": {"sizeGb": "5"}},
    }
    for workflow, body in bodies.items():
        done = client.post(f"{PREFIX}/{workflow}?wait=60", json=body, headers=caller).json()
        assert done["status"] == "COMPLETED", (workflow, done)


def test_the_worker_replies_on_a_reply_topic_its_acls_allow(
    stack: SecureStack, migrated: sa.Engine
) -> None:
    reply_topic = f"{stack.prefix}.replies.caller"
    operator = stack.cluster.admin()
    operator.create_topics([NewTopic(reply_topic, 3)])[reply_topic].result(30)
    entity = new_entity(migrated)
    command = _tenant_command(entity, reply_to=reply_topic)
    with CommandPublisher(stack.settings("publisher")) as publisher:  # commands: its one grant
        publisher.publish("ProvisionTenantRequest", command)
    replies = TopicReader(stack.cluster.settings("operator", stack.prefix), reply_topic)
    try:
        replies.wait_for(lambda r: any(x.record_name == "ProvisioningCompleted"
                                       for x in r.by_key[command["requestId"]]), 90,
                         "the worker's ProvisioningCompleted reply")
    finally:
        replies.close()


def test_operators_read_the_dead_letters_through_the_api_under_its_principal(
    stack: SecureStack, client: httpx.Client, token: functools.partial[str],
) -> None:
    operator = token(subject="ops", tenant="platform-ops",
                     permissions=("provisioning:operate", "provisioning:read"))
    answer = client.get("/api/v1/admin/dlq", headers=auth(operator, "platform-ops"))
    assert answer.status_code == 200, answer.text


def test_dev_status_lists_every_node_and_dev_env_prints_each_roles_settings(
    secure_cluster: SecureCluster,
) -> None:
    from secure_cluster import FOLDER

    env = {**os.environ, "PROVISIONING_DEV_DIR": str(FOLDER),
           "PROVISIONING_DEV_KAFKA_PORT": str(secure_cluster.kafka.port),
           "PROVISIONING_DEV_KAFKA_CONTROLLER_PORT": str(secure_cluster.kafka.controller_port)}

    def cli(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "provisioning.cli", *args], env=env,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout

    status = json.loads(cli("dev", "status", "--json"))["kafka"]
    assert (status["brokers"], status["secure"], status["replication_factor"],
            status["min_insync_replicas"]) == (3, True, 3, 2)
    nodes = status["nodes"]
    assert [n["id"] for n in nodes] == [1, 2, 3]
    for node in nodes:
        assert node["roles"] == ["broker", "controller"] and node["pid"] > 0
        assert Path(node["data_dir"], "meta.properties").exists()
    assert sum(n["active_controller"] for n in nodes) == 1
    assert status["bootstrap"] == ",".join(f"127.0.0.1:{n['port']}" for n in nodes)

    exports = cli("dev", "env", "--role", "participant")
    assert "export PROVISIONING_KAFKA_SASL_USERNAME=participant-entity-management" in exports
    assert "export PROVISIONING_KAFKA_SECURITY_PROTOCOL=SASL_SSL" in exports
    assert "export PROVISIONING_REQUIRED_MIN_INSYNC_REPLICAS=2" in exports


def test_acls_apply_a_second_time_adds_nothing(stack: SecureStack) -> None:
    again = stack.cluster.cli("operator", stack.prefix, "acls", "apply", "--participant",
                              PARTICIPANT, "--reply-topic-prefix", f"{stack.prefix}.replies.")

    assert again.returncode == 0, again.stderr
    lines = again.stdout.splitlines()
    assert lines and all(line.startswith("exists") for line in lines), again.stdout
    assert any("User:provisioning-worker" in line and "TransactionalId provisioning-worker-"
               in line for line in lines)


def test_every_topic_and_the_internal_ones_have_three_replicas_and_min_insync_two(
    stack: SecureStack,
) -> None:
    from provisioning.topics import describe_configs

    admin = stack.cluster.admin()
    names = [s.name for s in stack.layout.specs(3, [PARTICIPANT])]
    names += ["__consumer_offsets", "__transaction_state"]
    metadata = admin.list_topics(timeout=10)
    for name in names:
        partitions = metadata.topics[name].partitions.values()
        assert {len(p.replicas) for p in partitions} == {3}, name
        assert describe_configs(admin, name)["min.insync.replicas"] == "2", name


# --- exactly the README's ACLs -------------------------------------------------------------------

# Who may read and write which topic: the README's table, written out by hand (the code that
# applies the ACLs is not asked). Topics are named by what follows `<prefix>.`.
TOPICS = ("provisioning.commands", "provisioning.events", "provisioning.state",
          "provisioning.step-replies", f"provisioning.step-requests.{PARTICIPANT}",
          "provisioning.commands.dlq", "provisioning.events.dlq", "replies.caller")
MAY_WRITE = {
    "publisher": {"provisioning.commands"},
    "worker": {"provisioning.events", "provisioning.state", "provisioning.commands.dlq",
               f"provisioning.step-requests.{PARTICIPANT}", "replies.caller"},
    "projector": {"provisioning.events.dlq"},
    "api": {"provisioning.commands"},
    "participant": {"provisioning.step-replies"},
}
MAY_READ = {
    "publisher": set(),
    "worker": {"provisioning.commands", "provisioning.step-replies", "provisioning.state"},
    "projector": {"provisioning.events"},
    "api": {"provisioning.commands.dlq"},
    "participant": {f"provisioning.step-requests.{PARTICIPANT}"},
}


@pytest.fixture(scope="module")
def probe_prefix(secure_cluster: SecureCluster) -> str:
    """Topics of their own, every one holding a record, with every role's ACLs applied."""
    prefix = f"probe{uuid.uuid4().hex[:8]}"
    secure_cluster.prepare(prefix, "--reply-topic-prefix", f"{prefix}.replies.")
    admin = secure_cluster.admin()
    admin.create_topics([NewTopic(f"{prefix}.replies.caller", 1)])[
        f"{prefix}.replies.caller"].result(30)
    producer = Producer(producer_config(secure_cluster.settings("operator", prefix)))
    for topic in TOPICS:
        producer.produce(f"{prefix}.{topic}", b"probe", key=b"probe", partition=0)
    assert producer.flush(30) == 0
    return prefix


def _writes(settings: Settings, prefix: str) -> dict[str, int | None]:
    """Each topic: None when the record was delivered, else the error code."""
    results: dict[str, int | None] = {}
    producer = Producer({**producer_config(settings), "message.timeout.ms": 20_000})
    for topic in TOPICS:
        producer.produce(f"{prefix}.{topic}", b"probe", key=b"probe", partition=0,
                         on_delivery=lambda e, m, t=topic: results.__setitem__(
                             t, None if e is None else e.code()))
    producer.flush(30)
    return results


def _reads(settings: Settings, prefix: str) -> dict[str, int | None]:
    """Each topic: None when its record was read, else the error code; assigned partitions,
    no group joined (a group's rights are a matter of their own). A topic the principal may
    not even describe is refused in the metadata (librdkafka waits silently for an assigned
    partition of such a topic); one it may describe, at the fetch."""
    consumer = Consumer({**settings.kafka_config(), "group.id": "probe-unused",
                         "enable.auto.commit": False, "isolation.level": "read_uncommitted"})
    results: dict[str, int | None] = {}
    for topic in TOPICS:
        error = consumer.list_topics(f"{prefix}.{topic}", timeout=10).topics[
            f"{prefix}.{topic}"].error
        if error is not None:
            results[topic] = error.code()
    consumer.assign([TopicPartition(f"{prefix}.{t}", 0, 0) for t in TOPICS if t not in results])
    deadline = time.monotonic() + 30
    while len(results) < len(TOPICS) and time.monotonic() < deadline:
        for message in consumer.consume(100, 0.5):
            topic = (message.topic() or "").removeprefix(f"{prefix}.")
            error = message.error()
            if topic in TOPICS and topic not in results and (
                    error is None or error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED):
                results[topic] = None if error is None else error.code()
    consumer.close()
    return results


@pytest.mark.parametrize("role", ROLES)
def test_each_role_reads_and_writes_exactly_what_the_readme_grants(
    secure_cluster: SecureCluster, probe_prefix: str, role: str
) -> None:
    settings = secure_cluster.settings(role, probe_prefix)
    denied = KafkaError.TOPIC_AUTHORIZATION_FAILED

    writes, reads = _writes(settings, probe_prefix), _reads(settings, probe_prefix)

    assert writes == {t: None if t in MAY_WRITE[role] else denied for t in TOPICS}
    assert reads == {t: None if t in MAY_READ[role] else denied for t in TOPICS}


# --- refusals, as the service's own error --------------------------------------------------------


def test_a_publisher_cannot_forge_step_replies_or_state(stack: SecureStack) -> None:
    publisher = stack.settings("publisher")
    for topic in (stack.layout.step_replies, stack.layout.state):
        refused: list[KafkaError] = []
        producer = Producer(producer_config(publisher))
        started = time.monotonic()
        producer.produce(topic, b"forged", key=str(uuid.uuid4()).encode(),
                         on_delivery=lambda e, m, into=refused: into.append(e))
        producer.flush(30)
        assert [e.code() for e in refused] == [KafkaError.TOPIC_AUTHORIZATION_FAILED]
        assert time.monotonic() - started < 10, "a refusal, not a timeout"

    # The service's own participant helper, run by the publisher: refused, saying who and what
    # (the group or the topic, whichever the brokers refuse first).
    with pytest.raises(KafkaAccessDenied) as error, \
            StepParticipant(publisher, PARTICIPANT) as impostor:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            impostor.poll_once(0.5)
    group = f"provisioning-participant-{PARTICIPANT}"
    assert re.match(
        rf"Kafka denied User:provisioning-publisher Read on "
        rf"(topic {re.escape(stack.layout.step_requests(PARTICIPANT))}|group {group}) "
        rf"\(.*(Topic|Group) authorization failed.*\); see the README's Kafka ACL table",
        str(error.value)), str(error.value)


def test_a_participant_cannot_read_commands_nor_publish_them(stack: SecureStack) -> None:
    participant = stack.settings("participant")
    as_worker = WorkerProcess(participant, Path(stack.processes[0].log_dir),
                              f"provisioning-participant-{PARTICIPANT}").start()
    assert as_worker.process is not None
    code = as_worker.process.wait(60)
    assert code == 2, as_worker.log_text()[-2000:]
    assert (f"Kafka denied User:participant-{PARTICIPANT} Describe on topic "
            f"{stack.layout.commands} (Broker: Topic authorization failed)") \
        in as_worker.log_text()

    started = time.monotonic()
    with pytest.raises(KafkaAccessDenied, match=(
            rf"Kafka denied User:participant-{PARTICIPANT} Write on topic "
            rf"{stack.layout.commands} \(Broker: Topic authorization failed\)")), \
            CommandPublisher(participant) as publisher:
        publisher.publish("ProvisionTenantRequest", _tenant_command("nobody"))
    assert time.monotonic() - started < 15


def test_an_unauthenticated_client_is_refused(stack: SecureStack) -> None:
    wrong = stack.settings("worker", kafka_sasl_password=SecretStr("guessed"))
    started = time.monotonic()
    with pytest.raises(KafkaLoginRefused, match="Kafka refused the login of "
                       "User:provisioning-worker: .*Authentication failed"), \
            CommandPublisher(wrong) as publisher:
        publisher.publish("ProvisionTenantRequest", _tenant_command("nobody"))
    assert time.monotonic() - started < 15, "a refusal, not a timeout"

    worker = WorkerProcess(wrong, Path(stack.processes[0].log_dir), "provisioning-worker")
    worker.start()
    assert worker.process is not None and worker.process.wait(60) == 2
    assert "Kafka refused the login of User:provisioning-worker" in worker.log_text()
    assert "guessed" not in worker.log_text()

    # No credentials at all: TLS, but no SASL. The brokers close the connection; the client
    # learns nothing about the cluster, not even its topics.
    anonymous = stack.settings("worker").kafka_config()
    for key in ("sasl.mechanism", "sasl.username", "sasl.password"):
        anonymous.pop(key)
    anonymous["security.protocol"] = "ssl"
    with pytest.raises(KafkaException):
        AdminClient(anonymous).list_topics(timeout=5)


def test_a_worker_refuses_a_transaction_log_below_the_min_insync_replicas_it_requires(
    stack: SecureStack,
) -> None:
    demanding = stack.settings("worker", required_min_insync_replicas=3)
    worker = WorkerProcess(demanding, Path(stack.processes[0].log_dir), "provisioning-worker",
                           extra_env={"PROVISIONING_ROUTING_FILE": str(
                               Path(stack.processes[0].log_dir) / "routing.toml")})
    worker.start()
    assert worker.process is not None and worker.process.wait(90) == 2, worker.log_text()
    assert ("refusing to start: __transaction_state has min.insync.replicas=2, below the 3 "
            "this worker requires") in worker.log_text()
