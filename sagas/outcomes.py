"""How a run ended, for the people paged about it: succeeded, refused, cancelled or failed.

The seed's success target (">99.9 %, excluding permanent failures like invalid data") must not
page anyone for a user's mistake. So a run's end is classed:

- `succeeded`;
- `refused`: a participant said no, for good, at a step that only checks (a validation or a
  check: no compensation) — a business rule (over quota, an unknown entity, no permission);
- `cancelled`: an operator cancelled it;
- `failed`: everything else — a system that did not answer, retries or deadline spent, a
  refusal at a step that changes something, an answer that could not be recorded.

and with a bounded `code` for the top failure reasons (free-text reasons stay in the events
and the projection). The classes are read from the reasons this package writes itself
(`sagas/transitions.py`, `sagas/decide.py`), which is why they live here.
"""

from __future__ import annotations

from dataclasses import dataclass

from sagas.workflows import Workflow

SUCCEEDED, REFUSED, CANCELLED, FAILED = "succeeded", "refused", "cancelled", "failed"

DEADLINE_EXCEEDED = "deadline exceeded"
CANCELLED_BY = "cancelled by "
GAVE_UP = "(gave up after "
UNRECORDABLE = "the participant's answer cannot be recorded"
OUTPUT_PROBLEM = "the participant's output"
NO_RESULT_ID = "succeeded without the output"


@dataclass(frozen=True, slots=True)
class RunOutcome:
    outcome: str  # succeeded, refused, cancelled or failed
    code: str  # a bounded reason code; "none" for a success


def failed_run(workflow: Workflow, failed_step: str | None, reason: str) -> RunOutcome:
    """The class of a FAILED run from its failed step and the reason it ended with."""
    if reason.startswith(CANCELLED_BY):
        return RunOutcome(CANCELLED, "cancelled")
    if reason.startswith(DEADLINE_EXCEEDED):
        return RunOutcome(FAILED, "deadline_exceeded")
    if GAVE_UP in reason:
        return RunOutcome(FAILED, "retries_exhausted")
    if reason.startswith((UNRECORDABLE, OUTPUT_PROBLEM)):
        return RunOutcome(FAILED, "unrecordable_answer")
    if NO_RESULT_ID in reason:
        return RunOutcome(FAILED, "contract_broken")
    if failed_step is None or not workflow.has_step(failed_step):
        return RunOutcome(FAILED, "unknown")
    if workflow.step(failed_step).compensation is None:
        return RunOutcome(REFUSED, "refused")
    return RunOutcome(FAILED, "participant_refused")
