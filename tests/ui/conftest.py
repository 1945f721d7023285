"""Fixtures for the window tests: a QThread leak guard, settings with the tiny model."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from desktop.engine.environment import apply_defaults
from desktop.engine.settings import Settings, save_settings

UI_DIR = Path(__file__).parent

# As the application does (run_gui): spinning OpenMP threads slow CPU generation by orders of
# magnitude on a machine whose cores are busy. Effective only if torch is not imported yet.
apply_defaults()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # The offscreen platform warns that it cannot size native windows; harmless here.
    for item in items:
        if UI_DIR in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.qt_log_ignore("propagateSizeHints"))


@pytest.fixture(autouse=True)
def no_running_qthreads() -> Iterator[None]:
    """Fail a test that leaves one of the window's QThreads running (and stop it)."""
    yield
    from desktop.ui import threads

    leaked = threads.running_threads()
    for thread in leaked:
        stop = getattr(thread, "stop", None)
        if callable(stop):
            stop(10_000)
        else:
            thread.quit()
            thread.wait(10_000)
    assert not leaked, f"test left QThreads running: {[t.objectName() for t in leaked]}"


@pytest.fixture
def tiny_settings(tiny_sd: Path, sandstorm_home: Path) -> Settings:
    """Saved settings that select the tiny model at 64x64 with 3 Euler steps on the CPU."""
    settings = Settings(
        last_request={
            "model": str(tiny_sd),
            "prompt": "a tiny test image",
            "sampler": "Euler",
            "steps": 3,
            "cfg_scale": 5.0,
            "width": 64,
            "height": 64,
            "batch_size": 1,
        },
        output_dir=str(sandstorm_home / "out"),
        extra_model_folders=[str(tiny_sd.parent)],
        device="cpu",
    )
    save_settings(settings)
    return settings


@pytest.fixture
def window(qtbot, tiny_settings: Settings):
    """A shown main window on the tiny model, its worker started."""
    from desktop.ui.main_window import MainWindow

    win = MainWindow()
    qtbot.addWidget(win)
    win.show()
    qtbot.waitExposed(win)
    with qtbot.waitSignal(win.worker.engine_ready, timeout=60_000):
        win.start_engine()
    yield win
    win.shutdown()


def pngs(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.png"))


@pytest.fixture(autouse=True)
def clear_clipboard_after_test(qapp) -> Iterator[None]:
    """Empty the clipboard while Python is still alive.

    Mime data a test hands to the clipboard is owned by Qt's clipboard, which is destroyed by
    a C++ exit handler after Python has finalised; deleting a Python-made object there
    crashes the interpreter at exit (exit code 139 after every test passed).
    """
    yield
    from PySide6.QtGui import QGuiApplication

    QGuiApplication.clipboard().clear()
