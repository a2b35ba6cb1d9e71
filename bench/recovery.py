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
import time
import uuid
from typing import Any

from confluent_kafka import Producer

from bench.engine import SuccessReader, Workers, fresh_settings, publish, tenant_commands, warm_up
from consumer import wire
from consumer.kafka_clients import restore_consumer
from consumer.state_store import restore_partition, snapshot_headers
from consumer.worker import _decode_state
from provisioning.settings import Settings
from provisioning.topics import TopicLayout
from sagas import SagaState, Status
from schemas import codec
from schemas.examples import EXAMPLES


def run_restore(base: Settings, states: int, running_share: float = 0.1) -> dict[str, Any]:
    """Finished sagas stay in the state topic for the idempotency window, so most restored
    states are finished ones: `running_share` of them are in flight (and decoded at once)."""
    settings = fresh_settings(base, "restore")
    topic = TopicLayout(settings.topic_prefix).state
    template = wire.from_record(SagaState, EXAMPLES["SagaState"])
    producer = Producer({**settings.kafka_config(), "linger.ms": 20, "compression.type": "lz4",
                         "partitioner": "murmur2_random", "batch.num.messages": 10_000})
    finished = template.updated_at
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
                                 headers=snapshot_headers(state))
                break
            except BufferError:
                producer.poll(0.05)
    producer.flush(120)
    consumer = restore_consumer(settings)
    started = time.perf_counter()
    restored = 0
    for partition in range(settings.topic_partitions):
        found, _ = restore_partition(consumer, topic, partition, _decode_state)
        restored += len(found)
    elapsed = time.perf_counter() - started
    consumer.close()
    return {"states": states, "running_share": running_share, "restored": restored,
            "seconds": round(elapsed, 2),
            "states_per_s": round(restored / elapsed, 1),
            "record_bytes": len(codec.encode("SagaState", EXAMPLES["SagaState"]))}


def run_failover(base: Settings, sagas: int, same_instance: bool) -> dict[str, Any]:
    settings = fresh_settings(base, "failover")
    pool = Workers(settings, "noop", 1, static_membership=same_instance).start()
    reader = SuccessReader(settings)
    try:
        warm_up(settings, reader, None)
        commands = tenant_commands(sagas, uuid.uuid4().hex[:8])
        publish(settings, commands, None, reader)
        ids = [c["requestId"] for c in commands]
        while sum(1 for i in ids if i in reader.done) < sagas // 5:
            reader.poll()
        killed_at = time.time()
        pool.processes[0].send_signal(signal.SIGKILL)
        pool.processes[0].wait(10)
        pool.processes[0] = pool.spawn("w0" if same_instance else "w1")
        before = set(reader.done)
        while True:
            reader.poll()
            fresh = [i for i in reader.done if i not in before and reader.done[i] > killed_at]
            # Successes committed by the dead worker may still be read just after the kill;
            # the successor's are the ones that keep coming once reading has caught up.
            if fresh and time.time() - killed_at > 0.5:
                first = min(reader.done[i] for i in fresh)
                break
            if time.time() - killed_at > 120:
                raise RuntimeError("no saga completed within 120 s of the kill")
        return {"sagas": sagas, "same_instance_id": same_instance,
                "failover_s": round(first - killed_at, 2)}
    finally:
        reader.close()
        pool.stop()
