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
    builtin = BuiltinParticipant(create_engine(settings))

    def route(call: StepCall) -> Participant:
        # Every step runs on the built-in registry until routing configuration exists.
        return builtin

    worker = Worker(settings, route, options)
    worker.install_signal_handlers()
    worker.run()
    return 0
