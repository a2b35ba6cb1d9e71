"""How often, and how long apart, a failing step (or compensation) is tried again."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff for transient failures.

    The seed's default: 3 retries (4 attempts in all), waiting 100 ms, then 200 ms, then 400 ms.
    Only transient failures are retried; a permanent failure ends the step at once.
    """

    max_retries: int = 3
    initial_backoff_ms: int = 100
    multiplier: float = 2.0
    max_backoff_ms: int = 30_000

    def __post_init__(self) -> None:
        if self.max_retries < 0 or self.initial_backoff_ms < 0 or self.max_backoff_ms < 0:
            raise ValueError(f"retry policy values must not be negative: {self}")
        if self.multiplier < 1:
            raise ValueError(f"a backoff multiplier below 1 would shrink the wait: {self}")

    def allows_retry_after(self, attempt: int) -> bool:
        """May attempt `attempt` (from 1) be followed by another one?"""
        return attempt <= self.max_retries

    def backoff_ms(self, attempt: int) -> int:
        """The wait after failed attempt `attempt` (from 1) before the next attempt starts."""
        if attempt < 1:
            raise ValueError(f"attempts count from 1, got {attempt}")
        wait = self.initial_backoff_ms * self.multiplier ** (attempt - 1)
        return int(min(wait, self.max_backoff_ms))


NO_RETRY = RetryPolicy(max_retries=0)
