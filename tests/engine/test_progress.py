"""The Qt-free progress and cancellation interface between the engine and front ends."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import threading
import time

import pytest

from desktop.engine import paths
from desktop.engine.errors import Cancelled, SandstormError
from desktop.engine.progress import Progress, RecordingProgress, StepUpdate


def test_base_progress_records_nothing_and_never_cancels():
    progress = Progress(job_id="job-7")
    assert progress.job_id == "job-7" and progress.previews
    assert not progress.cancelled
    progress.set_status("Loading model…")
    progress.set_progress(StepUpdate("job-7", 1, 3, 0.1, None))
    progress.warn("prompt truncated")
    progress.check_cancelled()  # does not raise
    assert progress.started <= time.perf_counter()


def test_cancel_makes_check_cancelled_raise_a_cancelled_error():
    progress = Progress()
    progress.cancel()
    assert progress.cancelled
    with pytest.raises(Cancelled) as caught:
        progress.check_cancelled()
    assert isinstance(caught.value, SandstormError)
    assert str(caught.value) == "Cancelled."
    progress.cancel()  # cancelling twice is harmless
    assert progress.cancelled


def test_a_shared_event_cancels_from_another_thread():
    event = threading.Event()
    progress = Progress(job_id="j", cancel_event=event)
    assert progress.cancel_event is event
    stopped = threading.Event()

    def worker() -> None:
        try:
            while True:
                progress.check_cancelled()
                time.sleep(0.001)
        except Cancelled:
            stopped.set()

    thread = threading.Thread(target=worker)
    thread.start()
    event.set()  # what the GUI thread does while the worker is inside a pipeline call
    thread.join(timeout=5)
    assert stopped.is_set() and not thread.is_alive()


def test_each_progress_gets_its_own_event():
    first, second = Progress(), Progress()
    first.cancel()
    assert first.cancelled and not second.cancelled


def test_recording_progress_keeps_everything_in_order():
    progress = RecordingProgress(job_id="job-1", previews=False)
    assert progress.job_id == "job-1" and not progress.previews
    updates = [StepUpdate("job-1", step, 3, step * 0.5, None) for step in (1, 2, 3)]
    progress.set_status("Loading model…")
    for update in updates:
        progress.set_progress(update)
    progress.set_status("Saving…")
    progress.warn("the prompt was truncated")
    assert progress.statuses == ["Loading model…", "Saving…"]
    assert progress.updates == updates
    assert progress.warnings == ["the prompt was truncated"]
    progress.cancel()
    with pytest.raises(Cancelled):
        progress.check_cancelled()


def test_step_updates_are_immutable_values():
    update = StepUpdate("job", 2, 10, 1.5, None)
    assert update == StepUpdate("job", 2, 10, 1.5, None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        update.step = 3  # type: ignore[misc]


def test_progress_is_qt_and_torch_free():
    code = (
        "import sys, desktop.engine.progress; "
        "print(any(m.startswith(('PySide6', 'torch', 'PIL')) for m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=paths.PROJECT_ROOT,
    ).stdout.strip()
    assert out == "False"
