"""The starter model download dialog, against a local HTTP server (never the internet)."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from PySide6.QtWidgets import QMainWindow, QPushButton

from desktop.engine import downloads
from desktop.engine.errors import Cancelled
from desktop.ui.download_dialog import (
    DownloadDialog,
)
from tests.engine.test_downloads import PAYLOAD, FileServer

TIMEOUT = 10_000


@pytest.fixture
def server() -> Iterator[FileServer]:
    hub = FileServer().start()
    yield hub
    hub.stop()


@pytest.fixture
def catalogue(server: FileServer, tmp_path: Path) -> Path:
    """A catalogue whose two models are served by the local server."""
    path = tmp_path / "starter_models.json"
    entries = [
        {
            "name": f"Local model {n}",
            "family": "sd1",
            "kind": "checkpoints",
            "repo": "local/test",
            "filename": f"local-{n}.safetensors",
            "size_bytes": len(PAYLOAD),
            "license": "MIT",
            "description": f"Test model {n} served from 127.0.0.1.",
            "url": server.url(f"/files/local-{n}.safetensors"),
            "sha256": hashlib.sha256(PAYLOAD).hexdigest() if n == 1 else None,
        }
        for n in (1, 2)
    ]
    path.write_text(json.dumps({"version": 1, "models": entries}), encoding="utf-8")
    return path


def _dialog(qtbot, **options) -> DownloadDialog:
    options.setdefault("online_check", lambda: True)
    dialog = DownloadDialog(**options)
    qtbot.addWidget(dialog)
    return dialog


def test_lists_the_catalogue_with_states_and_tooltips(qtbot, tmp_path: Path):
    models_dir = tmp_path / "models"
    first = downloads.load_catalogue()[0]
    first.folder(models_dir).mkdir(parents=True)
    first.target(models_dir).write_bytes(b"installed")
    dialog = _dialog(qtbot, models_dir=models_dir)
    assert dialog.tree.topLevelItemCount() == len(dialog.models) >= 3
    assert dialog.status_text(0) == "Installed"
    assert dialog.status_text(1) == "Not downloaded"
    assert dialog.tree.topLevelItem(0).text(1) == "SD1.5"
    assert dialog.selected_model() == dialog.models[1]  # the first one not yet installed
    assert dialog.models[1].description in dialog.tree.topLevelItem(1).toolTip(0)
    dialog.select(0)
    assert not dialog.download_button.isEnabled()
    for button in dialog.findChildren(QPushButton):
        assert button.toolTip(), button.text()
    for widget in (dialog.tree, dialog.progress_bar, dialog.status_label):
        assert widget.toolTip()


def test_download_runs_in_a_thread_and_finishes(qtbot, tmp_path: Path, catalogue: Path):
    threads_used: list[threading.Thread] = []

    def download(*args, **kwargs) -> Path:
        threads_used.append(threading.current_thread())
        return downloads.download(*args, chunk_size=32 * 1024, **kwargs)

    models_dir = tmp_path / "models"
    dialog = _dialog(qtbot, catalogue=catalogue, models_dir=models_dir, download=download)
    dialog.select(0)
    with qtbot.waitSignal(dialog.download_finished, timeout=TIMEOUT) as finished:
        dialog.download_button.click()
    path = Path(finished.args[0])
    assert path == models_dir / "checkpoints" / "local-1.safetensors"
    assert path.read_bytes() == PAYLOAD
    assert threads_used and threads_used[0] is not threading.main_thread()
    assert not dialog.is_downloading()
    assert dialog.status_text(0) == "Installed"
    assert dialog.progress_bar.value() == 1000
    assert "installed" in dialog.status_label.text()


def test_partial_download_offers_resume(qtbot, tmp_path: Path, catalogue: Path, server):
    models_dir = tmp_path / "models"
    part = models_dir / "checkpoints" / "local-2.safetensors.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(PAYLOAD[:1000])
    dialog = _dialog(qtbot, catalogue=catalogue, models_dir=models_dir)
    dialog.select(1)
    assert dialog.download_button.text() == "Resume"
    assert dialog.status_text(1).startswith("Partial")
    with qtbot.waitSignal(dialog.download_finished, timeout=TIMEOUT):
        dialog.download_button.click()
    assert server.requests[-1][1] == "bytes=1000-"
    assert (models_dir / "checkpoints" / "local-2.safetensors").read_bytes() == PAYLOAD


def test_offline_is_said_plainly(qtbot, tmp_path: Path):
    dialog = _dialog(qtbot, models_dir=tmp_path, online_check=lambda: False)
    qtbot.waitUntil(lambda: "seems to be offline" in dialog.status_label.text(), timeout=TIMEOUT)
    assert "built-in model works without a network" in dialog.status_label.text()


def test_forced_offline_download_fails_with_the_message(
    qtbot, tmp_path: Path, catalogue: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("SANDSTORM_OFFLINE", "1")
    dialog = _dialog(qtbot, catalogue=catalogue, models_dir=tmp_path, online_check=None)
    assert "seems to be offline" in dialog.status_label.text()
    with qtbot.waitSignal(dialog.download_failed, timeout=TIMEOUT) as failed:
        dialog.download_button.click()
    assert "could not reach 127.0.0.1" in failed.args[0]
    assert dialog.status_label.text() == failed.args[0]
    assert dialog.download_button.isEnabled()


def test_cancel_and_closing_the_window_stop_the_thread(qtbot, tmp_path: Path, catalogue: Path):
    started = threading.Event()

    def slow(entry, dest, progress, cancel_event) -> Path:
        progress(10, 100)
        started.set()
        cancel_event.wait(TIMEOUT / 1000)
        raise Cancelled("The download was paused.")

    window = QMainWindow()
    qtbot.addWidget(window)
    dialog = DownloadDialog(
        window, catalogue=catalogue, models_dir=tmp_path, online_check=lambda: True, download=slow
    )
    dialog.start_download()
    assert started.wait(5) and dialog.is_downloading()
    assert dialog.cancel_button.isEnabled() and not dialog.download_button.isEnabled()
    dialog.cancel_button.click()
    qtbot.waitUntil(lambda: not dialog.is_downloading(), timeout=TIMEOUT)
    assert dialog.status_label.text() == "The download was paused."

    started.clear()
    thread = dialog.start_download()
    assert thread is not None and started.wait(5)
    window.close()  # the dialog pauses its download before the window goes away
    assert not thread.isRunning()


def test_file_menu_entry_opens_the_dialog_and_refreshes_models(
    qtbot, tmp_path: Path, catalogue: Path, monkeypatch: pytest.MonkeyPatch, tiny_settings
):
    from desktop.ui.main_window import MainWindow

    window = MainWindow()
    qtbot.addWidget(window)
    refreshed: list[int] = []
    messages: list[tuple[str, str]] = []
    window.refresh_models = lambda: refreshed.append(1)  # type: ignore[method-assign]
    window.show_message = lambda text, level, action=None: messages.append((text, level))  # type: ignore[method-assign]

    action = window.download_action
    file_menu = window.file_menu
    actions = file_menu.actions()
    assert actions.index(window.settings_action) < actions.index(action)
    assert actions.index(action) < actions.index(window.quit_action)
    assert action.text() == "&Download starter models…" and action.toolTip()

    monkeypatch.setenv("SANDSTORM_OFFLINE", "1")  # the default dialog must not probe the net
    action.trigger()
    opened = window.findChild(DownloadDialog)
    assert opened is not None and opened.isVisible()
    assert opened.tree.topLevelItemCount() == len(downloads.load_catalogue())
    opened.reject()
    monkeypatch.delenv("SANDSTORM_OFFLINE")

    dialog = window.open_downloads(
        catalogue=catalogue, models_dir=tmp_path / "models", online_check=lambda: True
    )
    dialog.select(0)
    with qtbot.waitSignal(dialog.download_finished, timeout=TIMEOUT):
        dialog.start_download()
    assert refreshed == [1]
    assert messages and messages[-1][1] == "info" and "local-1.safetensors" in messages[-1][0]
    dialog.reject()
    window.shutdown()
