"""The records one transition stages (`Worker._stage`): their headers as schemas/README.md,
Headers, says, and the record limit on the events and on the saga's state (no broker is
needed: the worker's Kafka clients are created, never used)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from consumer.worker import SagaFault, Worker, WorkerOptions
from provisioning.settings import Settings
from sagas import ExecuteStep, Outcome, StartCommand, StepResult, decide

T0 = 1_764_331_200_000
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
CONTENT_TYPE = b"application/vnd.apache.avro+single-object"
PARAMS = {"entityId": "e-1", "subscriptionPlan": "STARTER", "billingInfo.accountName": "A",
          "billingInfo.billingEmail": "a@example.com", "billingInfo.currency": "EUR"}


@pytest.fixture
def worker() -> Iterator[Worker]:
    worker = Worker(Settings(kafka_bootstrap_servers="127.0.0.1:9"), lambda call: None,
                    WorkerOptions(group_id="g", instance_id="i", max_record_bytes=3000))
    try:
        yield worker
    finally:
        worker.close()


def _start(request_id: str, trace_parent: str | None) -> StartCommand:
    return StartCommand(request_id=request_id, workflow_type="tenant", params=PARAMS,
                        requested_by="u", trace_parent=trace_parent)


def _stage(worker: Worker, state, saga_input, now):  # type: ignore[no-untyped-def]
    after, effects = decide(state, saga_input, now)
    return after, effects, worker._stage(0, saga_input.request_id, state, effects)


@pytest.mark.parametrize("trace_parent", [None, TRACEPARENT])
def test_every_event_carries_its_type_the_content_type_the_workflow_and_the_trace(
    worker: Worker, trace_parent: str | None,
) -> None:
    state, effects, staged = _stage(worker, None, _start("r-1", trace_parent), T0)
    step = next(e for e in effects if isinstance(e, ExecuteStep))
    result = StepResult(request_id="r-1", run=1, step=step.step, attempt=1,
                        outcome=Outcome.SUCCEEDED, output={"tenantId": "t-1"})
    _, _, second = _stage(worker, state, result, T0 + 5)

    records = [record for _, record in staged.records + second.records]
    names = ["ProvisioningRequested", "ProvisioningStepStarted",  # the command
             "ProvisioningStepCompleted", "ProvisioningStepStarted"]  # the first step's answer
    assert len(records) == len(names)
    for name, record in zip(names, records, strict=True):
        expected = [("event-type", name.encode()), ("content-type", CONTENT_TYPE),
                    ("workflow-type", b"tenant")]
        if trace_parent is not None:
            expected.append(("traceparent", trace_parent.encode()))
        assert record["headers"] == expected
        assert record["key"] == b"r-1"


def test_an_event_over_the_record_limit_fails_its_saga_with_the_size(worker: Worker) -> None:
    state, effects, _ = _stage(worker, None, _start("r-2", None), T0)
    step = next(e for e in effects if isinstance(e, ExecuteStep))
    result = StepResult(request_id="r-2", run=1, step=step.step, attempt=1,
                        outcome=Outcome.SUCCEEDED, output={"tenantId": "t" * 3000})

    with pytest.raises(SagaFault, match="ProvisioningStepCompleted record would be .* bytes, "
                                        "over the limit of 3000"):
        _stage(worker, state, result, T0 + 5)


def test_a_state_grown_over_the_limit_by_outputs_each_within_it_fails_its_saga(
    worker: Worker,
) -> None:
    # Each step's output is within the limit: the state, holding all of them, is not.
    state, effects, _ = _stage(worker, None, _start("r-3", None), T0)
    now = T0
    with pytest.raises(SagaFault, match="SagaState record would be about"):
        for i in range(5):
            step = next(e for e in effects if isinstance(e, ExecuteStep))
            now += 5
            state, effects, _ = _stage(worker, state, StepResult(
                request_id="r-3", run=1, step=step.step, attempt=1, outcome=Outcome.SUCCEEDED,
                output={f"note{i}": "n" * 700, "tenantId": "t-1"}), now)
    assert i == 2  # 3 x 700 bytes of outputs, with the parameters and the room for the rest
