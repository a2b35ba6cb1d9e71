"""The supervisor of `provisioning worker --processes N`, with real member processes that
report and exit as told (`member_stand_in.py`): restarts under the same instance id, giving up
on members that die at once, signals forwarded, exit codes, and the probes over the set."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from consumer import supervisor as supervisor_module
from consumer.supervisor import MembersKeepFailing, MemberSpec, RestartPolicy, Supervisor
from provisioning.metrics import MEMBER_RESTARTS

STAND_IN = Path(__file__).with_name("member_stand_in.py")
QUICK = RestartPolicy(settle_s=5.0, first_backoff_s=0.05, max_backoff_s=0.2, give_up_after=3)


def stand_in(log: Path, **per_member: Sequence[str]) -> Callable[[MemberSpec], list[str]]:
    """Members running the stand-in; `per_member["m<n>"]` adds arguments for member n."""
    def command(member: MemberSpec) -> list[str]:
        return [sys.executable, str(STAND_IN), "--instance-id", member.instance_id,
                "--status-file", str(member.status_file), "--log", str(log),
                *per_member.get(f"m{member.index}", ())]
    return command


def starts(log: Path) -> list[tuple[str, int]]:
    if not log.exists():
        return []
    return [(line.split()[0], int(line.split()[1])) for line in log.read_text().splitlines()]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def restarts_of(member: str) -> float:
    registry = CollectorRegistry()
    registry.register(MEMBER_RESTARTS)
    value = registry.get_sample_value("provisioning_worker_member_restarts_total",
                                      {"member": member})
    return value or 0.0


def in_background(action: Callable[[], None]) -> threading.Thread:
    thread = threading.Thread(target=action, daemon=True)
    thread.start()
    return thread


def wait_until(done: Callable[[], object], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout_s} s")
        time.sleep(0.05)


def test_sigterm_reaches_every_member_and_a_clean_stop_exits_zero(tmp_path: Path) -> None:
    log = tmp_path / "starts.log"
    supervisor = Supervisor(2, stand_in(log), instance_id="t", policy=QUICK)
    seen: dict[str, object] = {}

    def once_ready_send_sigterm() -> None:
        wait_until(lambda: supervisor.readiness()[0], 30, "both members ready")
        seen["readiness"] = supervisor.readiness()[1]
        seen["liveness"] = supervisor.liveness()
        os.kill(os.getpid(), signal.SIGTERM)  # as the orchestrator does: to the supervisor

    in_background(once_ready_send_sigterm)
    before = signal.getsignal(signal.SIGTERM)
    assert supervisor.run() == 0
    assert seen["readiness"] == "process 0: t-0 ready; process 1: t-1 ready"
    assert seen["liveness"] == (True, "ok")
    assert sorted(instance for instance, _ in starts(log)) == ["t-0", "t-1"]
    assert not any(alive(pid) for _, pid in starts(log))
    assert not supervisor.run_dir.exists()  # the run's status and metrics files are gone
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_member_that_stops_badly_makes_the_exit_code_say_so(tmp_path: Path) -> None:
    log = tmp_path / "starts.log"
    supervisor = Supervisor(2, stand_in(log, m0=["--exit-on-term", "3"], m1=["--ignore-term"]),
                            instance_id="t", policy=QUICK, stop_timeout_s=1.0)
    in_background(lambda: (wait_until(lambda: supervisor.readiness()[0], 30, "ready"),
                           supervisor.stop()))
    assert supervisor.run() == 1
    # the one that ignored SIGTERM was killed when the stop time was up
    assert not any(alive(pid) for _, pid in starts(log))


def test_a_member_that_ran_is_restarted_at_once_under_its_instance_id(tmp_path: Path) -> None:
    log = tmp_path / "starts.log"
    policy = RestartPolicy(settle_s=0.5, first_backoff_s=5, give_up_after=2)
    # A new member reports only after a second: readiness must say so meanwhile.
    supervisor = Supervisor(2, stand_in(log, m1=["--report-after-s", "1"]),
                            instance_id="t", policy=policy)
    restarts_before = restarts_of("1")
    seen: dict[str, object] = {}

    def kill_member_1_then_watch() -> None:
        wait_until(lambda: supervisor.readiness()[0], 30, "both members ready")
        time.sleep(0.6)  # past settle_s: it "ran"
        (first_pid,) = [pid for instance, pid in starts(log) if instance == "t-1"]
        killed_at = time.monotonic()
        os.kill(first_pid, signal.SIGKILL)
        wait_until(lambda: not supervisor.readiness()[0], 5, "readiness false")
        seen["while_down"] = supervisor.readiness()[1]
        wait_until(lambda: len(starts(log)) == 3, 10, "member 1 restarted")
        seen["restart_s"] = time.monotonic() - killed_at
        wait_until(lambda: supervisor.readiness()[0], 30, "ready again")
        supervisor.stop()

    in_background(kill_member_1_then_watch)
    assert supervisor.run() == 0
    assert [instance for instance, _ in starts(log)].count("t-1") == 2
    assert seen["restart_s"] < 3  # at once, not after the 5 s backoff of deaths at start
    assert "process 1:" in str(seen["while_down"])
    assert "process 0: t-0 ready" in str(seen["while_down"])
    assert restarts_of("1") == restarts_before + 1


def test_a_members_exit_wakes_the_supervisor_which_restarts_it_in_the_same_look(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Its periodic look at the members a minute apart: a restart seen within seconds can only
    # come from the exit waking it (SIGCHLD), and be made in the look that saw the exit.
    monkeypatch.setattr(supervisor_module, "POLL_S", 60.0)
    log = tmp_path / "starts.log"
    policy = RestartPolicy(settle_s=0.5, first_backoff_s=5, give_up_after=2)
    supervisor = Supervisor(1, stand_in(log), instance_id="t", policy=policy)
    seen: dict[str, object] = {}

    def kill_the_member_then_stop() -> None:
        try:
            wait_until(lambda: supervisor.readiness()[0], 30, "the member ready")
            time.sleep(0.6)  # past settle_s: it "ran", so its restart is due at once
            ((_, first_pid),) = starts(log)
            os.kill(first_pid, signal.SIGKILL)
            wait_until(lambda: len(starts(log)) == 2, 10, "the member restarted")
            seen["restarted"] = True
        finally:
            supervisor.stop()  # whatever happened: run() returns and the test says it

    in_background(kill_the_member_then_stop)
    before = signal.getsignal(signal.SIGCHLD)
    assert supervisor.run() == 0
    assert seen == {"restarted": True}
    assert [instance for instance, _ in starts(log)] == ["t-0", "t-0"]
    assert signal.getsignal(signal.SIGCHLD) is before


def test_members_that_die_at_once_make_it_give_up_naming_the_member(tmp_path: Path) -> None:
    log = tmp_path / "starts.log"
    supervisor = Supervisor(2, stand_in(log, m1=["--exit-at-once", "2"]), instance_id="t",
                            policy=QUICK)
    with pytest.raises(MembersKeepFailing) as failure:
        supervisor.run()
    assert str(failure.value).startswith(
        "worker process 1 (instance t-1) exited 3 times in a row within 5 s of its start "
        "(last: exit code 2); giving up")
    assert [instance for instance, _ in starts(log)].count("t-1") == 3
    assert not any(alive(pid) for _, pid in starts(log))  # member 0 was stopped too


def test_a_member_that_says_it_is_stuck_fails_the_sets_liveness(tmp_path: Path) -> None:
    log = tmp_path / "starts.log"
    supervisor = Supervisor(2, stand_in(log, m0=["--not-alive"]), instance_id="t", policy=QUICK)
    seen: dict[str, object] = {}

    def watch() -> None:
        wait_until(lambda: supervisor.readiness()[0], 30, "both members ready")
        seen["liveness"] = supervisor.liveness()
        supervisor.stop()

    in_background(watch)
    assert supervisor.run() == 0
    assert seen["liveness"] == (False, "process 0: stuck")


def test_one_port_serves_the_members_metrics_added_up(tmp_path: Path) -> None:
    log = tmp_path / "starts.log"
    members = stand_in(log, m0=["--active", "2", "--lag", "0=5", "--requests", "4"],
                       m1=["--active", "3", "--lag", "0=7", "--requests", "6"])

    def command(member: MemberSpec) -> list[str]:
        # Member 1 sets partition 0's lag after member 0 did (it took the partition over):
        # once member 0 has reported, which it does after setting its own.
        after = (["--lag-after", str(supervisor.members[0].spec.status_file)]
                 if member.index == 1 else [])
        return [*members(member), *after]

    supervisor = Supervisor(2, command, instance_id="t", policy=QUICK, metrics_port=0)
    seen: dict[str, list] = {}

    def scrape() -> None:
        wait_until(lambda: supervisor.readiness()[0], 30, "both members ready")
        time.sleep(0.3)  # a report (and the gauges it copies) after member 1's first
        port = supervisor.ops_port
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        seen["samples"] = [(s.name, s.labels, s.value)
                           for family in text_string_to_metric_families(text)
                           for s in family.samples]
        supervisor.stop()

    in_background(scrape)
    assert supervisor.run() == 0
    samples = seen["samples"]
    assert ("provisioning_requests_total", {"workflow_type": "tenant"}, 10.0) in samples
    # computed at scrape time in each member, summed over the live ones
    assert ("provisioning_active_workflows", {"workflow_type": "tenant"}, 5.0) in samples
    # one series per partition, the latest owner's reading
    lag = [s for s in samples if s[0] == "provisioning_consumer_lag"]
    assert lag == [("provisioning_consumer_lag",
                    {"group": "g", "topic": "commands", "partition": "0"}, 7.0)]
