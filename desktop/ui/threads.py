"""A registry of the window's QThreads, so tests can prove none is left running."""

from __future__ import annotations

import weakref

from PySide6.QtCore import QThread

_threads: weakref.WeakSet[QThread] = weakref.WeakSet()


def track(thread: QThread) -> None:
    """Remember ``thread`` (weakly) for ``running_threads``."""
    _threads.add(thread)


def running_threads() -> list[QThread]:
    """Tracked QThreads that are still running."""
    alive = []
    for thread in list(_threads):
        try:
            if thread.isRunning():
                alive.append(thread)
        except RuntimeError:  # the C++ object is already gone
            continue
    return alive
