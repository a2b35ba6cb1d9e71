"""A finished saga is kept as its snapshot's bytes once written, and read back when asked."""

from __future__ import annotations

import dataclasses

from consumer import wire
from consumer.state_store import Parked, StateStore, decode_state
from sagas import SagaState, Status
from schemas.examples import EXAMPLES

EXAMPLE = wire.from_record(SagaState, EXAMPLES["SagaState"])
FINISHED = dataclasses.replace(EXAMPLE, status=Status.COMPLETED, finished_at=1_700_000_000_000)
RUNNING = dataclasses.replace(EXAMPLE, status=Status.IN_PROGRESS, finished_at=None)


def _store_with(state: SagaState) -> StateStore:
    store = StateStore(decode=decode_state)
    store.adopt(0, {})
    store.put(0, state)
    return store


def test_a_finished_saga_is_kept_encoded_and_reads_back_equal() -> None:
    store = _store_with(FINISHED)
    store.park(0, FINISHED, wire.encode(FINISHED))
    kept = next(store.states(0))
    assert isinstance(kept, Parked)
    assert kept.finished_at == 1_700_000_000_000
    assert store.get(0, FINISHED.request_id) == FINISHED
    assert store.in_flight == 0


def test_a_running_saga_stays_as_it_is() -> None:
    store = _store_with(RUNNING)
    store.park(0, RUNNING, wire.encode(RUNNING))
    assert next(store.states(0)) is RUNNING
    assert store.in_flight == 1


def test_a_state_that_is_no_longer_the_latest_is_not_parked_over_the_newer_one() -> None:
    store = _store_with(FINISHED)
    newer = dataclasses.replace(FINISHED, sequence=FINISHED.sequence + 1)
    store.put(0, newer)
    store.park(0, FINISHED, wire.encode(FINISHED))
    assert next(store.states(0)) is newer


def test_nothing_is_parked_in_a_partition_no_longer_owned() -> None:
    store = _store_with(FINISHED)
    store.drop(0)
    store.park(0, FINISHED, wire.encode(FINISHED))
    assert not store.owns(0)


def test_a_parked_saga_is_told_apart_without_decoding_it() -> None:
    store = StateStore(decode=lambda value: (_ for _ in ()).throw(AssertionError("decoded")))
    store.adopt(0, {FINISHED.request_id: Parked(b"never decoded", 1)})
    assert store.parked(0, FINISHED.request_id)
    assert not store.parked(0, "unknown")
