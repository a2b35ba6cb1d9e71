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
