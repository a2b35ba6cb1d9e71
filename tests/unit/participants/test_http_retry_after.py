"""Reading `Retry-After` (RFC 9110 section 10.2.3) and carrying it across the answers boundary."""

from __future__ import annotations

import time
from email.utils import formatdate

import httpx
import pytest

from consumer.participants.answers import MAX_RETRY_AFTER_MS, clean_outcome
from consumer.participants.base import Outcome, StepOutcome
from consumer.participants.http import TRACEPARENT, retry_after_ms


def _answer(value: str | None) -> httpx.Response:
    headers = {} if value is None else {"Retry-After": value.encode()}  # as on the wire
    return httpx.Response(429, headers=headers)


@pytest.mark.parametrize("value, expected", [
    ("1", 1_000),
    ("0", 0),
    (" 120 ", 120_000),
    ("9" * 40, 10**15),  # "never", cheaply; the boundary cuts it further
    (None, None),
    ("", None),
    ("-5", None),
    ("1.5", None),
    ("soon", None),
    ("\u0661", None),  # an Arabic-Indic digit is not a delta-seconds digit
])
def test_delta_seconds(value: str | None, expected: int | None) -> None:
    assert retry_after_ms(_answer(value)) == expected


def test_an_http_date_is_the_wait_until_then() -> None:
    in_ten_s = formatdate(time.time() + 10, usegmt=True)  # e.g. "Wed, 21 Oct 2015 07:28:00 GMT"
    wait = retry_after_ms(_answer(in_ten_s))
    assert wait is not None and 8_000 <= wait <= 10_000  # the format has whole seconds
    assert retry_after_ms(_answer("Wed, 21 Oct 2015 07:28:00 GMT")) == 0  # past: no wait
    assert retry_after_ms(_answer("Sunday, 06-Nov-94 08:49:37 GMT")) == 0  # obsolete RFC 850


@pytest.mark.parametrize("wait, expected", [
    (1_000, 1_000), (0, 0), (-3, 0), (10**15, MAX_RETRY_AFTER_MS), (None, None),
    (float("nan"), None), (float("inf"), MAX_RETRY_AFTER_MS), (True, None), ("1000", None),
])
def test_the_boundary_bounds_the_wait_of_a_transient_failure(wait: object,
                                                             expected: int | None) -> None:
    outcome = StepOutcome(Outcome.TRANSIENT_FAILURE, {}, "busy", retry_after_ms=wait)  # type: ignore[arg-type]
    assert clean_outcome(outcome).retry_after_ms == expected


def test_the_boundary_keeps_a_wait_only_on_a_transient_failure() -> None:
    assert clean_outcome(StepOutcome.transient("busy", 2_000)).retry_after_ms == 2_000
    refused = StepOutcome(Outcome.PERMANENT_FAILURE, {}, "no", retry_after_ms=2_000)
    assert clean_outcome(refused).retry_after_ms is None
    done = StepOutcome(Outcome.SUCCEEDED, {"a": "b"}, retry_after_ms=2_000)
    assert clean_outcome(done).retry_after_ms is None


@pytest.mark.parametrize("value, valid", [
    ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", True),
    ("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", True),
    ("00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01", False),  # uppercase
    ("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", False),  # version ff
    ("00-00000000000000000000000000000000-00f067aa0ba902b7-01", False),  # zero trace id
    ("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", False),  # zero parent id
    ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\nX-Evil: 1", False),
    ("garbage", False),
])
def test_only_a_well_formed_traceparent_is_passed_on(value: str, valid: bool) -> None:
    assert bool(TRACEPARENT.match(value)) is valid
