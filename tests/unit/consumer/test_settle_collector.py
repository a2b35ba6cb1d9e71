"""The worker's process tunes Python's collector before its loop starts."""

from __future__ import annotations

import gc

from consumer.main import YOUNG_COLLECTION_EVERY, settle_collector


def test_start_up_objects_are_frozen_and_the_young_generation_is_collected_less_often() -> None:
    thresholds = gc.get_threshold()
    try:
        settle_collector()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (YOUNG_COLLECTION_EVERY, *thresholds[1:])
        assert thresholds[0] < YOUNG_COLLECTION_EVERY
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)
