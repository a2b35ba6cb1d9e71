"""What platform services import: submit provisioning commands, await and react to events,
and take part in sagas as a step participant."""

from producers.client import (
    InvalidRequest,
    Outcome,
    OutcomeTimeout,
    ProvisioningClient,
    partition_for,
)
from producers.commands import CommandPublisher, PublishError
from producers.participant import (
    ParticipantCounts,
    PermanentStepFailure,
    StepParticipant,
    StepRequest,
)
from producers.subscriber import Event, EventSubscriber, SubscriberCounts, UnknownEventName

__all__ = [
    "CommandPublisher",
    "Event",
    "EventSubscriber",
    "InvalidRequest",
    "Outcome",
    "OutcomeTimeout",
    "ParticipantCounts",
    "PermanentStepFailure",
    "ProvisioningClient",
    "PublishError",
    "StepParticipant",
    "StepRequest",
    "SubscriberCounts",
    "UnknownEventName",
    "partition_for",
]
