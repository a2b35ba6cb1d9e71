"""The peer: the same five-step workflow as DBOS durable workflows on the same PostgreSQL.

Run in its own process (DBOS is a process-wide singleton):

    python -m bench.peer_dbos --workflows 500 --database-url postgresql://...

Each of the five steps is a no-op `@DBOS.step()`; DBOS checkpoints every step's result in its
system tables (schema `dbos_bench`) before the next, as our worker writes an event per step.
Prints one JSON object: workflows/s and latency percentiles (start -> last step done).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
import uuid

from dbos import DBOS, DBOSConfig

from bench.engine import percentiles


@DBOS.step()
def step(name: str, request_id: str) -> str:
    return f"{request_id}:{name}"


@DBOS.workflow()
def tenant_provisioning(request_id: str) -> float:
    for name in ("validate-entity", "create-tenant", "setup-billing", "activate-services",
                 "create-admin-role"):
        step(name, request_id)
    return time.time()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workflows", type=int, default=500)
    parser.add_argument("--database-url", required=True)
    args = parser.parse_args()
    logging.getLogger("dbos").setLevel(logging.WARNING)
    config: DBOSConfig = {
        "name": "provisioning-bench",
        "system_database_url": args.database_url,
        "dbos_system_schema": "dbos_bench",
        "log_level": "WARNING",
    }
    DBOS(config=config)
    DBOS.launch()
    DBOS.start_workflow(tenant_provisioning, "warm-up").get_result()  # tables, pools, threads
    started_at: dict[str, float] = {}
    handles = []
    began = time.time()
    for _ in range(args.workflows):
        request_id = str(uuid.uuid4())
        started_at[request_id] = time.time()
        handles.append((request_id, DBOS.start_workflow(tenant_provisioning, request_id)))
    finished = {request_id: handle.get_result() for request_id, handle in handles}
    elapsed = max(finished.values()) - began
    latencies = [(finished[r] - started_at[r]) * 1000 for r in finished]
    print(json.dumps({
        "workflows": args.workflows, "seconds": round(elapsed, 2),
        "workflows_per_s": round(args.workflows / elapsed, 1),
        "latency_ms": percentiles(latencies),
    }))
    DBOS.destroy()


if __name__ == "__main__":
    main()
