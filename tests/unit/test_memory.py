"""The daemon's garbage-collector tuning."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from trigger.daemon.memory import THRESHOLDS, settle_heap


@pytest.fixture
def restore_gc() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


@pytest.mark.usefixtures("restore_gc")
def test_settle_heap_freezes_start_up_objects_and_raises_thresholds() -> None:
    gc.unfreeze()
    survivor = [object() for _ in range(100)]
    settle_heap()
    assert gc.get_threshold() == THRESHOLDS
    assert gc.get_freeze_count() >= len(survivor)


@pytest.mark.usefixtures("restore_gc")
def test_cycles_made_after_settling_are_still_collected() -> None:
    settle_heap()

    class Node:
        pass

    node = Node()
    node.self = node  # type: ignore[attr-defined]
    ref = weakref.ref(node)
    del node
    assert ref() is not None  # only the collector can free a cycle
    gc.collect()
    assert ref() is None
