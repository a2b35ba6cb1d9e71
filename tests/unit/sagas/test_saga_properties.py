"""Properties of every saga, over random participant behaviour, operators and resent commands."""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from saga_driver import (
    DEFAULT_OUTPUTS,
    PARAMS,
    T0,
    Answer,
    Turn,
    command,
    drive,
)

from sagas import (
    DEFAULT_REGISTRY,
    CompensateStep,
    EmitEvent,
    ExecuteStep,
    OperatorCancel,
    OperatorRecompensate,
    OperatorResolve,
    OperatorRetry,
    Outcome,
    PersistState,
    ProvisioningCompensationFailed,
    ProvisioningCompensationStarted,
    ProvisioningFailedEvent,
    ProvisioningRejected,
    ProvisioningRequested,
    ProvisioningStepCompensated,
    ProvisioningStepCompleted,
    ProvisioningStepFailed,
    ProvisioningStepStarted,
    ProvisioningSucceeded,
    Reply,
    RetryPolicy,
    SagaState,
    StartCommand,
    Status,
    Workflow,
    WorkflowRegistry,
    decide,
    evolve,
    replay,
)
from sagas.transitions import DEADLINE_EXCEEDED

WORKFLOWS = ["tenant", "service", "user", "resource"]
TERMINAL = (ProvisioningSucceeded, ProvisioningFailedEvent)

# Weighted towards success, so that runs get deep into their workflows before failing.
STEP_ANSWERS = ["ok"] * 5 + ["transient", "permanent", "silence", "late", "twice"]
COMPENSATION_ANSWERS = ["ok"] * 3 + ["fail", "silence", "twice"]


class RandomParticipants:
    """Answers each call as hypothesis draws it: success, failure, silence, late or twice.

    Each step first draws a temperament: answering at random call by call, or failing (or
    staying silent) for ever, so that spent retries, deadlines and compensations that never
    succeed are as common as the single hiccup.
    """

    def __init__(self, data: st.DataObject) -> None:
        self.data = data
        self.temperaments: dict[tuple[str, str], str] = {}

    def temperament(self, call: ExecuteStep | CompensateStep) -> str:
        key = (type(call).__name__, call.step)
        if key not in self.temperaments:
            choices = ["random"] * 6 + ["failing", "silent"]
            self.temperaments[key] = self.data.draw(st.sampled_from(choices), label=str(key))
        return self.temperaments[key]

    def __call__(self, call: ExecuteStep | CompensateStep) -> Answer:
        temperament = self.temperament(call)
        if temperament == "silent":
            return Answer(None)
        if isinstance(call, CompensateStep):
            kind = "fail" if temperament == "failing" else self.data.draw(
                st.sampled_from(COMPENSATION_ANSWERS), label="compensation")
            return {
                "ok": Answer(Outcome.SUCCEEDED),
                "fail": Answer(Outcome.TRANSIENT_FAILURE, reason="undo failed"),
                "silence": Answer(None),
                "twice": Answer(Outcome.SUCCEEDED, deliveries=2),
            }[kind]
        kind = "transient" if temperament == "failing" else self.data.draw(
            st.sampled_from(STEP_ANSWERS), label=call.step)
        output = DEFAULT_OUTPUTS.get(call.step, {})
        return {
            "ok": Answer(Outcome.SUCCEEDED, output),
            "transient": Answer(Outcome.TRANSIENT_FAILURE, reason="busy"),
            "permanent": Answer(Outcome.PERMANENT_FAILURE, reason="refused"),
            "silence": Answer(None),
            "late": Answer(Outcome.SUCCEEDED, output, after_ms=12_000),
            "twice": Answer(Outcome.SUCCEEDED, output, deliveries=2),
        }[kind]


def tight(workflow: Workflow) -> Workflow:
    """The workflow with more retries than its deadline leaves time for."""
    steps = tuple(
        dataclasses.replace(s, retry=RetryPolicy(max_retries=6, initial_backoff_ms=500),
                            attempt_timeout_ms=4_000, deadline_ms=15_000)
        for s in workflow.steps
    )
    return dataclasses.replace(workflow, steps=steps)


TIGHT_REGISTRY = WorkflowRegistry([tight(w) for w in DEFAULT_REGISTRY])


@dataclass
class History:
    turns: list[Turn]
    registry: WorkflowRegistry

    @property
    def events(self) -> list:
        return [e.event for t in self.turns for e in t.effects if isinstance(e, EmitEvent)]

    @property
    def final(self) -> SagaState | None:
        return self.turns[-1].after

    def __repr__(self) -> str:
        # Hypothesis prints the failing example: the story, not every field of every state.
        lines = [f"{t.now - T0:>7} {type(t.input).__name__}" for t in self.turns if t.effects]
        lines += [f"  #{e.sequence} r{e.run} {type(e).__name__} {getattr(e, 'step', '')}"
                  f" {getattr(e, 'attempt', '')}" for e in self.events]
        return "History(\n" + "\n".join(lines) + "\n)"


def extra_inputs(workflow_type: str) -> st.SearchStrategy:
    """Things that happen to a saga besides its participants' answers, at random times."""
    same = command(workflow_type)
    conflicting = command(workflow_type, params={**PARAMS[workflow_type], "requestedBy": "mallory"})
    happening = st.sampled_from([
        same,
        conflicting,
        OperatorCancel(request_id="req-1", operator="alice", reason="changed my mind"),
        OperatorRetry(request_id="req-1", operator="alice"),
    ])
    # Mostly while the saga is busy (its first second), sometimes long after.
    when = st.one_of(st.integers(T0 + 1, T0 + 1_000), st.integers(T0 + 1, T0 + 120_000))
    return st.lists(st.tuples(when, happening), max_size=4)


@st.composite
def histories(draw: st.DrawFn) -> History:
    data = draw(st.data())
    workflow_type = draw(st.sampled_from(WORKFLOWS))
    registry = draw(st.sampled_from([DEFAULT_REGISTRY, TIGHT_REGISTRY]))
    participants = RandomParticipants(data)
    trace = drive([(T0, command(workflow_type)), *draw(extra_inputs(workflow_type))],
                  participants, registry=registry)
    turns = list(trace.turns)
    # Resend the command after a failure, a few times: each resend is a new run (once an
    # operator has re-attempted or resolved the leftovers, or it is refused).
    for resend in range(draw(st.integers(0, 2))):
        at = turns[-1].now + 1_000 * (resend + 1)
        for leftover in turns[-1].after.uncompensated_steps:
            action = draw(st.sampled_from(["none", "recompensate", "resolve"]), label=leftover)
            if action != "none":
                operator_input = (
                    OperatorRecompensate(request_id="req-1", operator="ops", step=leftover)
                    if action == "recompensate" else
                    OperatorResolve(request_id="req-1", operator="ops", step=leftover,
                                    reason="dropped by hand"))
                turns += drive(operator_input, participants, state=turns[-1].after, at=at,
                               registry=registry).turns
                at = turns[-1].now + 1_000
        turns += drive(command(workflow_type), participants, state=turns[-1].after, at=at,
                       registry=registry).turns
    return History(turns, registry)


PROPERTY_SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@PROPERTY_SETTINGS
@given(histories())
def test_every_run_has_exactly_one_terminal_event(history: History) -> None:
    runs = [e.run for e in history.events if isinstance(e, ProvisioningRequested)]
    terminal = defaultdict(int)
    for event in history.events:
        if isinstance(event, TERMINAL):
            terminal[event.run] += 1
    assert runs == list(range(1, len(runs) + 1))
    assert dict(terminal) == {run: 1 for run in runs}
    assert history.final.is_terminal


@PROPERTY_SETTINGS
@given(histories())
def test_completed_steps_are_compensated_at_most_once_only_on_failure_in_reverse(
    history: History,
) -> None:
    by_run = defaultdict(list)
    for event in history.events:
        by_run[event.run].append(event)
    for run, events in by_run.items():
        # The run's own compensation; an operator's re-attempts of leftovers come after its end.
        end = next(i for i, e in enumerate(events) if isinstance(e, TERMINAL))
        events = events[:end + 1]
        workflow = history.registry.get(events[0].workflow_type, events[0].workflow_version)
        completed = [e.step for e in events if isinstance(e, ProvisioningStepCompleted)]
        compensated = [e.step for e in events if isinstance(e, ProvisioningStepCompensated)]
        given_up = [e.step for e in events
                    if isinstance(e, ProvisioningCompensationFailed) and e.next_retry_at is None]
        settled = [e.step for e in events
                   if isinstance(e, ProvisioningStepCompensated)
                   or (isinstance(e, ProvisioningCompensationFailed) and e.next_retry_at is None)]
        assert len(set(completed)) == len(completed), f"run {run}: a step completed twice"
        assert len(set(compensated)) == len(compensated), f"run {run}: undone twice"
        assert not set(compensated) & set(given_up)
        terminal = next(e for e in events if isinstance(e, TERMINAL))
        if isinstance(terminal, ProvisioningSucceeded):
            assert not any(isinstance(e, ProvisioningCompensationStarted) for e in events)
        else:
            undoable = [s for s in reversed(completed) if workflow.step(s).compensation]
            failure = next(e for e in events
                           if isinstance(e, ProvisioningStepFailed) and e.next_retry_at is None)
            if (failure.step not in completed and workflow.step(failure.step).compensation
                    and _may_have_acted(failure)):
                undoable.insert(0, failure.step)
            assert settled == undoable, f"run {run}: compensations out of order"


def _may_have_acted(failure: ProvisioningStepFailed) -> bool:
    """Anything but a participant's refusal of the first attempt."""
    no_answer = failure.reason.startswith((DEADLINE_EXCEEDED, "cancelled by"))
    return failure.transient or failure.attempt > 1 or no_answer


@PROPERTY_SETTINGS
@given(histories())
def test_sequence_numbers_increase_by_one_across_runs(history: History) -> None:
    sequences = [e.sequence for e in history.events]
    assert sequences == list(range(1, len(sequences) + 1))


@PROPERTY_SETTINGS
@given(histories())
def test_replay_of_the_events_equals_the_state_after_every_turn(history: History) -> None:
    replayed = None
    for turn in history.turns:
        for effect in turn.effects:
            if isinstance(effect, EmitEvent):
                replayed = evolve(replayed, effect.event)
        assert replayed == turn.after
    assert replay(history.events) == history.final


@PROPERTY_SETTINGS
@given(histories())
def test_a_terminal_saga_only_ever_answers(history: History) -> None:
    inputs = [t.input for t in history.turns]
    final = history.final
    for turn in history.turns:
        if turn.before is None or not turn.before.is_terminal:
            continue
        effects = turn.effects
        if _starts_a_run(turn):
            continue
        if _conflicts(turn) or _held_by_leftovers(turn):
            assert [type(e) for e in effects if not isinstance(e, Reply)] == [EmitEvent,
                                                                           PersistState]
            assert isinstance(effects[0].event, ProvisioningRejected)
            continue
        if isinstance(turn.input, OperatorRecompensate | OperatorResolve):
            continue  # acts on a FAILED saga's leftovers (test_saga_leftovers.py)
        assert all(isinstance(e, Reply) for e in effects), turn.input
        assert turn.after is turn.before
    # Everything that ever happened to the saga, again, once it is over.
    for old in inputs:
        if isinstance(old, StartCommand | OperatorRetry | OperatorRecompensate | OperatorResolve):
            continue
        later = history.turns[-1].now + 1
        assert decide(final, old, later, registry=history.registry) == (final, ())


@PROPERTY_SETTINGS
@given(histories())
def test_one_call_at_a_time_and_attempts_count_up(history: History) -> None:
    attempts = defaultdict(list)
    for turn in history.turns:
        calls = [e for e in turn.effects if isinstance(e, ExecuteStep | CompensateStep)]
        assert len(calls) <= 1
        for call in calls:
            attempts[(call.run, call.step, type(call).__name__)].append(call.attempt)
            assert call.idempotency_key == f"req-1:{call.run}:{call.step}"
    for numbers in attempts.values():
        assert numbers == list(range(1, len(numbers) + 1))
    for event in history.events:
        if isinstance(event, ProvisioningStepStarted):
            assert event.deadline_at <= event.step_deadline


@settings(max_examples=60, deadline=None)
@given(st.data(), st.sampled_from(WORKFLOWS))
def test_a_state_never_changes_without_an_event(data: st.DataObject, workflow_type: str) -> None:
    trace = drive(command(workflow_type), RandomParticipants(data), registry=TIGHT_REGISTRY)
    for turn in trace.turns:
        emitted = any(isinstance(e, EmitEvent) for e in turn.effects)
        assert emitted == (turn.after is not turn.before)
        if turn.after is not None and turn.before is not None and turn.after != turn.before:
            assert turn.after.sequence > turn.before.sequence


def _starts_a_run(turn: Turn) -> bool:
    return turn.before.status is Status.FAILED and any(
        isinstance(e, EmitEvent) and isinstance(e.event, ProvisioningRequested)
        for e in turn.effects
    )


def _conflicts(turn: Turn) -> bool:
    return isinstance(turn.input, StartCommand) and turn.input.params != turn.before.params


def _held_by_leftovers(turn: Turn) -> bool:
    return (isinstance(turn.input, StartCommand) and turn.before.status is Status.FAILED
            and bool(turn.before.uncompensated_steps))
