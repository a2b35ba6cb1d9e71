"""Where the worker may write a command's seed responses (its `replyTo`).

A caller names the topic; the worker writes there inside its transaction, with its own rights.
So before the first reply to a topic the worker checks, once per topic:

- the rule every command was checked against (`ReplyTopicRule`): never the service's own
  topics or an internal one, and only topics matching `PROVISIONING_REPLY_TOPIC_PATTERN`;
- that the topic exists (the worker never creates one on a caller's behalf);
- that its `max.message.bytes` is at least `MIN_MESSAGE_BYTES`. Below the size of a
  transaction marker, the broker cannot even write the marker that aborts the worker's
  transaction, and the worker's transactional id would stay stuck for good (measured: a topic
  with max.message.bytes=40 left `init_transactions` failing with CONCURRENT_TRANSACTIONS).

A topic that refuses a reply anyway (too large for it, or writes denied) aborts one
transaction; the worker remembers the refusal and never writes there again, so the replay after
the rewind goes through without it.
"""

from __future__ import annotations

import logging

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource

from provisioning.topics import ReplyTopicRule

log = logging.getLogger(__name__)

MIN_MESSAGE_BYTES = 512  # a marker's batch is under 100 bytes; a reply is 100 to 1,500
# Topics whose check the worker remembers before it starts over (bounded memory: a caller who
# names endless topics costs lookups, not memory).
REMEMBERED = 10_000
# What a topic answers when it will never take the record. Not timeouts or purges: those say
# nothing about the topic.
REFUSALS = frozenset({
    KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.TOPIC_AUTHORIZATION_FAILED,
    KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError.INVALID_RECORD, KafkaError.POLICY_VIOLATION,
    KafkaError.RECORD_LIST_TOO_LARGE, KafkaError.TOPIC_EXCEPTION,
})


class ReplyTopics:
    def __init__(self, rule: ReplyTopicRule, admin: AdminClient, timeout_s: float = 5.0) -> None:
        self.rule = rule
        self._admin = admin
        self._timeout_s = timeout_s
        self._checked: dict[str, str | None] = {}  # topic -> why not, or None: usable

    def problem(self, topic: str) -> str | None:
        """Why the worker may not write a reply to `topic`, or None when it may."""
        if topic in self._checked:
            return self._checked[topic]
        problem, lasting = self.rule.problem(topic), True
        if problem is None:
            problem, lasting = self._check(topic)
        if lasting:  # a broker that did not answer is asked again next time
            if len(self._checked) >= REMEMBERED:
                self._checked.clear()
            self._checked[topic] = problem
        return problem

    def refused(self, topic: str, error: KafkaError) -> None:
        """A delivery to `topic` failed; a refusal (not a timeout) means: never again."""
        if error.code() in REFUSALS:
            self._checked[topic] = f"it refused an earlier reply ({error.name()})"

    def _check(self, topic: str) -> tuple[str | None, bool]:
        """(why not, or None; whether the answer lasts) from the topic's configuration."""
        resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
        try:
            entries = self._admin.describe_configs(
                [resource], request_timeout=self._timeout_s)[resource].result(self._timeout_s)
        except KafkaException as exc:
            error = exc.args[0]
            if error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                return "the topic does not exist", True
            return f"its configuration cannot be read ({error.name()})", not error.retriable()
        except Exception as exc:  # noqa: BLE001 - a lookup that fails is a topic not to use now
            return f"its configuration cannot be read ({type(exc).__name__})", False
        limit = entries.get("max.message.bytes")
        if limit is not None and limit.value is not None and int(limit.value) < MIN_MESSAGE_BYTES:
            return (f"its max.message.bytes {limit.value} is under {MIN_MESSAGE_BYTES}: the "
                    "broker could not abort a transaction that wrote to it"), True
        return None, True
