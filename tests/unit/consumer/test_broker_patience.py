"""A broker that cannot be reached for a moment (restarting) is waited for, not a reason to
stop: librdkafka's "cannot reach it" errors are transient, and calls outside the poll loop
retry them."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException

from consumer.checkpoint import ProducerFenced
from consumer.kafka_clients import init_transactions, while_broker_unavailable
from provisioning.errors import ConfigurationError, ProvisioningError, TransientError
from provisioning.kafka_access import KafkaAccessDenied
from provisioning.settings import Settings
from provisioning.topics import _wrap


@pytest.mark.parametrize("code", [KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN,
                                  KafkaError._TIMED_OUT])
def test_an_unreachable_broker_is_a_transient_error(code: int) -> None:
    wrapped = _wrap(KafkaException(KafkaError(code)), "listing topics")

    assert isinstance(wrapped, TransientError)
    assert str(wrapped).startswith("listing topics: ")


def test_a_wrong_request_stays_a_configuration_error() -> None:
    wrapped = _wrap(KafkaException(KafkaError(KafkaError.INVALID_PARTITIONS)), "creating topics")

    assert isinstance(wrapped, ConfigurationError)


def test_transient_errors_are_retried_until_the_broker_answers() -> None:
    answers = iter([TransientError("listing topics: broker transport failure"),
                    KafkaException(KafkaError(KafkaError._TRANSPORT)), "counts"])

    def operation() -> str:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert while_broker_unavailable(operation, first_wait_s=0.01, max_wait_s=0.01) == "counts"


def test_a_configuration_error_is_not_retried() -> None:
    calls = []

    def operation() -> None:
        calls.append(1)
        raise ConfigurationError("co-partitioned topics must have the same partition count")

    with pytest.raises(ConfigurationError):
        while_broker_unavailable(operation, first_wait_s=0.01, max_wait_s=0.01)
    assert len(calls) == 1


class Registration:
    """A producer's `init_transactions` answering from a script: errors raised, else done."""

    def __init__(self, *errors: KafkaError) -> None:
        self.errors = list(errors)
        self.calls = 0

    def init_transactions(self, timeout: float) -> None:
        self.calls += 1
        if self.errors:
            raise KafkaException(self.errors.pop(0))


def test_a_worker_started_while_the_broker_restarts_waits_for_it() -> None:
    # librdkafka's own words while a restarting broker's listener is closed.
    producer = Registration(KafkaError(KafkaError._TIMED_OUT, "retry call to resume",
                                       retriable=True))
    init_transactions(producer, Settings(), "worker-w0")  # type: ignore[arg-type]
    assert producer.calls == 2


def test_a_broker_that_stays_away_ends_the_wait_with_a_transient_error() -> None:
    producer = Registration(*[KafkaError(KafkaError._TRANSPORT)] * 10)
    with pytest.raises(TransientError, match="initialising transactions"):
        init_transactions(producer, Settings(), "worker-w0", wait_s=0.2)  # type: ignore[arg-type]
    assert producer.calls == 2


@pytest.mark.parametrize("error, raised", [
    (KafkaError(KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED), KafkaAccessDenied),
    (KafkaError(KafkaError.INVALID_TRANSACTION_TIMEOUT, fatal=True), ProvisioningError),
])
def test_a_refusal_or_a_fatal_error_is_raised_at_once(error: KafkaError,
                                                      raised: type[Exception]) -> None:
    producer = Registration(error)
    with pytest.raises(raised) as caught:
        init_transactions(producer, Settings(), "worker-w0")  # type: ignore[arg-type]
    assert not isinstance(caught.value, TransientError)
    assert producer.calls == 1


def test_a_fencing_while_registering_is_a_fencing_not_a_fatal_error() -> None:
    """Two processes with one transactional id: the renewed producer of one is fenced by the
    other's newer one. The worker counts that as a fencing and stops after three in a minute
    (saying another process has its id), instead of ending on a fatal error
    (test_worker_takeover's twins met it)."""
    producer = Registration(KafkaError(KafkaError._FENCED, "Producer fenced by newer instance",
                                       fatal=True))
    with pytest.raises(ProducerFenced, match="initialising transactions"):
        init_transactions(producer, Settings(), "worker-w0")  # type: ignore[arg-type]
    assert producer.calls == 1
