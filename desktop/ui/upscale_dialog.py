"""Upscale a gallery image: pick an upscaler and a scale, run it off the GUI thread, save.

``UpscaleDialog`` asks (upscaler, scale, with the result's size shown); ``ImageUpscaler``
runs one upscale at a time on a worker thread (``desktop.ui.tasks``), keeps the last
upscaler model loaded for the next image, and reports through signals. The new image is
saved beside the gallery's others with the source's settings and where it came from
(``desktop.engine.upscalers.save_upscaled``).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image
from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFormLayout,
    QLabel,
    QWidget,
)

from desktop.engine.errors import Cancelled, SandstormError
from desktop.ui.tasks import TaskRunner

#: Scales offered (an upscaler model runs at its own scale, then the result is resized).
MIN_SCALE, MAX_SCALE = 1.25, 8.0


class UpscaleDialog(QDialog):
    """Asks how to upscale ``size`` (the source image's width and height)."""

    def __init__(
        self,
        name: str,
        size: tuple[int, int],
        upscalers: Sequence[str],
        upscaler: str = "",
        scale: float = 2.0,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setObjectName("UpscaleDialog")
        self.setWindowTitle(f"Upscale {name}")
        self._size = size
        form = QFormLayout(self)
        self.upscaler_combo = QComboBox()
        self.upscaler_combo.setObjectName("UpscalerCombo")
        self.upscaler_combo.addItems(list(upscalers))
        self.upscaler_combo.setToolTip(
            "Lanczos resizes the picture; upscaler models (ESRGAN, RealESRGAN, SwinIR…) in "
            "models/upscale_models add detail."
        )
        if upscaler and self.upscaler_combo.findText(upscaler) >= 0:
            self.upscaler_combo.setCurrentText(upscaler)
        self.scale_spin = QDoubleSpinBox()
        self.scale_spin.setObjectName("UpscaleScale")
        self.scale_spin.setRange(MIN_SCALE, MAX_SCALE)
        self.scale_spin.setSingleStep(0.25)
        self.scale_spin.setDecimals(2)
        self.scale_spin.setSuffix(" ×")
        self.scale_spin.setValue(min(max(scale, MIN_SCALE), MAX_SCALE))
        self.size_label = QLabel()
        self.size_label.setObjectName("UpscaleSize")
        form.addRow("Upscaler", self.upscaler_combo)
        form.addRow("Scale", self.scale_spin)
        form.addRow("Result", self.size_label)
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        ok = buttons.button(QDialogButtonBox.StandardButton.Ok)
        ok.setText("Upscale")
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)
        self.scale_spin.valueChanged.connect(self._show_size)
        self._show_size()

    def upscaler(self) -> str:
        return self.upscaler_combo.currentText()

    def scale(self) -> float:
        return float(self.scale_spin.value())

    def _show_size(self) -> None:
        w, h = self._size
        s = self.scale()
        self.size_label.setText(f"{w} × {h} → {round(w * s)} × {round(h * s)}")


@dataclass(frozen=True)
class UpscaleJob:
    source: Path
    upscaler: str
    scale: float
    folder: Path


class ImageUpscaler(QObject):
    """Upscales gallery images one at a time on a worker thread.

    Signals:
        started(str): the source path being upscaled now.
        progress(str, int, int): source, tiles done, tiles in all.
        finished(str, str): source, the saved file.
        failed(str, str): source, a sentence for the user.
        cancelled(str): source.
    """

    started = Signal(str)
    progress = Signal(str, int, int)
    finished = Signal(str, str)
    failed = Signal(str, str)
    cancelled = Signal(str)

    def __init__(
        self,
        device: Callable[[], str] = lambda: "cpu",
        extra_sources: Callable[[], Sequence[Path | str]] = lambda: (),
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.tasks = TaskRunner(self)
        self._device = device
        self._extra_sources = extra_sources
        self._waiting: deque[UpscaleJob] = deque()
        self._running: UpscaleJob | None = None
        self._cancel = threading.Event()
        #: The last model used, kept for the next image: (file, device, loaded upscaler).
        self._loaded: tuple[Path, str, Any] | None = None

    @property
    def busy(self) -> bool:
        return self._running is not None or bool(self._waiting)

    def upscale(self, source: Path | str, upscaler: str, scale: float, folder: Path) -> None:
        """Queue one upscale (they run in order)."""
        self._waiting.append(UpscaleJob(Path(source), upscaler, float(scale), Path(folder)))
        self._next()

    def cancel(self) -> None:
        """Stop the running upscale (between tiles) and drop the waiting ones."""
        for job in self._waiting:
            self.cancelled.emit(str(job.source))
        self._waiting.clear()
        self._cancel.set()

    def shutdown(self, msecs: int = 30_000) -> bool:
        self._waiting.clear()
        self._cancel.set()
        return self.tasks.shutdown(msecs)

    def _next(self) -> None:
        if self._running is not None or not self._waiting:
            return
        job = self._running = self._waiting.popleft()
        self._cancel = threading.Event()
        cancel = self._cancel
        self.started.emit(str(job.source))
        self.tasks.submit(
            self._work,
            job,
            cancel,
            self._device(),
            list(self._extra_sources()),
            on_result=lambda saved: self._done(job, saved),
            on_error=lambda exc: self._error(job, exc),
            name="upscale",
        )

    def _work(
        self, job: UpscaleJob, cancel: threading.Event, device: str, sources: list[Path | str]
    ) -> Path:
        from desktop.engine import upscalers
        from desktop.engine.devices import resolve_device

        try:
            with Image.open(job.source) as opened:
                opened.load()
                image = opened.copy()
        except FileNotFoundError as exc:
            raise SandstormError(
                f"{job.source.name} is gone (deleted or moved); nothing was upscaled."
            ) from exc
        except OSError as exc:
            raise SandstormError(f"{job.source.name} cannot be read as an image: {exc}") from exc
        info = upscalers.find_upscaler(job.upscaler, sources)
        if info.path is not None:
            device = resolve_device(device)
        if info.path is None:
            model = upscalers.load_upscaler(info, device)
        elif self._loaded is not None and self._loaded[:2] == (info.path, device):
            model = self._loaded[2]
        else:
            self._loaded = None
            model = upscalers.load_upscaler(info, device)
            self._loaded = (info.path, device, model)

        def tiles(done: int, total: int) -> None:
            self.progress.emit(str(job.source), done, total)

        result = model.upscale(image, job.scale, cancel=cancel, progress=tiles)
        return upscalers.save_upscaled(job.source, result, info.name, job.scale, job.folder)

    def _done(self, job: UpscaleJob, saved: Path) -> None:
        self._running = None
        self.finished.emit(str(job.source), str(saved))
        self._next()

    def _error(self, job: UpscaleJob, exc: BaseException) -> None:
        self._running = None
        if isinstance(exc, Cancelled):
            self.cancelled.emit(str(job.source))
        elif isinstance(exc, SandstormError):
            self.failed.emit(str(job.source), str(exc))
        elif isinstance(exc, MemoryError):
            self.failed.emit(str(job.source), "Out of memory while upscaling; try a smaller scale.")
        else:
            self.failed.emit(str(job.source), f"Upscaling failed unexpectedly: {exc}")
        self._next()
