"""Every saga event, reply and state snapshot fits its Avro record, and states decode back."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import pytest

from consumer import wire
from sagas import PersistState, Reply, SagaState
from schemas import codec

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sagas"))
from saga_driver import Script, command, drive, permanent, transient  # noqa: E402

WORKFLOWS = ["tenant", "service", "user", "resource"]


def _traces(workflow: str):
    request_id = str(uuid.uuid4())
    yield drive(command(workflow, request_id))
    third_step_fails = Script(
        steps={2: permanent("quota exceeded")},
        compensations={1: transient("busy")},
    )
    yield drive(command(workflow, request_id), _by_position(third_step_fails, workflow))


def _by_position(script: Script, workflow: str) -> Script:
    from sagas import DEFAULT_REGISTRY

    steps = [s.name for s in DEFAULT_REGISTRY.latest(workflow).steps]
    return Script(
        steps={steps[i]: a for i, a in script.steps.items()},
        compensations={steps[i]: a for i, a in script.compensations.items()},
    )


@pytest.mark.parametrize("workflow", WORKFLOWS)
def test_every_output_of_a_run_encodes_and_state_round_trips(workflow: str) -> None:
    encoded = 0
    for trace in _traces(workflow):
        for turn in trace.turns:
            for effect in turn.effects:
                if isinstance(effect, PersistState):
                    data = wire.encode(effect.state)
                    decoded = codec.decode_as(data, "SagaState").value
                    assert wire.from_record(SagaState, decoded) == effect.state
                elif isinstance(effect, Reply):
                    codec.decode(wire.encode(effect.response))
                elif hasattr(effect, "event"):
                    event = effect.event
                    decoded = codec.decode(wire.encode(event))
                    assert decoded.record_name == type(event).__name__
                    assert decoded.value == wire.to_record(event)
                encoded += 1
    assert encoded > 20
