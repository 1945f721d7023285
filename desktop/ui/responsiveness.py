"""Measure how responsive the GUI thread stays: a fast heartbeat timer and its worst gap.

Used by the tests and the benchmarks: start a ``Heartbeat``, run the work, read
``max_gap`` (seconds between two ticks; 0.01 means perfectly smooth at a 10 ms beat).
"""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import QElapsedTimer, QEventLoop, QObject, Qt, QTimer
from PySide6.QtWidgets import QApplication


class Heartbeat(QObject):
    """A precise timer on the current thread that records the largest gap between ticks."""

    def __init__(self, interval_ms: int = 10, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._timer = QTimer(self)
        self._timer.setTimerType(Qt.TimerType.PreciseTimer)
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self._tick)
        self._clock = QElapsedTimer()
        self._last = 0
        self.max_gap = 0.0
        self.ticks = 0

    def start(self) -> None:
        self.max_gap = 0.0
        self.ticks = 0
        self._clock.start()
        self._last = self._clock.nsecsElapsed()
        self._timer.start()

    def stop(self) -> float:
        """Stop and return the largest gap in seconds (including the time since the last tick)."""
        self._tick()
        self._timer.stop()
        return self.max_gap

    def _tick(self) -> None:
        now = self._clock.nsecsElapsed()
        self.max_gap = max(self.max_gap, (now - self._last) / 1e9)
        self._last = now
        self.ticks += 1


def measure_max_gap(
    start: Callable[[], None],
    done: Callable[[], bool],
    timeout: float = 120.0,
    interval_ms: int = 10,
) -> float:
    """Run ``start()``, spin the event loop until ``done()`` and return the heartbeat's worst gap.

    Raises ``TimeoutError`` when ``done()`` stays false for ``timeout`` seconds.
    """
    if QApplication.instance() is None:
        raise RuntimeError("measure_max_gap needs a running QApplication.")
    beat = Heartbeat(interval_ms)
    loop = QEventLoop()
    poll = QTimer()
    poll.setInterval(5)
    poll.timeout.connect(lambda: loop.quit() if done() else None)
    deadline = QTimer()
    deadline.setSingleShot(True)
    deadline.timeout.connect(loop.quit)
    beat.start()
    start()
    try:
        if not done():
            poll.start()
            deadline.start(int(timeout * 1000))
            loop.exec()
        finished = done()
    finally:
        poll.stop()
        deadline.stop()
        gap = beat.stop()
        beat.deleteLater()
    if not finished:
        raise TimeoutError(f"the work did not finish within {timeout:g} s")
    return gap
