"""Real processes and real topics for the worker's integration tests.

`WorkerProcess` runs `provisioning worker` as a separate OS process (so a test can kill -9 it),
and `TopicReader` follows a topic read_committed, decoding every record with the codec.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

from provisioning.ops import free_port  # noqa: F401 - the tests import it from here
from provisioning.settings import Settings
from schemas import codec

ROOT = Path(__file__).resolve().parents[2]
TERMINAL_EVENTS = ("ProvisioningSucceeded", "ProvisioningFailedEvent")


# Settings a child process takes from the test's `Settings` object, not from the environment
# the tests run in: the cluster, its credentials (a process of a secure stack runs under its
# own principal) and what it requires of the cluster's replication.
PASSED_SETTINGS = ("kafka_bootstrap_servers", "kafka_security_protocol", "kafka_sasl_mechanism",
                   "kafka_sasl_username", "kafka_sasl_password", "kafka_ssl_ca_location",
                   "kafka_ssl_certificate_location", "kafka_ssl_key_location",
                   "kafka_ssl_key_password", "database_url", "topic_prefix",
                   "topic_partitions", "topic_replication_factor", "topic_min_insync_replicas",
                   "required_min_insync_replicas")


def process_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k.removeprefix("PROVISIONING_").lower() not in PASSED_SETTINGS}
    for name in PASSED_SETTINGS:
        value = getattr(settings, name)
        if value is not None:
            plain = value.get_secret_value() if hasattr(value, "get_secret_value") else value
            env[f"PROVISIONING_{name.upper()}"] = str(plain)
    return env


# Every process a test started, so that the test's teardown can end those it left running
# (a failed assertion skips the test's own stop): no stray worker outlives its test.
STARTED: list[ServiceProcess] = []


@dataclass
class ServiceProcess:
    """`provisioning <args>` (projector, api, ...) as its own OS process, logging to a file."""

    settings: Settings
    log_dir: Path
    args: tuple[str, ...]
    extra_env: dict[str, str] = field(default_factory=dict)
    name: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    process: subprocess.Popen | None = None

    @property
    def log_file(self) -> Path:
        return self.log_dir / f"{self.args[0]}-{self.name}.log"

    def start(self) -> ServiceProcess:
        log = self.log_file.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "provisioning.cli", *self.args],
            env={**process_env(self.settings), **self.extra_env}, stdout=log,
            stderr=subprocess.STDOUT, cwd=ROOT,
        )
        STARTED.append(self)
        return self

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self, timeout_s: float = 30) -> int | None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                return None
        return self.process.returncode if self.process else None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_text(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""


class WorkerProcess(ServiceProcess):
    """`provisioning worker` in a consumer group, with a stable instance id (its transactional
    id: restarting with the same one fences the previous producer). One process unless
    `processes` says otherwise (the command's default is one per core: a test that kills
    "the worker" means one process)."""

    def __init__(self, settings: Settings, log_dir: Path, group: str,
                 instance_id: str | None = None, extra_args: tuple[str, ...] = (),
                 extra_env: dict[str, str] | None = None, processes: int = 1) -> None:
        self.group = group
        self.instance_id = instance_id or f"w{uuid.uuid4().hex[:6]}"
        super().__init__(settings, log_dir, ("worker", "--group", group, "--instance-id",
                                             self.instance_id, "--processes", str(processes),
                                             *extra_args),
                         extra_env=extra_env or {}, name=self.instance_id)


class JsonParticipant(BaseHTTPRequestHandler):
    """An HTTP participant a test writes in a few lines: `do_POST` reads `self.body()` and
    answers with `self.answer(status, json_or_bytes)`; nothing is logged."""

    def body(self) -> dict[str, Any]:
        return json.loads(self.rfile.read(int(self.headers["Content-Length"])))

    def answer(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


def serve_http(handler: type[BaseHTTPRequestHandler]) -> tuple[ThreadingHTTPServer, str]:
    """`handler` served on a loopback port from a daemon thread; the server and its URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def wait_until(done: Callable[[], Any], timeout_s: float, what: str,
               interval_s: float = 0.1) -> Any:
    """Poll `done` until it returns something truthy; fail naming `what` after the timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = done()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout_s} s")
        time.sleep(interval_s)


@dataclass
class Record:
    record_name: str
    value: dict[str, Any]
    key: str | None
    partition: int
    offset: int
    headers: dict[str, bytes]


READER_LOG = logging.getLogger("tests.topic_reader")


class TopicReader:
    """Follows one topic from the beginning with read_committed, keeping every record."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self.consumer = Consumer({
            **settings.kafka_config(),
            "group.id": f"reader-{uuid.uuid4().hex[:8]}",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }, logger=READER_LOG)  # librdkafka's complaints while a broker restarts: not on stderr
        self.consumer.assign([TopicPartition(topic, p, 0)
                              for p in range(settings.topic_partitions)])
        self.topic = topic
        self.partitions = settings.topic_partitions
        self.records: list[Record] = []
        self.by_key: dict[str, list[Record]] = defaultdict(list)
        self.errors: list[str] = []  # the consumer's, for `describe()`

    def poll(self, timeout_s: float = 0.5) -> int:
        count = 0
        for message in self.consumer.consume(1000, timeout=timeout_s):
            if message.error():
                self.errors = [*self.errors[-4:], message.error().str()]
                continue
            if message.value() is None:
                continue
            decoded = codec.decode(message.value())
            record = Record(decoded.record_name, decoded.value,
                            message.key().decode() if message.key() else None,
                            message.partition(), message.offset(),
                            dict(message.headers() or []))
            self.records.append(record)
            if record.key:
                self.by_key[record.key].append(record)
            count += 1
        return count

    def wait_for(self, done: Callable[[TopicReader], bool], timeout_s: float,
                 what: str = "condition") -> None:
        deadline = time.monotonic() + timeout_s
        while not done(self):
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} not reached within {timeout_s} s")
            self.poll()

    def terminal(self, key: str) -> list[Record]:
        return [r for r in self.by_key.get(key, []) if r.record_name in TERMINAL_EVENTS]

    def describe(self) -> str:
        """Where this reader stands, for a test that waited in vain: records read, and per
        partition its position against the high watermark; the consumer's last errors."""
        parts = []
        for tp in self.consumer.position([TopicPartition(self.topic, p)
                                          for p in range(self.partitions)]):
            try:
                _, high = self.consumer.get_watermark_offsets(tp, timeout=5)
            except KafkaException as exc:
                high = f"? ({exc.args[0].str()})"
            parts.append(f"[{tp.partition}] at {tp.offset} of {high}")
        return (f"reader of {self.topic}: {len(self.records)} records; {', '.join(parts)}; "
                f"last errors: {self.errors or 'none'}")

    def close(self) -> None:
        self.consumer.close()


def all_terminal(keys: list[str]) -> Callable[[TopicReader], bool]:
    return lambda reader: all(reader.terminal(k) for k in keys)


def undo_answered(settings: Settings, participant: str, step: str, done: Callable[[], Any],
                  timeout_s: float, what: str) -> Any:
    """Act as Kafka participant `participant` that hung on `step` and answers its undo (a
    cancelled step is compensated too), until `done()` is truthy; returns what it returned."""
    from producers.participant import StepParticipant

    with StepParticipant(settings, participant, group_id=f"undo-{uuid.uuid4().hex[:8]}") as undo:
        undo.compensation(step)(lambda request: None)
        return wait_until(lambda: undo.poll_once(0.2) is not None and done(), timeout_s, what)

