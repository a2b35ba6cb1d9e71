"""Poison commands: kept in the DLQ with the reason, never blocking their partition.

The DLQ record keeps the original key, value and headers byte for byte, and adds headers that
say what went wrong and where the record came from, so an operator can fix and redrive it.
"""

from __future__ import annotations

import uuid

from confluent_kafka import Message

ERROR_HEADERS = ("dlq-reason", "dlq-error-class", "dlq-origin-topic", "dlq-origin-partition",
                 "dlq-origin-offset", "dlq-failed-at")


def dlq_headers(message: Message, error: Exception, failed_at_ms: int) -> list[tuple[str, bytes]]:
    original = [(k, v) for k, v in (message.headers() or []) if k not in ERROR_HEADERS]
    return original + [
        ("dlq-reason", str(error)[:2000].encode()),
        ("dlq-error-class", type(error).__name__.encode()),
        ("dlq-origin-topic", message.topic().encode()),
        ("dlq-origin-partition", str(message.partition()).encode()),
        ("dlq-origin-offset", str(message.offset()).encode()),
        ("dlq-failed-at", str(failed_at_ms).encode()),
    ]


def readable_request_id(message: Message) -> str | None:
    """The key as a requestId, when it is one (a ProvisioningRejected event can then be sent)."""
    key = message.key()
    if not key:
        return None
    try:
        return str(uuid.UUID(key.decode()))
    except (UnicodeDecodeError, ValueError):
        return None
