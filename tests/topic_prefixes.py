"""The topic prefixes this test session gave out, so that its topics can be deleted at its end:
kept, the topics of a few `make test` runs on one dev broker reach its limit of open files
(each partition is several files), and then every test fails."""

from __future__ import annotations

from collections.abc import Iterable

GIVEN_OUT: list[str] = []


def give_out(prefix: str) -> str:
    GIVEN_OUT.append(prefix)
    return prefix


def of_this_session(names: Iterable[str]) -> list[str]:
    """The topics among `names` under a prefix given out in this session."""
    prefixes = tuple(f"{prefix}." for prefix in GIVEN_OUT)
    return sorted(name for name in names if prefixes and name.startswith(prefixes))
