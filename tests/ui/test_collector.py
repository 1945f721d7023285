"""The garbage collector runs from the event loop, and a full collection waits for the user
to stop scrolling (or for ``max_defer_s``)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from desktop.ui import collector as collector_module
from desktop.ui.collector import IdleCollector, idle_for, note_activity


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def _cycle() -> weakref.ref:
    """A pair of objects that only the cyclic collector can free."""
    a, b = Node(), Node()
    a.other, b.other = b, a
    return weakref.ref(a)


@pytest.fixture
def collector(qtbot) -> Iterator[IdleCollector]:
    enabled, thresholds = gc.isenabled(), gc.get_threshold()
    made = IdleCollector(interval_ms=10, idle_s=0.3, max_defer_s=60.0)
    try:
        yield made
    finally:
        made.stop()
        gc.set_threshold(*thresholds)
        assert gc.isenabled() == enabled and gc.get_freeze_count() == 0


def test_start_takes_over_and_stop_gives_collection_back(collector: IdleCollector):
    assert gc.isenabled()
    collector.start()
    assert collector.running and not gc.isenabled()
    assert gc.get_freeze_count() > 0  # what lived at start is skipped by full collections
    collector.stop()
    assert not collector.running and gc.isenabled() and gc.get_freeze_count() == 0


def test_a_cycle_is_freed_by_the_timer(qtbot, collector: IdleCollector):
    collector.start()
    ref = _cycle()
    assert ref() is not None
    gc.set_threshold(1, 1, 1)  # every generation due at once
    qtbot.waitUntil(lambda: ref() is None, timeout=5_000)
    assert sum(collector.collections) > 0


def test_a_full_collection_waits_while_the_user_scrolls(qtbot, collector: IdleCollector):
    collector.start()
    gc.set_threshold(1, 1, 1)
    note_activity()
    assert idle_for() < collector.idle_s
    # Scrolling now: the young generations run, the full one is put off.
    assert collector.tick() in (0, 1)
    assert collector.collections[2] == 0
    # Once the user stops for idle_s, it runs.
    qtbot.waitUntil(lambda: collector.collections[2] > 0, timeout=5_000)
    assert idle_for() >= collector.idle_s


def test_a_full_collection_put_off_too_long_runs_anyway(
    qtbot, collector: IdleCollector, monkeypatch: pytest.MonkeyPatch
):
    collector.max_defer_s = 0.05
    collector.start()
    gc.set_threshold(1, 1, 1)
    monkeypatch.setattr(collector_module, "idle_for", lambda: 0.0)  # scrolling without end
    qtbot.waitUntil(lambda: collector.collections[2] > 0, timeout=5_000)
