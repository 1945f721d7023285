"""Python's cyclic garbage collector, run when the user cannot feel it.

A full (generation 2) collection walks every object Python tracks. With the window, the
gallery and their modules loaded that took 32 ms on the GUI thread in the gallery scroll
benchmark (105,000 objects) and was the one 41 ms stall of the run; with torch and a model
loaded there are many more objects, and a collection that starts on a worker thread holds
the GIL, so it stalls the GUI thread just as long.

``IdleCollector`` turns automatic collection off and runs it from a GUI-thread timer: the
young generations whenever they are due (about a millisecond each), the full one only after
the user has not scrolled, zoomed or panned for ``idle_s`` seconds, or once it has waited
``max_defer_s``. The objects alive when it starts (modules, classes, the window) are frozen
(``gc.freeze``), so full collections skip them. Garbage without cycles never waits for any
of this: reference counting frees it at once.

Widgets that scroll or zoom call ``note_activity()``; it only stores a time.
"""

from __future__ import annotations

import gc
import time

from PySide6.QtCore import QObject, QTimer

#: When the user last scrolled, zoomed or panned (``time.monotonic``).
_last_activity = 0.0


def note_activity() -> None:
    """Say that the user is scrolling or zooming now: a full collection waits."""
    global _last_activity
    _last_activity = time.monotonic()


def idle_for() -> float:
    """Seconds since the last ``note_activity``."""
    return time.monotonic() - _last_activity


class IdleCollector(QObject):
    """Runs the garbage collector from the event loop; ``start`` it once the window shows."""

    def __init__(
        self,
        interval_ms: int = 100,
        idle_s: float = 1.0,
        max_defer_s: float = 30.0,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.idle_s = idle_s
        self.max_defer_s = max_defer_s
        #: Collections run, by generation (for tests and the benchmark).
        self.collections = [0, 0, 0]
        self._due_since: float | None = None
        self._was_enabled = gc.isenabled()
        self._running = False
        self._timer = QTimer(self)
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self.tick)

    @property
    def running(self) -> bool:
        return self._running

    def start(self) -> None:
        """Freeze what is alive now and take over from the automatic collector."""
        if self._running:
            return
        self._running = True
        self._was_enabled = gc.isenabled()
        gc.collect()
        gc.freeze()
        gc.disable()
        self._timer.start()

    def stop(self) -> None:
        """Give collection back to Python (as it was before ``start``)."""
        if not self._running:
            return
        self._running = False
        self._timer.stop()
        gc.unfreeze()
        if self._was_enabled:
            gc.enable()

    def tick(self) -> int | None:
        """Run the collection that is due now, if any; returns its generation."""
        counts, thresholds = gc.get_count(), gc.get_threshold()
        generation: int | None = None
        if counts[2] >= thresholds[2]:
            now = time.monotonic()
            if self._due_since is None:
                self._due_since = now
            if idle_for() >= self.idle_s or now - self._due_since >= self.max_defer_s:
                generation = 2
        if generation is None and counts[1] >= thresholds[1]:
            generation = 1
        if generation is None and counts[0] >= thresholds[0]:
            generation = 0
        if generation is None:
            return None
        gc.collect(generation)
        self.collections[generation] += 1
        if generation == 2:
            self._due_since = None
        return generation
