"""Hardening: closing the window mid-job, twenty times, never hangs, crashes or leaks."""

from __future__ import annotations

import time
from pathlib import Path

from desktop.ui.main_window import MainWindow
from desktop.ui.threads import running_threads


def test_close_mid_job_twenty_times(qtbot, tiny_settings):
    durations = []
    for _ in range(20):
        window = MainWindow()
        qtbot.addWidget(window)
        window.show()
        window.start_engine()
        window.sampler_panel.set_values({"steps": 150})
        window.generate()
        with qtbot.waitSignal(window.preview_shown, timeout=120_000):
            pass
        started = time.perf_counter()
        window.close()
        durations.append(time.perf_counter() - started)
        assert not window.worker.isRunning()
        assert not running_threads()
    durations.sort()
    print(
        f"close mid-job x20: median {durations[10] * 1000:.0f} ms, "
        f"max {durations[-1] * 1000:.0f} ms"
    )
    # The goal is ≤ 1 s each; this bound only catches a hang on a machine shared with others.
    assert durations[-1] < 5.0
    out = Path(tiny_settings.output_dir)
    partial = (
        [p for p in out.rglob("*") if p.is_file() and p.suffix != ".png"] if out.exists() else []
    )
    assert not partial
