"""Poison commands: kept in the DLQ with the reason, never blocking their partition.

The DLQ record keeps the original key, value and headers, and adds headers that say what went
wrong and where the record came from, so an operator can fix and redrive it. Dead-lettering
must never fail on size (a failed produce would abort the transaction and the worker would read
the same record again, forever): a value over `max_value_bytes` keeps only its first
`max_value_bytes` (`dlq-truncated`, `dlq-original-size` say so), and the key and the original
headers are bounded the same way. The record then always fits under the broker's limit.
"""

from __future__ import annotations

import uuid
from typing import Any

from confluent_kafka import Message

from consumer.participants.answers import clean_text

ERROR_HEADERS = ("dlq-reason", "dlq-error-class", "dlq-origin-topic", "dlq-origin-partition",
                 "dlq-origin-offset", "dlq-failed-at", "dlq-original-size", "dlq-truncated",
                 "dlq-headers-dropped")
MAX_KEY_BYTES = 1024
MAX_ORIGINAL_HEADER_BYTES = 16 * 1024
MAX_REASON_CHARS = 2000


def dead_letter(message: Message, error: Exception, failed_at_ms: int,
                max_value_bytes: int) -> dict[str, Any]:
    """The DLQ record of `message` as `Producer.produce` keyword arguments (same partition)."""
    value = message.value() or b""
    key = message.key()
    kept, dropped = _original_headers(message)
    extra = [
        ("dlq-reason", clean_text(str(error), MAX_REASON_CHARS).encode()),
        ("dlq-error-class", type(error).__name__.encode()),
        ("dlq-origin-topic", message.topic().encode()),
        ("dlq-origin-partition", str(message.partition()).encode()),
        ("dlq-origin-offset", str(message.offset()).encode()),
        ("dlq-failed-at", str(failed_at_ms).encode()),
        ("dlq-original-size", str(len(value)).encode()),
    ]
    if len(value) > max_value_bytes:
        extra.append(("dlq-truncated", b"true"))
    if dropped:
        extra.append(("dlq-headers-dropped", str(dropped).encode()))
    return {"key": key[:MAX_KEY_BYTES] if key else key, "value": value[:max_value_bytes],
            "headers": kept + extra, "partition": message.partition()}


def _original_headers(message: Message) -> tuple[list[tuple[str, bytes]], int]:
    """The original headers (not an earlier dead-lettering's) in order, while they add up to
    at most the budget, and how many were dropped."""
    headers = [(k, v or b"") for k, v in (message.headers() or []) if k not in ERROR_HEADERS]
    kept: list[tuple[str, bytes]] = []
    budget = MAX_ORIGINAL_HEADER_BYTES
    for name, value in headers:
        try:
            budget -= len(name.encode("utf-8")) + len(value)
        except UnicodeEncodeError:  # a name librdkafka could not decode: not ours to copy
            continue
        if budget < 0:
            break
        kept.append((name, value))
    return kept, len(headers) - len(kept)


def readable_request_id(message: Message) -> str | None:
    """The key as a requestId, when it is one (a ProvisioningRejected event can then be sent)."""
    key = message.key()
    if not key or len(key) > 64:
        return None
    try:
        return str(uuid.UUID(key.decode()))
    except (UnicodeDecodeError, ValueError):
        return None
