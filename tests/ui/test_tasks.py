"""The background task helper: work on a worker, outcome on the GUI thread, clean shutdown."""

from __future__ import annotations

import logging
import os
import sys
import threading

import pytest

from desktop.ui import threads
from desktop.ui.tasks import TaskRunner, stop_requested

WAIT = 10_000


@pytest.fixture
def runner(qtbot):
    made = TaskRunner()
    yield made
    assert made.shutdown(WAIT)


def test_result_arrives_on_the_gui_thread(qtbot, runner):
    ran_on: list[int] = []
    got: list[tuple[int, object]] = []

    def work(a, b=0):
        ran_on.append(threading.get_ident())
        return a + b

    with qtbot.waitSignal(runner.idle, timeout=WAIT):
        task = runner.submit(
            work, 2, b=3, on_result=lambda v: got.append((threading.get_ident(), v))
        )
        assert got == []  # never inside submit
    gui = threading.get_ident()
    assert ran_on == [task.thread_ident] and ran_on[0] != gui
    assert got == [(gui, 5)]
    assert runner.active() == 0 and task.done


def test_exception_goes_to_on_error(qtbot, runner):
    errors: list[BaseException] = []

    def fail():
        raise ValueError("no luck")

    with qtbot.waitSignal(runner.finished, timeout=WAIT):
        runner.submit(fail, on_result=lambda _v: pytest.fail("no result"), on_error=errors.append)
    assert [str(e) for e in errors] == ["no luck"]


def test_exception_without_on_error_is_logged(qtbot, runner, caplog):
    def fail():
        raise RuntimeError("logged")

    with (
        caplog.at_level(logging.ERROR, logger="desktop.ui.tasks"),
        qtbot.waitSignal(runner.finished, timeout=WAIT),
    ):
        runner.submit(fail, name="failing")
    assert "failing" in caplog.text and "logged" in caplog.text


def test_cancel_stops_the_work_and_drops_the_callback(qtbot, runner):
    started = threading.Event()
    saw_stop: list[bool] = []

    def work():
        started.set()
        while not stop_requested():
            threading.Event().wait(0.005)
        saw_stop.append(True)
        return "late"

    got: list[object] = []
    task = runner.submit(work, on_result=got.append)
    assert started.wait(5)
    assert task in runner.tasks()
    assert any(t.objectName() == "task: work" for t in threads.running_threads())
    with qtbot.waitSignal(runner.finished, timeout=WAIT):
        task.cancel()
    assert saw_stop == [True] and got == [] and task.cancelled
    assert not stop_requested()  # outside a task


def test_shutdown_waits_for_running_work_and_is_safe_twice(qtbot):
    runner = TaskRunner()
    release = threading.Event()
    finished: list[bool] = []

    def work():
        while not stop_requested() and not release.is_set():
            threading.Event().wait(0.005)
        finished.append(True)

    runner.submit(work, on_result=lambda _v: pytest.fail("dropped at shutdown"))
    assert runner.shutdown(WAIT)
    assert finished == [True]
    assert threads.running_threads() == []
    assert runner.shutdown()
    with pytest.raises(RuntimeError, match="shut down"):
        runner.submit(print)


def test_many_tasks_each_deliver_once(qtbot, runner):
    got: list[int] = []
    for n in range(8):
        runner.submit(lambda n=n: n * n, on_result=got.append)
    qtbot.waitUntil(lambda: runner.active() == 0, timeout=WAIT)
    assert sorted(got) == [n * n for n in range(8)]
    assert runner.wait(0)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a thread's nice is Linux's")
def test_work_runs_below_the_gui_thread_priority(qtbot, runner):
    gui_nice = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    seen: list[int] = []
    with qtbot.waitSignal(runner.idle, timeout=WAIT):
        runner.submit(
            lambda: os.getpriority(os.PRIO_PROCESS, threading.get_native_id()),
            on_result=seen.append,
        )
    assert seen == [max(gui_nice, threads.BACKGROUND_NICE)]
    # The GUI thread keeps its own.
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == gui_nice
