"""A registry of the window's QThreads, so tests can prove none is left running; and the
lower scheduling priority of the threads that work behind the GUI."""

from __future__ import annotations

import os
import sys
import threading
import weakref

from PySide6.QtCore import QThread

_threads: weakref.WeakSet[QThread] = weakref.WeakSet()
_lowered = threading.local()

#: The ``nice`` value of background threads on Linux (0 is the GUI thread's).
BACKGROUND_NICE = 10


def lower_priority() -> None:
    """Let the GUI thread go first when this (background) thread and it want a core.

    Generation (the worker and the compute threads torch starts from it), thumbnail
    decoding, index reads and image loading keep every core busy; at equal priority the
    kernel shares the cores between them and the GUI thread, which then waits whole time
    slices in the middle of a paint (a 24 ms day header while a search result came in,
    ``bench.gallery_ui_bench``). A lower priority costs the work
    nothing when the GUI thread is idle. On Linux a thread's ``nice`` is its own (Qt's
    ``LowPriority`` does nothing there); elsewhere Qt's priority does the same. Cheap to
    call again: each thread is lowered once.
    """
    if getattr(_lowered, "done", False):
        return
    _lowered.done = True
    QThread.currentThread().setPriority(QThread.Priority.LowPriority)
    if sys.platform.startswith("linux"):
        tid = threading.get_native_id()
        try:
            if os.getpriority(os.PRIO_PROCESS, tid) < BACKGROUND_NICE:
                os.setpriority(os.PRIO_PROCESS, tid, BACKGROUND_NICE)
        except OSError:  # a sandbox that forbids it: the thread keeps its priority
            pass


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
