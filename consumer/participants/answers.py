"""Participants' answers, made safe to record: the one boundary all of them cross.

A participant is outside the service: an HTTP service, a Kafka participant, or code a team
routed a step to. What it says — a failure reason, a step's outputs — goes into events, the
state snapshot, logs and the projection. Whatever it sends, the worker records only text that
every one of those can hold: valid UTF-8 without lone surrogates or NUL, of bounded length.
An output too large to record fails the step for good, with a reason that says so, instead of
failing the transaction that carries everyone's work. An undo's outputs are never recorded
(nothing after it reads them): they are dropped, so nothing it sends beside its outcome can
turn an undo that was done into a failed one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from consumer.participants.base import Outcome, StepOutcome

MAX_REASON_CHARS = 1000
MAX_OUTPUT_ENTRIES = 64
MAX_OUTPUT_NAME_CHARS = 128
# An output value is what a later step or a subscriber needs (an id, an endpoint, a limit),
# a certificate at most; a whole step's outputs stay far below a Kafka record.
MAX_OUTPUT_VALUE_CHARS = 16 * 1024
MAX_OUTPUT_BYTES = 64 * 1024
# No step's deadline is longer (routing caps `deadline_s` at 30 days): a longer wait means
# "never" and fails the step at once, without overflowing a timestamp.
MAX_RETRY_AFTER_MS = 30 * 86_400 * 1000

_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
_NUL = re.compile(r"\x00+")


def clean_text(text: str, limit: int) -> str:
    """`text` as one line of valid, printable text of at most `limit` characters."""
    return _CONTROL.sub(" ", _valid_utf8(text)).strip()[:limit]


def clean_reason(reason: str | None) -> str | None:
    return None if reason is None else clean_text(reason, MAX_REASON_CHARS)


def clean_outcome(outcome: StepOutcome, *, undo: bool = False) -> StepOutcome:
    """The outcome as it may be recorded: reason cleaned, outputs checked and cleaned; an
    undo's (`undo`) outputs dropped."""
    reason = clean_reason(outcome.reason)
    if outcome.outcome is Outcome.TRANSIENT_FAILURE:
        return StepOutcome(outcome.outcome, {}, reason, acted=outcome.acted,
                           retry_after_ms=clean_retry_after(outcome.retry_after_ms))
    if undo or outcome.outcome is not Outcome.SUCCEEDED or not outcome.output:
        return StepOutcome(outcome.outcome, {}, reason, acted=outcome.acted)
    if _plainly_recordable(outcome.output):
        # Ids, names, endpoints: nothing to check further or clean (checking and cleaning
        # each was a tenth of the no-op worker's loop), copied so that the participant cannot
        # change them afterwards.
        return StepOutcome(Outcome.SUCCEEDED, dict(outcome.output), reason)
    problem = output_problem(outcome.output)
    if problem is not None:  # it did the work: what it did is undone with the rest
        return StepOutcome(Outcome.PERMANENT_FAILURE, {}, problem, acted=True)
    output = {_valid_utf8(name): _NUL.sub("", _valid_utf8(value))
              for name, value in outcome.output.items()}
    return StepOutcome(Outcome.SUCCEEDED, output, reason)


def _plainly_recordable(output: Mapping[str, str]) -> bool:
    """Outputs that `output_problem` accepts and cleaning leaves as they are, told by a few
    calls into C instead of a loop over every entry: at most `MAX_OUTPUT_ENTRIES` strings,
    all printable ASCII (no control character, one byte each), names of 1 to
    `MAX_OUTPUT_NAME_CHARS` and values of at most `MAX_OUTPUT_VALUE_CHARS` characters, within
    `MAX_OUTPUT_BYTES` in all. False sends the output through the thorough checks."""
    if len(output) > MAX_OUTPUT_ENTRIES:
        return False
    try:
        names, values = "".join(output), "".join(output.values())  # TypeError: not all str
    except TypeError:
        return False
    text = names + values
    # Every name (or value) is within its limit at once when all of them together are: the
    # lengths one by one only for longer outputs (measuring them took half the time here).
    return (text.isascii() and text.isprintable() and len(text) <= MAX_OUTPUT_BYTES
            and "" not in output  # the names are strings: the only false one is empty
            and (len(names) <= MAX_OUTPUT_NAME_CHARS
                 or max(map(len, output)) <= MAX_OUTPUT_NAME_CHARS)
            and (len(values) <= MAX_OUTPUT_VALUE_CHARS
                 or max(map(len, output.values())) <= MAX_OUTPUT_VALUE_CHARS))


def clean_retry_after(retry_after_ms: object) -> int | None:
    """A participant's wait as a whole number of ms the saga can schedule: no wait for a
    negative one, at most `MAX_RETRY_AFTER_MS` (the saga cuts it to the step's deadline)."""
    if isinstance(retry_after_ms, bool) or not isinstance(retry_after_ms, int | float):
        return None
    if retry_after_ms != retry_after_ms:  # NaN
        return None
    return int(min(max(retry_after_ms, 0), MAX_RETRY_AFTER_MS))


def output_problem(output: Mapping[str, str]) -> str | None:
    """Why a step's outputs cannot be recorded, or None."""
    if len(output) > MAX_OUTPUT_ENTRIES:
        return (f"the participant's output has {len(output)} entries; at most "
                f"{MAX_OUTPUT_ENTRIES} can be recorded")
    size = 0
    for name, value in output.items():
        if not isinstance(name, str) or not isinstance(value, str):
            return "the participant's output is not a map of strings"
        if not name or len(name) > MAX_OUTPUT_NAME_CHARS or _CONTROL.search(name):
            return (f"the participant's output name {clean_text(name, 40)!r} is not 1 to "
                    f"{MAX_OUTPUT_NAME_CHARS} printable characters")
        if len(value) > MAX_OUTPUT_VALUE_CHARS:
            return (f"the participant's output {clean_text(name, 40)!r} is too large to record "
                    f"({len(value)} characters; at most {MAX_OUTPUT_VALUE_CHARS})")
        size += _utf8_length(name) + _utf8_length(value)
    if size > MAX_OUTPUT_BYTES:
        return (f"the participant's output is too large to record ({size} bytes; at most "
                f"{MAX_OUTPUT_BYTES})")
    return None


def _utf8_length(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "replace"))


def _valid_utf8(text: str) -> str:
    # Lone surrogates (valid JSON, e.g. "\ud800", but not encodable) become "?".
    return text.encode("utf-8", "replace").decode("utf-8")
