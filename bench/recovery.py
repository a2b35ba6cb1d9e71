"""Recovery: restoring saga states on assignment, and a worker's successor after kill -9.

- restore: K snapshots are written to a state topic, then every partition is read back with
  the worker's own `restore_partition` (the latest record per key, decoded into `SagaState`).
- failover: a worker runs a steady stream of sagas; it is killed with SIGKILL and a successor
  started at once. Measured: kill -> the first saga the successor completes (an event whose
  `occurredAt` is after the kill). Twice: a successor with a new instance id waits for the
  broker to abort the dead worker's transaction (`transaction.timeout.ms`); one restarted with
  the same id (a StatefulSet pod) fences it at once.
"""

from __future__ import annotations

import dataclasses
import signal
import threading
import time
import uuid
from typing import Any

from confluent_kafka import Producer

from bench.engine import SuccessReader, Workers, run_topics, tenant_commands, warm_up
from consumer import wire
from consumer.kafka_clients import restore_consumer
from consumer.state_store import decode_state, restore_partition, snapshot_headers
from producers.commands import command_producer_config, producer_config
from provisioning.settings import Settings
from provisioning.topics import TopicLayout
from sagas import SagaState, Status
from schemas import codec
from schemas.examples import EXAMPLES


def run_restore(base: Settings, states: int, running_share: float = 0.1) -> dict[str, Any]:
    """Finished sagas stay in the state topic for the idempotency window, so most restored
    states are finished ones: `running_share` of them are in flight (and decoded at once)."""
    with run_topics(base, "restore") as settings:
        return _restore(settings, states, running_share)


def _restore(settings: Settings, states: int, running_share: float) -> dict[str, Any]:
    topic = TopicLayout(settings.topic_prefix).state
    template = wire.from_record(SagaState, EXAMPLES["SagaState"])
    # The service's producer settings (acks=all, idempotent), batched for a bulk load.
    producer = Producer({**producer_config(settings), "linger.ms": 20,
                         "batch.num.messages": 10_000})
    finished = template.updated_at
    failed: list[str] = []

    def delivered(error: Any, _message: Any) -> None:
        if error is not None:
            failed.append(str(error))

    running_every = max(1, round(1 / running_share)) if running_share else 0
    for i in range(states):
        running = bool(running_every) and i % running_every == 0
        state = dataclasses.replace(
            template, request_id=str(uuid.uuid4()),
            status=Status.IN_PROGRESS if running else Status.COMPLETED,
            finished_at=None if running else finished)
        while True:
            try:
                producer.produce(topic, key=state.request_id.encode(), value=wire.encode(state),
                                 headers=snapshot_headers(state), on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.05)
    if producer.flush(120) or failed:  # a restore of fewer states than written means nothing
        raise RuntimeError(f"writing the states failed: {failed[:3] or 'flush timed out'}")
    consumer = restore_consumer(settings)
    started = time.perf_counter()
    restored = 0
    for partition in range(settings.topic_partitions):
        found, _ = restore_partition(consumer, topic, partition, decode_state)
        restored += len(found)
    elapsed = time.perf_counter() - started
    consumer.close()
    return {"states": states, "running_share": running_share, "restored": restored,
            "seconds": round(elapsed, 2),
            "states_per_s": round(restored / elapsed, 1),
            "record_bytes": len(codec.encode("SagaState", EXAMPLES["SagaState"]))}


def run_failover(base: Settings, rate: float, same_instance: bool) -> dict[str, Any]:
    """Sagas keep arriving at `rate`/s; the worker is killed once it has run for a while."""
    with run_topics(base, "failover") as settings:
        return _failover(settings, rate, same_instance)


def _failover(settings: Settings, rate: float, same_instance: bool) -> dict[str, Any]:
    pool = Workers(settings, "noop", 1, static_membership=same_instance).start()
    reader = SuccessReader(settings, track_occurred=True)
    stop = threading.Event()
    feeder = threading.Thread(target=_feed, args=(settings, rate, stop), daemon=True)
    try:
        warm_up(settings, reader, None, pool)
        feeder.start()
        until = time.time() + 3
        while time.time() < until:
            reader.poll()
        killed_at = time.time()
        pool.processes[0].send_signal(signal.SIGKILL)
        pool.processes[0].wait(10)
        pool.processes[0] = pool.spawn("w0" if same_instance else "w1")
        killed_ms = int(killed_at * 1000)
        while True:
            reader.poll()
            # The successor's first success: decided after the kill (the dead worker's last
            # commits may still be read just after it).
            after = [ms for ms in reader.occurred.values() if ms > killed_ms]
            if after:
                return {"rate": rate, "same_instance_id": same_instance,
                        "failover_s": round(min(after) / 1000 - killed_at, 2)}
            if time.time() - killed_at > 120:
                raise RuntimeError("no saga completed within 120 s of the kill")
    finally:
        stop.set()
        feeder.join(5)
        reader.close()
        pool.stop()


def _feed(settings: Settings, rate: float, stop: threading.Event) -> None:
    producer = Producer(command_producer_config(settings))
    topic = TopicLayout(settings.topic_prefix).commands
    run = uuid.uuid4().hex[:8]
    started = time.time()
    sent = 0
    while not stop.is_set():
        due = int((time.time() - started) * rate)
        for command in tenant_commands(max(0, due - sent), run):
            producer.produce(topic, key=command["requestId"].encode(),
                             value=codec.encode("ProvisionTenantRequest", command),
                             headers=codec.headers_for("ProvisionTenantRequest"))
        sent = max(sent, due)
        producer.poll(0.01)
    producer.flush(10)
