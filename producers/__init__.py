"""What platform services import: submit provisioning commands, await and react to events."""

from producers.client import (
    InvalidRequest,
    Outcome,
    OutcomeTimeout,
    ProvisioningClient,
    partition_for,
)
from producers.commands import CommandPublisher, PublishError
from producers.subscriber import Event, EventSubscriber, SubscriberCounts, UnknownEventName

__all__ = [
    "CommandPublisher",
    "Event",
    "EventSubscriber",
    "InvalidRequest",
    "Outcome",
    "OutcomeTimeout",
    "ProvisioningClient",
    "PublishError",
    "SubscriberCounts",
    "UnknownEventName",
    "partition_for",
]
