"""A remote participant, as another team would write it: the entity-management service doing
`create-tenant` (and its compensation) for the Provisioning Service over Kafka.

It does the real work on the service database through the built-in participant's code, so the
saga's later (built-in) steps find the tenant it made. Requests whose entityId starts with
`--slow-prefix` take `--delay-s` seconds first: a long-running provisioning.

    python tests/integration/participant_service.py --name entity-management --delay-s 6
"""

from __future__ import annotations

import argparse
import logging
import time

from consumer.participants.base import Action, Outcome, StepCall
from consumer.participants.builtin import BuiltinParticipant
from producers.participant import PermanentStepFailure, StepParticipant, StepRequest
from provisioning.database import create_engine
from provisioning.logs import configure_logging
from provisioning.settings import Settings

log = logging.getLogger("entity-management")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", default="entity-management")
    parser.add_argument("--group")
    parser.add_argument("--delay-s", type=float, default=0)
    parser.add_argument("--slow-prefix", default="slow-")
    args = parser.parse_args()
    configure_logging()
    settings = Settings()
    registry = BuiltinParticipant(create_engine(settings, pool_size=2, max_overflow=0))
    participant = StepParticipant(settings, args.name, group_id=args.group)

    def run(request: StepRequest, action: Action) -> dict[str, str]:
        if request.params.get("entityId", "").startswith(args.slow_prefix):
            log.info("working slowly on %s", request.request_id)
            time.sleep(args.delay_s)
        outcome = registry.call(StepCall(
            request_id=request.request_id, run=request.run,
            workflow_type=request.workflow_type, tenant_id=request.tenant_id,
            step=request.step, action=action, attempt=request.attempt,
            idempotency_key=request.idempotency_key, params=request.params,
            deadline_at=request.deadline_ms))
        if outcome.outcome is Outcome.PERMANENT_FAILURE:
            raise PermanentStepFailure(outcome.reason or "refused")
        if outcome.outcome is Outcome.TRANSIENT_FAILURE:
            raise RuntimeError(outcome.reason or "try again")
        log.info("done %s %s of %s", action.value, request.step, request.request_id)
        return dict(outcome.output)

    @participant.step("create-tenant")
    def create_tenant(request: StepRequest) -> dict[str, str]:
        return run(request, Action.EXECUTE)

    @participant.compensation("create-tenant")
    def delete_tenant(request: StepRequest) -> None:
        run(request, Action.COMPENSATE)

    participant.install_signal_handlers()
    log.info("participant %s ready", args.name)
    participant.run()
    participant.close()


if __name__ == "__main__":
    main()
