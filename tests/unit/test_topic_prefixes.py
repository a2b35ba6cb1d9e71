"""The session's topics, found for deletion at its end: those under a prefix it gave out, and
no other (another session's, or one whose name merely starts the same way)."""

from __future__ import annotations

from topic_prefixes import GIVEN_OUT, give_out, of_this_session


def test_only_topics_under_a_given_out_prefix_are_the_sessions() -> None:
    before = list(GIVEN_OUT)
    try:
        GIVEN_OUT.clear()
        assert of_this_session(["dev.ta1.provisioning.commands"]) == []
        give_out("dev.ta1")
        give_out("dev.tb2")
        names = ["dev.ta1.provisioning.commands", "dev.tb2.replies", "dev.ta10.provisioning.state",
                 "dev.tc3.provisioning.events", "dev.ta1", "__consumer_offsets"]
        assert of_this_session(names) == ["dev.ta1.provisioning.commands", "dev.tb2.replies"]
    finally:
        GIVEN_OUT[:] = before
