"""SIGKILL the real app while it runs one job with three waiting, then launch it again."""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from desktop.engine.settings import load_settings, save_settings
from desktop.ui.main_window import MainWindow

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL (POSIX)"),
]

# The child opens the window on the saved settings, queues four jobs (the first one long), and
# says READY once the first is running and the queue file lists it as running.
CHILD = r"""
import json, sys
from PySide6.QtWidgets import QApplication
from desktop.engine.queue_store import QueueStore
from desktop.ui.main_window import MainWindow

app = QApplication([])
window = MainWindow()
window.show()
prompts = sys.argv[1:]
window.sampler_panel.set_values({"steps": 150})
for i, prompt in enumerate(prompts):
    window.prompt_panel.set_values({"prompt": prompt})
    window.generate()
    window.sampler_panel.set_values({"steps": 3})

def on_step(job_id, step):
    restored = QueueStore().load()
    if restored.interrupted and len(restored.waiting) == len(prompts) - 1:
        print("READY", job_id, flush=True)
        window.preview_shown.disconnect(on_step)

window.preview_shown.connect(on_step)
window.start_engine()
app.exec()
"""


def _wait_for_ready(process: subprocess.Popen, timeout: float) -> str:
    selector = selectors.DefaultSelector()
    assert process.stdout is not None
    selector.register(process.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not selector.select(timeout=max(0.0, deadline - time.monotonic())):
            break
        line = process.stdout.readline()
        if not line:
            break
        if line.startswith("READY"):
            return line.split()[1]
    process.kill()
    raise AssertionError(f"the app never got ready: {process.stderr.read()[-3000:]}")


def test_sigkill_with_three_waiting_jobs_loses_none(qtbot, tiny_settings, sandstorm_home):
    prompts = ["the running one", "waiting one", "waiting two", "waiting three"]
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-c", CHILD, *prompts],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        running_id = _wait_for_ready(process, timeout=120)
        process.send_signal(signal.SIGKILL)
        process.wait(30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(30)
        if process.stdout:
            process.stdout.close()
        if process.stderr:
            process.stderr.close()
    assert process.returncode == -signal.SIGKILL

    # Relaunch with "restore paused", so the test can look before anything runs.
    settings = load_settings()
    settings.queue_on_start = "paused"
    save_settings(settings)
    window = MainWindow()
    qtbot.addWidget(window)
    try:
        assert window.jobs.paused
        assert [job.request.prompt for job in window.jobs.pending] == prompts[1:]
        assert [job.request.steps for job in window.jobs.pending] == [3, 3, 3]
        interrupted = window.jobs.interrupted
        assert [job.request.prompt for job in interrupted] == [prompts[0]]
        assert interrupted[0].job_id == running_id and interrupted[0].request.steps == 150
        assert window.queue_view.interrupted_ids() == [running_id]
        assert "3 waiting jobs restored" in window.message_bar.text()
        assert "1 job interrupted" in window.message_bar.text()
        # Nothing was handed to the worker while paused; Resume runs the three, not the fourth.
        assert not window.worker.isRunning()
        finished: list[str] = []
        window.worker.job_finished.connect(lambda job_id, _saved: finished.append(job_id))
        window.resume_queue()
        qtbot.waitUntil(lambda: len(finished) == 3, timeout=120_000)
        assert window.jobs.interrupted and not window.jobs.pending
        window.dismiss_interrupted(running_id)
        assert not window.jobs.interrupted
    finally:
        window.shutdown()
