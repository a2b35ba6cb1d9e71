"""`provisioning worker --processes N`: N worker processes, one consumer-group member each, under
one supervisor process, so that a worker uses every core it is given (one Python process runs
its poll loop on one core).

Each member is a full worker (`provisioning worker --processes 1`) with an instance id derived
from the supervisor's, `<instance-id>-<n>`: the same n after every restart, so a restarted
member's transactional id fences its dead predecessor at once (and with --static-membership
it gets its partitions back without a rebalance).

The supervisor
- restarts a member that exits unasked: at once if it had been running for a while (a crash,
  a kill -9; its exit, SIGCHLD, wakes the supervisor, which does not wait for its next look),
  after a growing pause (1, 2, 4 ... 30 s) if it dies within `settle_s` of its start; after
  `give_up_after` such deaths in a row it stops the others and fails with an error naming the
  member (the same fault would only repeat: a missing topic, a bad routing file);
- forwards SIGTERM and SIGINT to the members, waits for them to finish their transactions and
  exits 0 when every one stopped cleanly (1 otherwise; members still running after
  `stop_timeout_s` are killed);
- serves one `--metrics-port` for all: /metrics reads the members' shared prometheus_client
  files (a directory of this run, `PROMETHEUS_MULTIPROC_DIR` of every member), /readyz is ready
  when every member says it is ready, /healthz is healthy while the supervisor's loop turns and
  every member says it is alive (`consumer/member_status.py`: how members report).
Members run in their own session: a terminal's Ctrl-C reaches the supervisor only, which stops
them in order.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from consumer.member_status import read_status
from provisioning.errors import ProvisioningError
from provisioning.metrics import MEMBER_RESTARTS
from provisioning.ops import start_ops

log = logging.getLogger(__name__)

POLL_S = 0.2  # how often the supervisor looks at its members when nothing wakes it


class MembersKeepFailing(ProvisioningError):
    """A member died right after each of its starts, `give_up_after` times in a row."""


@dataclass(frozen=True, slots=True)
class MemberSpec:
    index: int
    instance_id: str
    status_file: Path  # where the member reports (`--status-file`)


MemberCommand = Callable[[MemberSpec], Sequence[str]]


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    settle_s: float = 30.0  # a member that exits sooner than this after its start "died at once"
    first_backoff_s: float = 1.0
    max_backoff_s: float = 30.0
    give_up_after: int = 5  # deaths at once in a row

    def backoff_s(self, deaths_at_once: int) -> float:
        if deaths_at_once == 0:
            return 0.0  # it ran: restart now, its successor fences what it left open
        return min(self.max_backoff_s, self.first_backoff_s * 2 ** (deaths_at_once - 1))


def member_instance_id(instance_id: str, index: int) -> str:
    return f"{instance_id}-{index}"


def default_processes() -> int:
    """The cores this process may run on. A container's CPU limit does not narrow them: under
    Kubernetes, say how many (the chart's worker.processes)."""
    return len(os.sched_getaffinity(0))


@dataclass
class _Member:
    spec: MemberSpec
    process: subprocess.Popen | None = None
    started_at: float = 0.0  # monotonic
    deaths_at_once: int = 0
    restart_at: float | None = None  # monotonic; set while waiting to restart
    last_exit: int | None = None
    starts: int = 0


@dataclass
class Supervisor:
    count: int
    command: MemberCommand
    instance_id: str
    metrics_port: int | None = None
    policy: RestartPolicy = RestartPolicy()
    stop_timeout_s: float = 50.0  # under the chart's terminationGracePeriodSeconds (60)
    silent_after_s: float = 60.0  # a member not reporting this long is not alive
    members: list[_Member] = field(init=False)
    run_dir: Path = field(init=False)

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ValueError("a supervisor needs at least one member")
        self.run_dir = Path(tempfile.mkdtemp(prefix="provisioning-worker-"))
        self.metrics_dir = self.run_dir / "metrics"
        self.metrics_dir.mkdir()
        self.members = [
            _Member(MemberSpec(n, member_instance_id(self.instance_id, n),
                               self.run_dir / f"member-{n}.json"))
            for n in range(self.count)]
        self._wake = threading.Event()
        self._signal: int | None = None
        self._failure: str | None = None
        self._turned = time.monotonic()
        self.ops_port: int | None = None  # the port served (metrics_port 0 picks one)

    # --- lifecycle ---------------------------------------------------------------------------

    def run(self) -> int:
        """Run the members until SIGTERM/SIGINT; 0 when all of them then stopped cleanly."""
        previous = {signum: signal.signal(signum, self._on_signal)
                    for signum in (signal.SIGTERM, signal.SIGINT)}
        # A member's exit is seen at once, not at the next look: a restart is a failover.
        previous[signal.SIGCHLD] = signal.signal(signal.SIGCHLD, self._on_child_exit)
        ops = None
        try:
            # The port first: a port in use fails the start before any member runs.
            ops = start_ops(self.metrics_port, self.readiness, self.liveness, self._registry())
            self.ops_port = ops.port if ops is not None else None
            for member in self.members:
                self._start(member)
            log.info("supervising worker processes",
                     extra={"processes": self.count, "instance": self.instance_id})
            while self._signal is None and self._failure is None:
                self._turned = time.monotonic()
                self._watch()
                self._wake.wait(POLL_S)
                self._wake.clear()  # a stop() meanwhile has set _signal, checked above
            clean = self._shutdown(self._signal or signal.SIGTERM)
        finally:
            if ops is not None:
                ops.stop()
            shutil.rmtree(self.run_dir, ignore_errors=True)
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        if self._failure is not None:
            raise MembersKeepFailing(self._failure)
        return 0 if clean else 1

    def stop(self, signum: int = signal.SIGTERM) -> None:
        """Stop every member with `signum` (what a SIGTERM or SIGINT to the supervisor does)."""
        self._signal = signum
        self._wake.set()

    def _on_signal(self, signum: int, _frame: object) -> None:
        self.stop(signum)

    def _on_child_exit(self, _signum: int, _frame: object) -> None:
        self._wake.set()

    # --- members -------------------------------------------------------------------------------

    def _environment(self) -> dict[str, str]:
        env = dict(os.environ)
        # The supervisor serves the port; a member binding it too would fail.
        env.pop("PROVISIONING_METRICS_PORT", None)
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        if self.metrics_port is not None:
            # Only when served: shared files make every counter update a little dearer.
            env["PROMETHEUS_MULTIPROC_DIR"] = str(self.metrics_dir)
        return env

    def _start(self, member: _Member) -> None:
        member.spec.status_file.unlink(missing_ok=True)
        member.process = subprocess.Popen(list(self.command(member.spec)),
                                          env=self._environment(), start_new_session=True)
        member.started_at = time.monotonic()
        member.restart_at = None
        if member.starts:
            MEMBER_RESTARTS.labels(str(member.spec.index)).inc()
        member.starts += 1
        log.info("worker process started", extra={
            "member": member.spec.index, "instance": member.spec.instance_id,
            "pid": member.process.pid, "start": member.starts})

    def _watch(self) -> None:
        now = time.monotonic()
        for member in self.members:
            if member.process is not None:
                code = member.process.poll()
                if code is not None:
                    self._exited(member, code, now)
            # In the same look as its exit when its restart is due at once.
            if (member.process is None and member.restart_at is not None
                    and now >= member.restart_at):
                self._start(member)

    def _exited(self, member: _Member, code: int, now: float) -> None:
        assert member.process is not None
        pid, member.process, member.last_exit = member.process.pid, None, code
        self._forget(member, pid)
        lived_s = now - member.started_at
        member.deaths_at_once = (member.deaths_at_once + 1 if lived_s < self.policy.settle_s
                                 else 0)
        fields = {"member": member.spec.index, "instance": member.spec.instance_id, "pid": pid,
                  "exit": describe_exit(code), "lived_s": round(lived_s, 1)}
        if member.deaths_at_once >= self.policy.give_up_after:
            self._failure = (
                f"worker process {member.spec.index} (instance {member.spec.instance_id}) "
                f"exited {member.deaths_at_once} times in a row within "
                f"{self.policy.settle_s:.0f} s of its start (last: {describe_exit(code)}); "
                "giving up: its log above says why")
            log.error("worker process keeps dying; stopping the others", extra=fields)
            return
        delay = self.policy.backoff_s(member.deaths_at_once)
        member.restart_at = now + delay
        log.warning("worker process exited unasked; restarting it",
                    extra={**fields, "restart_in_s": delay})

    def _forget(self, member: _Member, pid: int) -> None:
        """What a dead member leaves: its report (never to be read as its successor's) and its
        live gauges (its counters and histograms stay: they count what it did)."""
        member.spec.status_file.unlink(missing_ok=True)
        if self.metrics_port is not None:
            mark_process_dead(pid, str(self.metrics_dir))

    def _shutdown(self, signum: int) -> bool:
        running = [m for m in self.members if m.process is not None]
        log.info("stopping worker processes",
                 extra={"signal": signal.Signals(signum).name, "processes": len(running)})
        for member in running:
            assert member.process is not None
            member.process.send_signal(signum)
        deadline = time.monotonic() + self.stop_timeout_s
        clean = True
        for member in running:
            assert member.process is not None
            process = member.process
            try:
                code = process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("worker process did not stop in time; killing it",
                          extra={"member": member.spec.index, "pid": process.pid})
                process.kill()
                code = process.wait()
            self._turned = time.monotonic()
            clean = clean and code == 0
            member.process, member.last_exit = None, code
            self._forget(member, process.pid)
            log.info("worker process stopped", extra={
                "member": member.spec.index, "pid": process.pid, "exit": describe_exit(code)})
        return clean

    # --- probes and metrics --------------------------------------------------------------------

    def readiness(self) -> tuple[bool, str]:
        if self._signal is not None or self._failure is not None:
            return False, "stopping"
        answers = [self._member_readiness(m) for m in self.members]
        reasons = "; ".join(f"process {m.spec.index}: {why}"
                            for m, (_, why) in zip(self.members, answers, strict=True))
        return all(good for good, _ in answers), reasons

    def _member_readiness(self, member: _Member) -> tuple[bool, str]:
        if member.process is None:
            return False, f"restarting after it exited ({describe_exit(member.last_exit)})"
        status = read_status(member.spec.status_file)
        if status is None or status.pid != member.process.pid:
            return False, "starting"
        if status.age_s() > self.silent_after_s:
            return False, f"no report for {status.age_s():.0f} s"
        return status.ready, status.readiness

    def liveness(self) -> tuple[bool, str]:
        """Alive while the supervisor's loop turns and no member says (or shows, by falling
        silent) that it is stuck: /healthz then fails, and the orchestrator restarts the whole
        set, as it restarts a single worker whose loop is stuck."""
        stuck_s = time.monotonic() - self._turned
        if stuck_s > 30:
            return False, f"the supervisor's loop has not turned for {stuck_s:.0f} s"
        problems = []
        for member in self.members:
            good, why = self._member_liveness(member)
            if not good:
                problems.append(f"process {member.spec.index}: {why}")
        return (not problems), "; ".join(problems) or "ok"

    def _member_liveness(self, member: _Member) -> tuple[bool, str]:
        process = member.process
        if process is None:
            return True, "restarting"
        status = read_status(member.spec.status_file)
        if status is None or status.pid != process.pid:
            silent_s = time.monotonic() - member.started_at
            if silent_s > self.silent_after_s:
                return False, f"no report {silent_s:.0f} s after its start"
            return True, "starting"
        if status.age_s() > self.silent_after_s:
            return False, f"no report for {status.age_s():.0f} s"
        return status.alive, status.liveness

    def _registry(self) -> CollectorRegistry:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(self.metrics_dir))
        registry.register(MEMBER_RESTARTS)
        return registry


def describe_exit(code: int | None) -> str:
    if code is None:
        return "not yet"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"
