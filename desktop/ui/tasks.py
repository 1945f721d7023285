"""Run a callable on a worker thread and get its result (or exception) on the GUI thread.

Usage::

    runner = TaskRunner(parent=widget)            # create it on the GUI thread
    task = runner.submit(
        save_somewhere, image, path,              # fn(*args, **kwargs) runs on a worker
        on_result=lambda saved: ...,              # called on the GUI thread with its return
        on_error=lambda exc: ...,                 # called on the GUI thread with its exception
    )
    ...
    runner.shutdown(30_000)                       # on close: cancel, wait, drop callbacks

API:

* ``TaskRunner(parent=None)``: a ``QObject``; create and use it on the GUI thread.
* ``submit(fn, *args, on_result=None, on_error=None, name="", **kwargs) -> Task`` starts
  ``fn`` at once on a new ``QThread`` (registered with ``desktop.ui.threads`` so the tests'
  leak guard sees it). ``on_result(value)`` or ``on_error(exception)`` runs later on the
  GUI thread, never inside ``submit``. Without ``on_error`` the exception is logged.
  After ``shutdown`` ``submit`` raises ``RuntimeError``.
* ``Task``: ``cancel()`` (asks the work to stop and drops its callbacks), ``cancelled``,
  ``done`` (its thread finished), ``wait(msecs) -> bool``, ``thread_ident`` (the worker's
  ``threading.get_ident()``, for tests), ``name``.
* ``stop_requested() -> bool``: called *inside* the work, True once its task was
  cancelled (or the runner is shutting down): long work polls it and returns early, e.g.
  ``gallery.sync(should_stop=stop_requested)``.
* ``active() -> int`` (tasks not yet finished), ``wait(msecs) -> bool`` (all finished; keeps
  the event loop out, so callbacks still come afterwards), ``shutdown(msecs=30_000) -> bool``
  (cancels every task, waits up to ``msecs`` for their threads; True when all stopped; safe
  to call twice).
* Signals: ``finished(object task)`` after a task's callback ran (or was dropped);
  ``idle()`` when the last running task finished.

Python work on a worker still shares the GIL with the GUI thread: work that runs long pure
Python loops should release it now and then (I/O, SQLite and image decoding do).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QDeadlineTimer, QObject, QThread, Signal

from desktop.ui import threads

log = logging.getLogger(__name__)
_local = threading.local()


def stop_requested() -> bool:
    """True inside a task's work once that task was cancelled (False outside any task)."""
    task = getattr(_local, "task", None)
    return task is not None and task.cancelled


class Task:
    """One submitted callable and its worker thread (see the module docstring)."""

    def __init__(
        self,
        fn: Callable[..., Any],
        args: tuple,
        kwargs: dict[str, Any],
        on_result: Callable[[Any], Any] | None,
        on_error: Callable[[BaseException], Any] | None,
        name: str,
    ) -> None:
        self.name = name or getattr(fn, "__name__", "task")
        self._fn, self._args, self._kwargs = fn, args, kwargs
        self.on_result, self.on_error = on_result, on_error
        self._cancel = threading.Event()
        self.thread_ident: int | None = None
        self.outcome: tuple[bool, Any] | None = None
        self.thread: _Worker | None = None
        self._finished = False

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    @property
    def done(self) -> bool:
        return self._finished or self.thread is None or self.thread.isFinished()

    def cancel(self) -> None:
        """Ask the work to stop (``stop_requested()``) and drop its callbacks."""
        self._cancel.set()

    def wait(self, msecs: int = 30_000) -> bool:
        """Block until the worker thread finished; True when it did."""
        thread = self.thread
        return thread is None or thread.wait(QDeadlineTimer(max(0, msecs)))

    def _run(self) -> None:
        # On the worker thread.
        self.thread_ident = threading.get_ident()
        _local.task = self
        try:
            self.outcome = (True, self._fn(*self._args, **self._kwargs))
        except BaseException as exc:  # delivered to on_error on the GUI thread
            self.outcome = (False, exc)
        finally:
            _local.task = None
            self._fn = self._args = self._kwargs = None  # type: ignore[assignment]


class _Worker(QThread):
    # No Python signal is emitted on the worker: PySide 6.12 loses a reference to True on
    # each emission from a Qt-made thread (the interpreter aborts once it reaches zero).
    # Qt's own ``finished``, emitted in C++, tells the runner instead.

    def __init__(self, task: Task) -> None:
        super().__init__()
        self.task: Task | None = task
        self.setObjectName(f"task: {task.name}")

    def run(self) -> None:
        task = self.task
        if task is not None:
            threads.lower_priority()
            task._run()


class TaskRunner(QObject):
    """Starts tasks on worker threads and delivers their outcome on its own (GUI) thread."""

    finished = Signal(object)
    idle = Signal()

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._tasks: list[Task] = []
        self._closed = False

    def submit(
        self,
        fn: Callable[..., Any],
        *args: Any,
        on_result: Callable[[Any], Any] | None = None,
        on_error: Callable[[BaseException], Any] | None = None,
        name: str = "",
        **kwargs: Any,
    ) -> Task:
        """Run ``fn(*args, **kwargs)`` on a new worker thread; see the module docstring."""
        if self._closed:
            raise RuntimeError("the task runner is shut down")
        task = Task(fn, args, kwargs, on_result, on_error, name)
        worker = _Worker(task)
        task.thread = worker
        # Emitted on the worker thread to a slot of this object: queued to this thread.
        worker.finished.connect(self._collect)
        threads.track(worker)
        self._tasks.append(task)
        worker.start()
        return task

    def active(self) -> int:
        """Tasks whose outcome has not been delivered yet."""
        return len(self._tasks)

    def tasks(self) -> list[Task]:
        return list(self._tasks)

    def wait(self, msecs: int = 30_000) -> bool:
        """Block until every worker thread finished (callbacks still come via the loop)."""
        deadline = QDeadlineTimer(max(0, msecs))
        return all(task.thread is None or task.thread.wait(deadline) for task in list(self._tasks))

    def shutdown(self, msecs: int = 30_000) -> bool:
        """Cancel every task, wait up to ``msecs`` for their threads; safe to call twice."""
        self._closed = True
        for task in self._tasks:
            task.cancel()
        done = self.wait(msecs)
        for task in list(self._tasks):
            if task.done:
                self._forget(task)
        return done

    def _collect(self) -> None:
        # On the GUI thread: deliver every task whose thread has ended, in submission order.
        for task in [t for t in self._tasks if t.thread is not None and t.thread.isFinished()]:
            self._deliver(task)

    def _deliver(self, task: Task) -> None:
        # On the GUI thread, as the worker thread ends.
        if task not in self._tasks:
            return
        self._forget(task)
        outcome, task.outcome = task.outcome, None
        if outcome is not None and not task.cancelled and not self._closed:
            ok, value = outcome
            if ok:
                if task.on_result is not None:
                    task.on_result(value)
            elif task.on_error is not None:
                task.on_error(value)
            else:
                log.error("background task %s failed", task.name, exc_info=value)
        self.finished.emit(task)
        if not self._tasks:
            self.idle.emit()

    def _forget(self, task: Task) -> None:
        # The worker is owned by Python (no parent): dropping the last reference deletes it,
        # which is safe once its thread has ended.
        self._tasks.remove(task)
        worker, task.thread = task.thread, None
        task._finished = True
        if worker is not None:
            worker.wait()
            worker.task = None
