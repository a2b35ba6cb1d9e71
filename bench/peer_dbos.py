"""The peer: the same five-step tenant workflow as DBOS durable workflows on the same PostgreSQL.

Run in its own process (DBOS is a process-wide singleton):

    python -m bench.peer_dbos --mode noop --workflows 500 --database-url postgresql://...
    python -m bench.peer_dbos --mode registry --workflows 500 --database-url postgresql://... \
        --registry-url postgresql+psycopg://...

DBOS checkpoints every step's result in its system tables (schema `dbos_bench`) before the
next, as our worker writes an event per step. Two modes:

- `noop`: each of the five steps is a no-op `@DBOS.step()`: DBOS's own cost, against the
  engine with no-op participants.
- `registry`: each step does what the engine's built-in participant does, by calling it:
  `BuiltinParticipant(engine).call(StepCall(...))` for validate-entity, create-tenant,
  setup-billing, activate-services and create-admin-role, with the engine's parameters (the
  command flattened as the worker flattens it, plus the earlier steps' outputs) and its
  idempotency keys (`<requestId>:1:<step>`), on the same registry tables, entities registered
  beforehand. The registry pool and DBOS's threads are both the worker's step concurrency
  (32), so both sides run as many steps at once on as many connections. A transient failure
  (a deadlock, a pool timeout) raises, and DBOS retries the step as the saga would; a
  permanent one fails the workflow.

Prints one JSON object: workflows/s, failed workflows, latency percentiles (start -> last step
done) and this process's CPU seconds per 1000 workflows.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import time
import uuid
from collections.abc import Callable
from typing import Any

from dbos import DBOS, DBOSConfig

from bench.engine import percentiles, register_entities, tenant_commands

TENANT_STEPS = ("validate-entity", "create-tenant", "setup-billing", "activate-services",
                "create-admin-role")
STEP_CONCURRENCY = 32  # the worker's default --step-concurrency
# The attempt deadline the saga gives each step call (TENANT_V1's attempt_timeout_ms).
ATTEMPT_TIMEOUT_MS = 10_000

_participant: Any = None  # the BuiltinParticipant of registry mode, set in main()


class TransientStepFailure(Exception):
    """The participant said "try again": DBOS retries the step."""


@DBOS.step()
def step(name: str, request_id: str) -> str:
    return f"{request_id}:{name}"


@DBOS.workflow()
def tenant_provisioning(request_id: str) -> float:
    for name in TENANT_STEPS:
        step(name, request_id)
    return time.time()


@DBOS.step(retries_allowed=True, max_attempts=4, interval_seconds=0.1, backoff_rate=2.0)
def registry_step(name: str, request_id: str, params: dict[str, str],
                  tenant_id: str | None) -> dict[str, Any]:
    from consumer.participants.base import Action, Outcome, StepCall
    from sagas import idempotency_key

    outcome = _participant.call(StepCall(
        request_id=request_id, run=1, workflow_type="tenant", tenant_id=tenant_id, step=name,
        action=Action.EXECUTE, attempt=1, idempotency_key=idempotency_key(request_id, 1, name),
        params=params, deadline_at=int(time.time() * 1000) + ATTEMPT_TIMEOUT_MS))
    if outcome.outcome is Outcome.TRANSIENT_FAILURE:
        raise TransientStepFailure(outcome.reason)
    return {"succeeded": outcome.outcome is Outcome.SUCCEEDED, "output": dict(outcome.output),
            "reason": outcome.reason}


@DBOS.workflow()
def tenant_provisioning_in_registry(request_id: str, params: dict[str, str]) -> float:
    outputs: dict[str, str] = {}
    for name in TENANT_STEPS:
        # What the saga gives a step: the command's parameters and the earlier outputs.
        answer = registry_step(name, request_id, {**params, **outputs},
                               outputs.get("tenantId"))
        if not answer["succeeded"]:
            raise RuntimeError(f"{name} failed: {answer['reason']}")
        outputs.update(answer["output"])
    return time.time()


def registry_workflows(registry_url: str, workflows: int) -> list[tuple[str, tuple[Any, ...]]]:
    """The engine's commands as the worker sees them, their entities registered."""
    from consumer.commands import to_start_command
    from consumer.participants.builtin import BuiltinParticipant
    from provisioning.database import create_engine

    global _participant
    engine = create_engine(registry_url, pool_size=STEP_CONCURRENCY, max_overflow=0,
                           pre_ping=False)  # as the worker's
    _participant = BuiltinParticipant(engine)
    commands = tenant_commands(workflows + 1, f"dbos-{uuid.uuid4().hex[:8]}")
    register_entities(engine, commands)
    return [(c["requestId"], (c["requestId"],
                              dict(to_start_command("ProvisionTenantRequest", c).params)))
            for c in commands]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=("noop", "registry"), default="noop")
    parser.add_argument("--workflows", type=int, default=500)
    parser.add_argument("--database-url", required=True, help="DBOS's (postgresql://...)")
    parser.add_argument("--registry-url",
                        help="the registry's SQLAlchemy URL (registry mode), as the worker's")
    args = parser.parse_args()
    logging.getLogger("dbos").setLevel(logging.WARNING)
    config: DBOSConfig = {
        "name": "provisioning-bench",
        "system_database_url": args.database_url,
        "dbos_system_schema": "dbos_bench",
        "log_level": "WARNING",
    }
    workflow: Callable[..., float]
    if args.mode == "registry":
        if not args.registry_url:
            parser.error("--mode registry needs --registry-url")
        config["max_executor_threads"] = STEP_CONCURRENCY
        workflow = tenant_provisioning_in_registry
        runs = registry_workflows(args.registry_url, args.workflows)
    else:
        workflow = tenant_provisioning
        runs = [(request_id, (request_id,))
                for request_id in (str(uuid.uuid4()) for _ in range(args.workflows + 1))]
    DBOS(config=config)
    DBOS.launch()
    (_, warm_up), *runs = runs
    DBOS.start_workflow(workflow, *warm_up).get_result()  # tables, pools, threads
    cpu_before = _cpu_s()
    started_at: dict[str, float] = {}
    handles = []
    began = time.time()
    for request_id, arguments in runs:
        started_at[request_id] = time.time()
        handles.append((request_id, DBOS.start_workflow(workflow, *arguments)))
    finished: dict[str, float] = {}
    failed = 0
    for request_id, handle in handles:
        try:
            finished[request_id] = handle.get_result()
        except Exception:  # noqa: BLE001 - a failed workflow is a figure, not a crash
            failed += 1
    elapsed = max(finished.values(), default=time.time()) - began
    latencies = [(finished[r] - started_at[r]) * 1000 for r in finished]
    print(json.dumps({
        "mode": args.mode, "workflows": args.workflows, "completed": len(finished),
        "failed": failed, "seconds": round(elapsed, 2),
        "workflows_per_s": round(len(finished) / elapsed, 1),
        "cpu_s_per_1000_workflows": round((_cpu_s() - cpu_before)
                                          / max(1, len(finished)) * 1000, 2),
        "latency_ms": percentiles(latencies),
    }))
    DBOS.destroy()


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


if __name__ == "__main__":
    main()
