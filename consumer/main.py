"""Wiring of the worker process: settings, routing, database, participants, signals."""

from __future__ import annotations

import gc
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from consumer.member_status import report_to_supervisor
from consumer.participants.base import Participant, StepCall
from consumer.routing import Routing, load_routing, read_http_auth
from consumer.worker import Worker, WorkerOptions
from provisioning.logs import configure_logging
from provisioning.ops import start_ops
from provisioning.settings import Settings

if TYPE_CHECKING:
    from consumer.participants.builtin import BuiltinParticipant


def run_worker(settings: Settings, options: WorkerOptions,
               status_file: Path | None = None) -> int:
    """One worker process; with `status_file`, a member of `--processes N` reporting to its
    supervisor there (`consumer/supervisor.py`)."""
    configure_logging()
    routing = load_routing(settings.routing_file)  # a bad file stops us here, before Kafka
    http = http_participants(routing)  # so do credentials that cannot be read
    route = synchronous_participants(routing, builtin_participant(settings, options), http)
    worker = Worker(settings, route, options, routing=routing)
    worker.install_signal_handlers()
    ops = start_ops(settings.metrics_port, worker.readiness, worker.liveness)
    reporter = report_to_supervisor(status_file, worker.readiness, worker.liveness,
                                    on_orphaned=worker.stop)
    settle_collector()
    try:
        worker.run()
    finally:
        if reporter is not None:
            reporter.stop()
        if ops is not None:
            ops.stop()
    return 0


# Python's cyclic collector in a worker: a collection of the young generation every 10,000
# net allocations of containers instead of 700, and nothing that exists when the loop starts
# (modules, schemas, clients: never garbage) walked by the full collections. Measured on the
# no-op bench (8,000 sagas): the collector's time 1.6-1.7 s -> 0.57-0.61 s, 8-9 full
# collections of ~110 ms each (pauses in every saga's latency) -> none.
YOUNG_COLLECTION_EVERY = 10_000


def settle_collector() -> None:
    """Tune the collector for the poll loop, once the process has started everything."""
    gc.collect()  # what start-up left behind is collected, not kept forever by the freeze
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_EVERY, middle, old)


def builtin_participant(settings: Settings, options: WorkerOptions) -> BuiltinParticipant:
    """The registry's participant with a connection per call it may run at once (so a call
    never waits for the pool), not checked before each use (a round trip per step): a
    dropped connection fails its step, which the saga retries."""
    from consumer.participants.builtin import BuiltinParticipant
    from provisioning.database import create_engine

    connections = min(settings.builtin_concurrency, options.step_concurrency)
    engine = create_engine(settings, pool_size=connections, max_overflow=0, pre_ping=False)
    return BuiltinParticipant(engine, concurrency=connections)


def synchronous_participants(routing: Routing, builtin: Participant,
                             http: Mapping[tuple[str, str], Participant] | None = None,
                             ) -> Callable[[StepCall], Participant]:
    """Who runs a step on the worker's thread pool: the built-in participant or an HTTP
    service. (Kafka-routed steps never get here: the worker sends them as StepRequests.)"""
    if http is None:
        http = http_participants(routing)

    def route(call: StepCall) -> Participant:
        return http.get((call.workflow_type, call.step), builtin)

    return route


def http_participants(routing: Routing) -> dict[tuple[str, str], Participant]:
    """An HTTP participant per http route, with its credentials read now: a token file or
    certificate that cannot be used raises `ConfigurationError` naming the route. The HTTP
    client is imported only for such a route (httpx loads its own command line with it)."""
    http: dict[tuple[str, str], Participant] = {}
    for (workflow_type, step), route in routing.routes.items():
        if route.kind == "http" and route.target is not None:
            from consumer.participants.http import HttpParticipant

            auth = read_http_auth(workflow_type, step, route)
            http[(workflow_type, step)] = HttpParticipant(
                route.target, compensation_url=route.compensation_url,
                timeout_s=route.http_timeout_s or 30.0, bearer_token=auth.bearer_token,
                tls=auth.tls)
    return http
