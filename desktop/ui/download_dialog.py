"""The optional "Download starter models" dialog.

Downloads run in a ``DownloadThread`` (never on the GUI thread) through the Qt-free
``desktop.engine.downloads``; a download that is cancelled or cut off keeps its ``.part``
file and the dialog offers to resume it. Nothing here is needed to use Sandstorm: the
built-in model works with no network, and an offline machine is told so plainly.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import QEvent, QObject, Qt, QThread, Signal
from PySide6.QtGui import QCloseEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QMainWindow,
    QProgressBar,
    QPushButton,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from desktop.engine import downloads, paths
from desktop.engine.downloads import DownloadError, StarterModel, format_size
from desktop.engine.errors import Cancelled, SandstormError
from desktop.engine.models import FAMILY_LABELS
from desktop.ui import threads

#: How often the download thread reports progress to the GUI (seconds).
REPORT_INTERVAL = 0.1
DownloadFunction = Callable[..., Path]
_COLUMNS = ("Name", "Family", "Size", "Licence", "Status")


class DownloadThread(QThread):
    """Downloads one starter model.

    Signals:
        progress(done, total): bytes so far and the total (-1 when the server does not say),
            at most every ``REPORT_INTERVAL`` seconds and once at the end.
        succeeded(str): the finished file.
        failed(str): a message for the user.
        cancelled(str): the download was paused; its partial file is kept.
    """

    progress = Signal("qlonglong", "qlonglong")
    succeeded = Signal(str)
    failed = Signal(str)
    cancelled = Signal(str)

    def __init__(
        self,
        entry: StarterModel,
        models_dir: Path,
        download: DownloadFunction = downloads.download,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.setObjectName(f"download:{entry.filename}")
        self.entry = entry
        self.models_dir = models_dir
        self.cancel_event = threading.Event()
        self._download = download
        self._last_report = 0.0
        threads.track(self)

    def run(self) -> None:
        try:
            path = self._download(
                self.entry,
                self.entry.folder(self.models_dir),
                progress=self._report,
                cancel_event=self.cancel_event,
            )
        except Cancelled as exc:
            self.cancelled.emit(str(exc))
        except SandstormError as exc:
            self.failed.emit(str(exc))
        except Exception as exc:  # a bug must reach the user as a message, not kill the app
            self.failed.emit(f"The download of {self.entry.name} failed unexpectedly: {exc}.")
        else:
            self.succeeded.emit(str(path))

    def _report(self, done: int, total: int | None) -> None:
        now = time.monotonic()
        if done == total or now - self._last_report >= REPORT_INTERVAL:
            self._last_report = now
            self.progress.emit(done, -1 if total is None else total)

    def stop(self, timeout_ms: int = 35_000) -> bool:
        """Ask the download to stop (within one chunk) and wait; True when it has ended."""
        self.cancel_event.set()
        return self.wait(timeout_ms)


class OnlineProbe(QThread):
    """Runs the cheap "is the hub reachable" check off the GUI thread.

    Signals:
        answered(bool): whether the hub could be reached.
    """

    answered = Signal(bool)

    def __init__(self, check: Callable[[], bool], parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("download:online-probe")
        self._check = check
        threads.track(self)

    def run(self) -> None:
        try:
            online = bool(self._check())
        except Exception:  # a failing probe means we cannot tell; the download will say
            online = True
        self.answered.emit(online)

    def stop(self, timeout_ms: int = 5_000) -> bool:
        return self.wait(timeout_ms)


class DownloadDialog(QDialog):
    """Lists the starter models and downloads the selected one, with progress and resume.

    Signals:
        download_finished(str): a model was downloaded to this path.
        download_failed(str): a download failed with this message.
    """

    download_finished = Signal(str)
    download_failed = Signal(str)

    def __init__(
        self,
        parent: QWidget | None = None,
        catalogue: list[StarterModel] | Path | None = None,
        models_dir: Path | None = None,
        online_check: Callable[[], bool] | None = None,
        download: DownloadFunction = downloads.download,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Download starter models")
        self.setObjectName("DownloadDialog")
        self.setMinimumSize(720, 360)
        self.models_dir = models_dir if models_dir is not None else paths.user_models_dir()
        self._download = download
        self._thread: DownloadThread | None = None
        self._probe: OnlineProbe | None = None
        self._started_at = 0.0
        self._started_bytes = 0
        self.models: list[StarterModel] = []
        load_error = ""
        if isinstance(catalogue, list):
            self.models = catalogue
        else:
            try:
                self.models = downloads.load_catalogue(catalogue or downloads.CATALOGUE)
            except DownloadError as exc:
                load_error = str(exc)

        layout = QVBoxLayout(self)
        intro = QLabel(
            "Optional: download well-known models from Hugging Face into "
            f"{self.models_dir}. Nothing here is required — the built-in model works "
            "without a network."
        )
        intro.setWordWrap(True)
        intro.setToolTip("Downloaded models appear in the model list when they finish.")
        layout.addWidget(intro)

        self.tree = QTreeWidget()
        self.tree.setObjectName("StarterModels")
        self.tree.setColumnCount(len(_COLUMNS))
        self.tree.setHeaderLabels(list(_COLUMNS))
        self.tree.setRootIsDecorated(False)
        self.tree.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.tree.setToolTip("Models you can download; hover a row for its description.")
        self.tree.header().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for index, model in enumerate(self.models):
            item = QTreeWidgetItem(
                [
                    model.name,
                    FAMILY_LABELS.get(model.family, model.family),
                    format_size(model.size_bytes),
                    model.license,
                    "",
                ]
            )
            item.setData(0, Qt.ItemDataRole.UserRole, index)
            tip = (
                f"{model.description}\n\n{model.repo} · {model.filename}\n"
                f"Saved in {model.folder(self.models_dir)}"
            )
            for column in range(len(_COLUMNS)):
                item.setToolTip(column, tip)
            self.tree.addTopLevelItem(item)
        self.tree.itemSelectionChanged.connect(self._update_buttons)
        self.tree.itemDoubleClicked.connect(lambda *_: self.start_download())
        layout.addWidget(self.tree, 1)

        self.status_label = QLabel(load_error)
        self.status_label.setObjectName("DownloadStatus")
        self.status_label.setWordWrap(True)
        self.status_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.status_label.setToolTip("What the download is doing, or why it stopped.")
        layout.addWidget(self.status_label)

        self.progress_bar = QProgressBar()
        # Permille, not bytes: QProgressBar counts in 32-bit ints and checkpoints exceed 2 GiB.
        self.progress_bar.setRange(0, 1000)
        self.progress_bar.setTextVisible(False)
        self.progress_bar.setToolTip("Progress of the current download.")
        self.detail_label = QLabel("")
        self.detail_label.setObjectName("DownloadDetail")
        self.detail_label.setToolTip("Downloaded so far, total size and speed.")
        progress_row = QHBoxLayout()
        progress_row.addWidget(self.progress_bar, 1)
        progress_row.addWidget(self.detail_label)
        layout.addLayout(progress_row)

        buttons = QHBoxLayout()
        self.download_button = QPushButton("Download")
        self.download_button.setDefault(True)
        self.download_button.setToolTip("Download the selected model (resumes a partial one).")
        self.download_button.clicked.connect(self.start_download)
        self.cancel_button = QPushButton("Cancel download")
        self.cancel_button.setToolTip("Stop the download; what arrived is kept for resuming.")
        self.cancel_button.clicked.connect(self.cancel_download)
        self.close_button = QPushButton("Close")
        self.close_button.setToolTip("Close this window (a running download is paused).")
        self.close_button.clicked.connect(self.reject)
        buttons.addStretch(1)
        buttons.addWidget(self.download_button)
        buttons.addWidget(self.cancel_button)
        buttons.addWidget(self.close_button)
        layout.addLayout(buttons)

        self._refresh_rows()
        self._select_first_missing()
        self._set_progress_visible(False)
        if parent is not None:
            # Closing the main window must pause a running download before its thread dies.
            parent.installEventFilter(self)
        if self.models:
            self._start_probe(online_check)

    # -- state -----------------------------------------------------------------------------
    def selected_model(self) -> StarterModel | None:
        items = self.tree.selectedItems()
        if not items:
            return None
        return self.models[int(items[0].data(0, Qt.ItemDataRole.UserRole))]

    def select(self, index: int) -> None:
        self.tree.setCurrentItem(self.tree.topLevelItem(index))

    def is_downloading(self) -> bool:
        return self._thread is not None

    def status_text(self, index: int) -> str:
        return self.tree.topLevelItem(index).text(4)

    def _refresh_rows(self) -> None:
        for index, model in enumerate(self.models):
            item = self.tree.topLevelItem(index)
            if model.is_installed(self.models_dir):
                text = "Installed"
            elif partial := model.partial_bytes(self.models_dir):
                text = f"Partial ({format_size(partial)}) — can resume"
            else:
                text = "Not downloaded"
            item.setText(4, text)
        self._update_buttons()

    def _select_first_missing(self) -> None:
        for index, model in enumerate(self.models):
            if not model.is_installed(self.models_dir):
                self.select(index)
                return
        if self.models:
            self.select(0)

    def _update_buttons(self) -> None:
        model = self.selected_model()
        busy = self.is_downloading()
        installed = model is not None and model.is_installed(self.models_dir)
        partial = model is not None and model.partial_bytes(self.models_dir) > 0
        self.download_button.setText("Resume" if partial else "Download")
        self.download_button.setEnabled(model is not None and not busy and not installed)
        self.cancel_button.setEnabled(busy)
        self.tree.setEnabled(not busy)

    def _set_progress_visible(self, visible: bool) -> None:
        self.progress_bar.setVisible(visible)
        self.detail_label.setVisible(visible)

    # -- online check ----------------------------------------------------------------------
    def _start_probe(self, online_check: Callable[[], bool] | None) -> None:
        if downloads.offline_forced():
            self._on_probe(False)
            return
        self._probe = OnlineProbe(online_check or downloads.is_online, self)
        self._probe.answered.connect(self._on_probe)
        self._probe.start()

    def _on_probe(self, online: bool) -> None:
        if self._probe is not None:
            self._probe.wait()
            self._probe.deleteLater()
            self._probe = None
        if not online and not self.is_downloading():
            self.status_label.setText(downloads.offline_message(downloads.HUB_HOST))

    # -- downloading -----------------------------------------------------------------------
    def start_download(self) -> DownloadThread | None:
        """Download (or resume) the selected model in a background thread; returns it."""
        model = self.selected_model()
        if model is None or self.is_downloading() or model.is_installed(self.models_dir):
            return None
        resumed = model.partial_bytes(self.models_dir)
        thread = DownloadThread(model, self.models_dir, self._download, self)
        thread.progress.connect(self._on_progress)
        thread.succeeded.connect(self._on_succeeded)
        thread.failed.connect(self._on_failed)
        thread.cancelled.connect(self._on_cancelled)
        self._thread = thread
        self._started_at = time.monotonic()
        self._started_bytes = resumed
        self.status_label.setText(
            f"Resuming {model.name} at {format_size(resumed)}…"
            if resumed
            else f"Downloading {model.name}…"
        )
        self.progress_bar.setValue(0)
        self.detail_label.setText("Connecting…")
        self._set_progress_visible(True)
        self._update_buttons()
        thread.start()
        return thread

    def cancel_download(self) -> None:
        """Pause the running download; it stops within one chunk and keeps its partial file."""
        if self._thread is not None:
            self._thread.cancel_event.set()
            self.status_label.setText("Stopping the download…")
            self.cancel_button.setEnabled(False)

    def _on_progress(self, done: int, total: int) -> None:
        if total > 0:
            self.progress_bar.setValue(min(1000, done * 1000 // total))
        else:
            self.progress_bar.setRange(0, 0)  # busy indicator when the size is unknown
        elapsed = time.monotonic() - self._started_at
        speed = (done - self._started_bytes) / elapsed if elapsed > 0.2 else 0.0
        amount = f"{format_size(done)} of {format_size(total)}" if total > 0 else format_size(done)
        rate = f" · {format_size(int(speed))}/s" if speed > 0 else ""
        self.detail_label.setText(amount + rate)

    def _finish_thread(self) -> None:
        # The thread emits its result as the last thing it does; waiting here is brief and
        # guarantees that no QThread outlives the signal that reported it.
        if self._thread is not None:
            self._thread.wait()
            self._thread.deleteLater()
            self._thread = None
        self.progress_bar.setRange(0, 1000)
        self._refresh_rows()

    def _on_succeeded(self, path: str) -> None:
        model = self._thread.entry if self._thread is not None else None
        self._finish_thread()
        self.progress_bar.setValue(1000)
        name = model.name if model is not None else Path(path).name
        self.status_label.setText(f"{name} is installed in {Path(path).parent}.")
        self.download_finished.emit(path)

    def _on_failed(self, message: str) -> None:
        self._finish_thread()
        self._set_progress_visible(False)
        self.status_label.setText(message)
        self.download_failed.emit(message)

    def _on_cancelled(self, message: str) -> None:
        self._finish_thread()
        self._set_progress_visible(False)
        self.status_label.setText(message)

    # -- closing ---------------------------------------------------------------------------
    def stop(self, timeout_ms: int = 35_000) -> bool:
        """Pause a running download and wait for its thread; True when no thread is left."""
        ended = True
        if self._thread is not None:
            ended = self._thread.stop(timeout_ms)
            if ended:
                self._finish_thread()
        if self._probe is not None:
            ended = self._probe.stop(timeout_ms) and ended
        return ended

    def done(self, result: int) -> None:
        self.stop()
        super().done(result)

    def closeEvent(self, event: QCloseEvent) -> None:
        self.stop()
        super().closeEvent(event)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if watched is self.parent() and event.type() == QEvent.Type.Close:
            self.stop()
        return super().eventFilter(watched, event)


# -- wiring into the main window -----------------------------------------------------------
def open_download_dialog(window: QMainWindow, **options: Any) -> DownloadDialog:
    """Open the dialog (window-modal, non-blocking) over ``window``; returns it.

    Connect to its ``download_finished(path)`` to learn about a finished download.
    """
    dialog = DownloadDialog(window, **options)
    dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
    dialog.open()
    return dialog
