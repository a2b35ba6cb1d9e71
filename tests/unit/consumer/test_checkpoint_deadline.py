"""A transactional call that never returns (librdkafka 5456/5511) must not hold the worker:
the checkpoint gives up on it after its timeout plus a margin and condemns the producer."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from consumer.checkpoint import Checkpoint, ProducerHung


class StuckProducer:
    """Answers like a producer, except that committing offsets never returns."""

    def __init__(self) -> None:
        self.released = threading.Event()
        self.aborts = 0

    def begin_transaction(self) -> None:
        pass

    def flush(self, *_: object) -> int:
        return 0  # every record acknowledged

    def send_offsets_to_transaction(self, *_: object) -> None:
        self.released.wait()  # the call that never returns

    def commit_transaction(self, *_: object) -> None:
        pass

    def abort_transaction(self, *_: object) -> None:
        self.aborts += 1


class Group:
    def consumer_group_metadata(self) -> object:
        return object()


def test_a_call_that_never_returns_is_given_up_and_the_producer_is_not_used_again() -> None:
    stuck = StuckProducer()
    checkpoint = Checkpoint(stuck, Group(), timeout_s=0.2, hang_margin_s=0.3)  # type: ignore[arg-type]
    checkpoint.begin()
    checkpoint.consumed("commands", 0, 41)

    started = time.monotonic()
    with pytest.raises(ProducerHung):
        checkpoint.commit()
    waited = time.monotonic() - started

    assert 0.5 <= waited < 2.0, waited
    assert checkpoint.hung
    checkpoint.abort()
    assert stuck.aborts == 0, "a hung producer is not called again"
    assert not checkpoint.open
    stuck.released.set()

    fresh = StuckProducer()
    fresh.released.set()
    checkpoint.replace_producer(fresh)  # type: ignore[arg-type]
    checkpoint.begin()
    checkpoint.consumed("commands", 0, 42)
    assert checkpoint.commit() == []
    assert not checkpoint.hung


def test_a_call_left_behind_does_not_keep_the_process_from_exiting() -> None:
    """The thread stuck in the call must not be one the interpreter joins at exit (an
    executor's are): a worker stopped after such an incident once never ended."""
    script = (
        "import threading\n"
        "from consumer.checkpoint import ProducerHung, _Deadline\n"
        "try:\n"
        "    _Deadline().call(0.2, threading.Event().wait)\n"
        "except ProducerHung:\n"
        "    print('gave up')\n"
    )
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=30, cwd=Path(__file__).resolve().parents[3])
    assert (done.returncode, done.stdout.strip()) == (0, "gave up"), done.stderr
    assert time.monotonic() - started < 10


def test_a_commit_left_running_is_found_hung_by_the_loop_that_does_not_wait_for_it() -> None:
    """The loop only looks at the commit in flight (`settle(wait=False)`) and goes on; a call
    of it that never returns must still end as ProducerHung, one call's deadline after it
    started, not only when something finally waits for it (a worker once ran for minutes
    beside such a commit after a broker restart, until it was stopped)."""
    stuck = StuckProducer()
    checkpoint = Checkpoint(stuck, Group(), timeout_s=0.2, hang_margin_s=0.3)  # type: ignore[arg-type]
    checkpoint.begin()
    checkpoint.consumed("commands", 0, 41)
    checkpoint.start_commit()

    started = time.monotonic()
    with pytest.raises(ProducerHung):
        while time.monotonic() - started < 5:
            assert checkpoint.settle(wait=False) is None
            time.sleep(0.01)
    waited = time.monotonic() - started

    assert 0.5 <= waited < 2.0, waited
    assert checkpoint.hung and checkpoint.committing is None
    stuck.released.set()
