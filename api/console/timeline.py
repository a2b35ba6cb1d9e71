"""A request's audit trail as the console draws it: its runs, and per run a timeline of bars.

Pure: audit rows in (as `projection.store.read_events` returns them), bars out. One bar per
step attempt (from its `StepStarted` to the event that ended it), one per backoff (from a
transient failure to the next attempt), one per compensation attempt on an "undo <step>" lane;
lanes come in the order they began, so compensations appear below the steps, in reverse.
The chart (`charts.timeline_chart`) places them on a time axis.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from projection.fold import from_millis

# How a bar ended
COMPLETED, FAILED, RETRIED, RUNNING, INTERRUPTED = (
    "completed", "failed", "failed, retried", "running", "interrupted")
COMPENSATED, UNDO_FAILED, UNDO_RETRIED, GAVE_UP = (
    "compensated", "undo failed", "undo failed, retried", "undo given up")
BACKOFF = "backoff"


@dataclass(frozen=True, slots=True)
class Bar:
    lane: str  # the step, or "undo <step>" for its compensation
    kind: str  # attempt, backoff, compensation
    outcome: str
    start: datetime
    end: datetime | None  # None: still running
    attempt: int | None = None
    reason: str | None = None

    def duration(self, now: datetime) -> timedelta:
        return (self.end or now) - self.start

    def label(self, now: datetime) -> str:
        """What the bar says on hover and to a screen reader."""
        took = format_duration(self.duration(now))
        if self.kind == BACKOFF:
            text = f"{self.lane}: backoff of {took} before the next attempt"
        elif self.outcome == RUNNING:
            text = f"{self.lane}, attempt {self.attempt}: running for {took}"
        else:
            text = f"{self.lane}, attempt {self.attempt}: {self.outcome} in {took}"
        return f"{text}; {self.reason}" if self.reason else text


@dataclass(frozen=True, slots=True)
class Marker:
    """A moment on the timeline: an operator's action, the run's end."""

    at: datetime
    label: str


@dataclass(frozen=True, slots=True)
class RunTimeline:
    run: int
    start: datetime
    end: datetime | None  # the run's terminal event; None while it runs
    outcome: str  # COMPLETED, FAILED, REJECTED or RUNNING
    failed_step: str | None
    reason: str | None
    requested_by: str | None
    lanes: list[str] = field(default_factory=list)
    bars: list[Bar] = field(default_factory=list)
    markers: list[Marker] = field(default_factory=list)
    last_event_at: datetime | None = None

    def completed_steps(self) -> int:
        return sum(1 for b in self.bars if b.kind == "attempt" and b.outcome == COMPLETED)


def runs(audit: Iterable[Mapping[str, Any]], now: datetime) -> list[RunTimeline]:
    """Every run of the request in order, each with its timeline."""
    by_run: dict[int, list[Mapping[str, Any]]] = {}
    for event in sorted(audit, key=lambda e: e["sequence"]):
        by_run.setdefault(int(event["run"] or 0), []).append(event)
    return [_timeline(run, events, now) for run, events in sorted(by_run.items())]


def _timeline(run: int, events: list[Mapping[str, Any]], now: datetime) -> RunTimeline:
    lanes: list[str] = []
    bars: list[Bar] = []
    markers: list[Marker] = []
    open_bars: dict[str, int] = {}  # lane -> index in bars of its open attempt or backoff
    result = RunTimeline(run=run, start=events[0]["occurred_at"], end=None, outcome="RUNNING",
                         failed_step=None, reason=None, requested_by=None)

    def lane(name: str) -> str:
        if name not in lanes:
            lanes.append(name)
        return name

    def close(name: str, at: datetime, outcome: str | None = None,
              reason: str | None = None) -> Bar | None:
        index = open_bars.pop(name, None)
        if index is None:
            return None
        bar = bars[index]
        bars[index] = replace(bar, end=at, outcome=outcome or bar.outcome,
                              reason=reason or bar.reason)
        return bars[index]

    def begin(bar: Bar) -> None:
        open_bars[bar.lane] = len(bars)
        bars.append(bar)

    for event in events:
        kind, step, at = event["event_type"], event["step"], event["occurred_at"]
        payload = event["payload"] or {}
        attempt = event["attempt"]
        if kind == "ProvisioningRequested":
            result = replace(result, requested_by=payload.get("requestedBy"))
        elif kind == "ProvisioningStepStarted":
            close(lane(step), at)  # the backoff before this attempt ends here
            begin(Bar(step, "attempt", RUNNING, at, None, attempt))
        elif kind == "ProvisioningStepCompleted":
            if close(lane(step), at, COMPLETED) is None:
                bars.append(Bar(step, "attempt", COMPLETED, at, at, attempt))
        elif kind == "ProvisioningStepFailed":
            retry_at = payload.get("nextRetryAt")
            outcome = RETRIED if retry_at is not None else FAILED
            reason = payload.get("reason")
            if close(lane(step), at, outcome, reason) is None:
                bars.append(Bar(step, "attempt", outcome, at, at, attempt, reason))
            if retry_at is not None:
                begin(Bar(step, BACKOFF, BACKOFF, at, from_millis(retry_at), attempt))
        elif kind == "ProvisioningCompensationStarted":
            # an attempt still open (cancelled, or no answer came) ends as its undo begins
            close(step, at, INTERRUPTED)
            undo = lane(f"undo {step}")
            close(undo, at)
            begin(Bar(undo, "compensation", RUNNING, at, None, attempt))
        elif kind == "ProvisioningStepCompensated":
            close(lane(f"undo {step}"), at, COMPENSATED)
        elif kind == "ProvisioningCompensationFailed":
            retry_at = payload.get("nextRetryAt")
            undo = lane(f"undo {step}")
            close(undo, at, UNDO_RETRIED if retry_at is not None else GAVE_UP,
                  payload.get("reason"))
            if retry_at is not None:
                begin(Bar(undo, BACKOFF, BACKOFF, at, from_millis(retry_at), attempt))
        elif kind == "ProvisioningOperatorAction":
            what = payload.get("action", "?")
            target = f" of {payload['step']}" if payload.get("step") else ""
            said = f": {payload['reason']}" if payload.get("reason") else ""
            markers.append(Marker(at, f"{what}{target} by {payload.get('operator')}{said}"))
        elif kind == "ProvisioningSucceeded":
            result = replace(result, end=at, outcome="COMPLETED")
            markers.append(Marker(at, "succeeded"))
        elif kind == "ProvisioningFailedEvent":
            result = replace(result, end=at, outcome="FAILED",
                             failed_step=payload.get("failedStep"), reason=payload.get("reason"))
            markers.append(Marker(at, f"failed: {payload.get('reason')}"))
        elif kind == "ProvisioningRejected" and event["sequence"] == 0:
            result = replace(result, end=at, outcome="REJECTED", reason=payload.get("reason"))
    for index in open_bars.values():
        bar = bars[index]
        if result.end is None:
            continue  # still running: open bars are drawn to now, backoffs to their planned end
        if bar.kind == BACKOFF and bar.end is not None and bar.end > result.end:
            bars[index] = replace(bar, end=result.end)
        elif bar.kind != BACKOFF and bar.start <= result.end:
            # no answer came before the run ended; an operator's re-attempt of an undo after
            # the end stays running
            bars[index] = replace(bar, end=result.end, outcome=INTERRUPTED)
    last = events[-1]["occurred_at"]
    return replace(result, lanes=lanes, bars=bars, markers=markers, last_event_at=last)


def format_duration(delta: timedelta) -> str:
    seconds = max(delta.total_seconds(), 0.0)
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {rest} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"
