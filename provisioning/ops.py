"""`/metrics`, `/healthz` and `/readyz` for every process, on `--metrics-port`.

- `/healthz`: the process is alive: the serving thread answers and, where the process gives a
  `liveness` check, its work loop still turns (a worker stuck in a call that never returns
  answers 503, so the orchestrator restarts it).
- `/readyz`: the process can do its work: the `readiness` callable says whether (and why not);
  a worker is ready once it has partitions assigned and restored, a projector or the API once
  its database answers.
- `/metrics`: the Prometheus text format of the process's registry (a supervisor of several
  worker processes serves one that reads all of theirs).

A plain `http.server` on its own thread: scrapes and probes never wait for the poll loop.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

Readiness = Callable[[], tuple[bool, str]]
log = logging.getLogger("provisioning.ops")


class OpsServer:
    def __init__(self, port: int, readiness: Readiness, host: str = "0.0.0.0",
                 liveness: Readiness | None = None,
                 registry: CollectorRegistry = REGISTRY) -> None:
        self._readiness = readiness
        self._liveness = liveness
        self._registry = registry
        self._server = ThreadingHTTPServer((host, port), self._handler())
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]

    def start(self) -> OpsServer:
        threading.Thread(target=self._server.serve_forever, name="ops", daemon=True).start()
        log.info("serving /metrics, /healthz, /readyz", extra={"port": self.port})
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        readiness, liveness, registry = self._readiness, self._liveness, self._registry

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
                elif path == "/healthz":
                    self._probe(liveness or (lambda: (True, "ok")))
                elif path == "/readyz":
                    self._probe(readiness)
                else:
                    self._send(404, b"not found\n")

            def _probe(self, check: Readiness) -> None:
                try:
                    good, why = check()
                except Exception as exc:  # noqa: BLE001 - a probe must answer, not crash
                    good, why = False, f"check failed: {type(exc).__name__}"
                self._send(200 if good else 503, (why + "\n").encode())

            def _send(self, status: int, body: bytes,
                      content_type: str = "text/plain; charset=utf-8") -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass  # probes every few seconds would drown the log

        return Handler


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_ops(port: int | None, readiness: Readiness, liveness: Readiness | None = None,
              registry: CollectorRegistry = REGISTRY) -> OpsServer | None:
    """Serve on `port` when one is configured (0 picks a free one)."""
    if port is None:
        return None
    return OpsServer(port, readiness, liveness=liveness, registry=registry).start()


def lag_from_statistics(stats: dict, group: str, assigned: set[tuple[str, int]]) -> None:
    """librdkafka's statistics (JSON every `statistics.interval.ms`) into the lag gauge."""
    from provisioning.metrics import CONSUMER_LAG

    for topic, topic_stats in stats.get("topics", {}).items():
        for partition, p in topic_stats.get("partitions", {}).items():
            number = int(partition)
            if number < 0 or (topic, number) not in assigned:
                continue
            lag = p.get("consumer_lag_stored", p.get("consumer_lag", -1))
            if lag is not None and lag >= 0:
                CONSUMER_LAG.labels(group, topic, str(number)).set(lag)
