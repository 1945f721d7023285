"""GUI benchmark: the main thread's largest gap while generating with a preview every step,
and the time from a Generate click to the first preview on an already-loaded model."""

from __future__ import annotations

import os
import tempfile
import time


def run(model: str, size: int, steps: int = 20, rounds: int = 3) -> dict:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from desktop.ui.application import qt_defaults

    qt_defaults()  # as the app runs
    os.environ["SANDSTORM_HOME"] = tempfile.mkdtemp(prefix="sandstorm-gui-bench-")
    from PySide6.QtCore import QEventLoop, QTimer
    from PySide6.QtWidgets import QApplication

    from desktop.engine.settings import Settings, save_settings
    from desktop.ui.main_window import MainWindow
    from desktop.ui.responsiveness import measure_max_gap

    app = QApplication.instance() or QApplication([])
    save_settings(
        Settings(
            last_request={
                "model": model,
                "prompt": "a big red circle on the left",
                "sampler": "Euler",
                "steps": steps,
                "cfg_scale": 5.0,
                "width": size,
                "height": size,
            },
            device="cpu",
        )
    )
    window = MainWindow()
    window.show()
    finished: list[str] = []
    previews: list[float] = []
    window.worker.job_finished.connect(lambda job_id, saved: finished.append(job_id))
    window.preview_shown.connect(lambda job_id, step: previews.append(time.perf_counter()))
    try:
        window.start_engine()
        _wait(lambda: window.worker.backend is not None, QEventLoop, QTimer)
        gaps, first_preview = [], []
        clicked: list[float] = []

        def click() -> None:
            clicked.append(time.perf_counter())
            window.generate()

        for i in range(rounds + 1):  # the first round loads the model
            count = len(finished)
            previews.clear()
            clicked.clear()

            gap = measure_max_gap(click, lambda c=count: len(finished) > c, timeout=600)
            if i:
                gaps.append(gap)
                first_preview.append(previews[0] - clicked[0])
        loads = window.worker.backend.engine.loads
    finally:
        window.shutdown()
        window.deleteLater()
        app.processEvents()
    return {
        "gui_max_gap_ms": max(gaps) * 1000,
        "gui_median_round_gap_ms": sorted(gaps)[len(gaps) // 2] * 1000,
        "gui_click_to_first_preview_seconds": sorted(first_preview)[len(first_preview) // 2],
        "gui_model_loads": loads,
    }


def _wait(condition, loop_cls, timer_cls, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the engine did not start")
        loop = loop_cls()
        timer_cls.singleShot(20, loop.quit)
        loop.exec()
