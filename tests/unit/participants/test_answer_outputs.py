"""A participant's outputs as they are recorded: valid UTF-8 without lone surrogates or NUL,
unchanged when they already are (the module docstring of consumer/participants/answers.py)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.participants.answers import clean_outcome
from consumer.participants.base import Outcome, StepOutcome

# Any code point: lone surrogates and NUL among them.
TEXT = st.text(st.characters(codec="utf-8") | st.characters(categories=["Cs"])
               | st.just("\x00"), max_size=20)
NAME = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7e) | st.characters(
    categories=["L", "N", "Cs"]), min_size=1, max_size=20)


def _recordable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\x00" not in text


@settings(max_examples=300)
@given(st.dictionaries(NAME, TEXT, max_size=8))
def test_recorded_outputs_are_valid_text_and_clean_ones_are_kept(output: dict[str, str]) -> None:
    cleaned = clean_outcome(StepOutcome.succeeded(**output))
    assert cleaned.outcome is Outcome.SUCCEEDED
    assert all(_recordable(k) and _recordable(v) for k, v in cleaned.output.items())
    for name, value in output.items():
        if _recordable(name) and _recordable(value):
            assert cleaned.output[name] == value
    assert len(cleaned.output) <= len(output)


def test_a_printable_ascii_output_is_recorded_as_given_and_not_shared() -> None:
    given_output = {"tenantId": "t-1", "endpoint": "https://db.example.com:5432/x?a=b"}
    cleaned = clean_outcome(StepOutcome.succeeded(**given_output))
    assert cleaned.output == given_output
    given_output["tenantId"] = "changed later"
    assert cleaned.output["tenantId"] == "t-1"


def test_nul_and_lone_surrogates_are_taken_out_of_an_output() -> None:
    cleaned = clean_outcome(StepOutcome.succeeded(key="a\x00b\ud800c"))
    assert cleaned.output == {"key": "ab?c"}


UNRECORDABLE_OUTPUTS = [{"notes": "x" * 950_000}, {"k\x00": "v"},
                        {f"o{i}": "v" for i in range(100)}]


def test_an_undo_that_was_done_stays_done_whatever_outputs_it_sends() -> None:
    # An undo's outputs are never recorded: dropped, the undo is not failed for them.
    for output in UNRECORDABLE_OUTPUTS:
        cleaned = clean_outcome(StepOutcome.succeeded(**output), undo=True)
        assert (cleaned.outcome, cleaned.output) == (Outcome.SUCCEEDED, {})
    refused = clean_outcome(StepOutcome(Outcome.PERMANENT_FAILURE, {"notes": "x" * 950_000},
                                        "no \ud800 undo"), undo=True)
    assert (refused.outcome, refused.output, refused.reason) == (
        Outcome.PERMANENT_FAILURE, {}, "no ? undo")


def test_a_step_that_sends_an_unrecordable_output_fails_for_good_having_acted() -> None:
    for output in UNRECORDABLE_OUTPUTS:
        cleaned = clean_outcome(StepOutcome.succeeded(**output))
        assert cleaned.outcome is Outcome.PERMANENT_FAILURE
        assert cleaned.acted and cleaned.output == {}


# --- the limits, at their edges (the constants of consumer/participants/answers.py) -------------


def _recorded(**output: str) -> StepOutcome:
    return clean_outcome(StepOutcome.succeeded(**output))


def test_outputs_at_the_limits_are_recorded_and_one_past_them_fail_the_step() -> None:
    at_limits = [{"n" * 128: "v"}, {"k": "v" * 16_384},
                 {f"o{i:02}": "v" for i in range(64)},
                 {f"k{i}": "v" * (16_384 - 2) for i in range(4)}]  # 65,536 bytes in all
    past_limits = [({"n" * 129: "v"}, "is not 1 to 128 printable characters"),
                   ({"k": "v" * 16_385}, "too large to record (16385 characters"),
                   ({f"o{i:02}": "v" for i in range(65)}, "has 65 entries"),
                   ({f"k{i}": "v" * (16_384 - 2) for i in range(4)} | {"x": "y"},
                    "too large to record (65538 bytes")]
    for output in at_limits:
        recorded = _recorded(**output)
        assert (recorded.outcome, recorded.output) == (Outcome.SUCCEEDED, output)
    for output, reason in past_limits:
        recorded = _recorded(**output)
        assert recorded.outcome is Outcome.PERMANENT_FAILURE and recorded.acted
        assert reason in (recorded.reason or ""), recorded.reason


def test_an_output_with_a_control_character_in_a_name_or_an_empty_name_fails_the_step() -> None:
    for output in ({"a\tb": "v"}, {"a\x7fb": "v"}, {"": "v"}):
        recorded = clean_outcome(StepOutcome(Outcome.SUCCEEDED, output, None))
        assert recorded.outcome is Outcome.PERMANENT_FAILURE, output


def test_values_with_control_characters_or_non_ascii_text_are_recorded_cleaned() -> None:
    recorded = _recorded(note="line one\nline two\ttab", city="Zürich", nul="a\x00b")
    assert recorded.outcome is Outcome.SUCCEEDED
    assert recorded.output == {"note": "line one\nline two\ttab", "city": "Zürich", "nul": "ab"}


def test_an_output_that_is_not_a_map_of_strings_fails_the_step() -> None:
    for output in ({"n": 5}, {"n": None}, {3: "v"}, {"n": b"bytes"}):
        recorded = clean_outcome(StepOutcome(Outcome.SUCCEEDED, output, None))  # type: ignore[arg-type]
        assert recorded.outcome is Outcome.PERMANENT_FAILURE
        assert "not a map of strings" in (recorded.reason or ""), output


# Printable ASCII mostly, with the characters and lengths that sit at the checks' edges.
EDGY_TEXT = st.one_of(
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7e), max_size=12),
    st.text(st.sampled_from(["a", " ", "\t", "\x7f", "\x00", "é", "\ud800", "\u2028"]),
            max_size=6),
    st.integers(16_380, 16_390).map(lambda n: "v" * n))


@settings(max_examples=400)
@given(st.dictionaries(EDGY_TEXT.filter(lambda t: len(t) < 200) | st.integers(126, 130).map(
    lambda n: "n" * n), EDGY_TEXT, max_size=6))
def test_a_recorded_output_is_what_the_thorough_checks_say(output: dict[str, str]) -> None:
    """Whatever path an output takes, a step succeeds exactly when `output_problem` finds
    nothing, and then records the output cleaned of NUL and lone surrogates only."""
    from consumer.participants.answers import output_problem

    recorded = clean_outcome(StepOutcome(Outcome.SUCCEEDED, output, None))
    problem = output_problem(output) if output else None
    if problem is not None:
        assert (recorded.outcome, recorded.reason) == (Outcome.PERMANENT_FAILURE, problem)
        return
    assert recorded.outcome is Outcome.SUCCEEDED
    cleaned = {k.encode("utf-8", "replace").decode(): v.encode("utf-8", "replace").decode()
               .replace("\x00", "") for k, v in output.items()}
    assert recorded.output == cleaned
