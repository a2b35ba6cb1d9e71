"""Wiring of the worker process: settings, database, participants, signals."""

from __future__ import annotations

from consumer.participants.base import Participant, StepCall
from consumer.worker import Worker, WorkerOptions
from provisioning.logs import configure_logging
from provisioning.settings import Settings


def run_worker(settings: Settings, options: WorkerOptions) -> int:
    from consumer.participants.builtin import BuiltinParticipant
    from provisioning.database import create_engine

    configure_logging()
    # One connection per concurrent step: a step never waits for the pool.
    engine = create_engine(settings, pool_size=options.step_concurrency, max_overflow=0)
    builtin = BuiltinParticipant(engine)

    def route(call: StepCall) -> Participant:
        # Every step runs on the built-in registry until routing configuration exists.
        return builtin

    worker = Worker(settings, route, options)
    worker.install_signal_handlers()
    worker.run()
    return 0
