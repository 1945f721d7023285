"""The generation worker: one long-lived QThread that owns a backend and runs jobs in order.

The worker knows only the ``Backend`` protocol (``desktop.engine.backend``): the local engine
by default, a remote server later. The backend (and with the local one torch and diffusers)
is created inside ``run``, so the GUI thread never pays for those imports. Every signal
carries the job id, so the window can drop updates from a job it has already cancelled.
Previews cross threads as ``QImage`` copies (never ``QPixmap``, which belongs to the GUI
thread).
"""

from __future__ import annotations

import queue
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PySide6.QtCore import QThread, Signal
from PySide6.QtGui import QImage

from desktop.engine.backend import Backend, local_backend
from desktop.engine.devices import ComputeOptions
from desktop.engine.errors import Cancelled, SandstormError
from desktop.engine.progress import Progress, StepUpdate
from desktop.engine.results import save_results
from desktop.ui import threads
from desktop.ui.jobs import Job
from desktop.ui.qimage import pil_to_qimage

#: Makes the backend for a device setting and the performance settings, on the worker thread.
BackendFactory = Callable[[str, ComputeOptions], Backend]


@dataclass
class JobImages:
    """The finished images of a job, kept by the window until saved or replaced.

    ``images`` are the engine's ``GeneratedImage`` objects (PIL image + the single-image
    request), kept so "Save as…" works when the output folder cannot be written.
    """

    job_id: str
    qimages: list[QImage]
    images: list[Any]
    model: Any
    request: Any
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Preload:
    model: str


@dataclass(frozen=True)
class _SetCompute:
    device: str
    options: ComputeOptions


_STOP = object()


class SignalProgress(Progress):
    """Turns the engine's progress calls into a worker's signals (on the worker's thread).

    ``worker`` is anything with the ``GenerationWorker`` signals ``status_changed``,
    ``step_previewed`` and ``warning_raised`` (the remote worker has them too).
    """

    def __init__(self, worker: Any, job: Job | None, job_id: str = "") -> None:
        super().__init__(
            job.job_id if job else job_id,
            job.cancel_event if job else threading.Event(),
            previews=True,
        )
        self._worker = worker

    def set_status(self, text: str) -> None:
        self._worker.status_changed.emit(self.job_id, text)

    def set_progress(self, update: StepUpdate) -> None:
        preview = pil_to_qimage(update.preview) if update.preview is not None else QImage()
        self._worker.step_previewed.emit(
            update.job_id, update.step, update.total, float(update.elapsed), preview
        )

    def warn(self, text: str) -> None:
        self._worker.warning_raised.emit(self.job_id, text)


class GenerationWorker(QThread):
    """Runs ``Job``s one at a time on a single backend; submit from the GUI thread.

    Signals:
        engine_ready(): the backend exists (for the local engine: torch imported, device
            chosen).
        engine_failed(message): the backend could not start; the next job retries.
        job_started(job_id)
        status_changed(job_id, text): "Loading model …", "Generating…" ("" job id: no job).
        step_previewed(job_id, step, total, elapsed, QImage): once per denoising step.
        images_generated(job_id, JobImages): the finished images, before saving.
        job_finished(job_id, saved): saved gallery items (or paths); empty if saving failed.
        save_failed(job_id, message): the images could not be written.
        job_failed(job_id, message): a user-facing error; the worker keeps running.
        job_cancelled(job_id)
        warning_raised(job_id, text): a non-fatal problem (e.g. prompt truncated).
    """

    engine_ready = Signal()
    engine_failed = Signal(str)
    job_started = Signal(str)
    status_changed = Signal(str, str)
    step_previewed = Signal(str, int, int, float, QImage)
    images_generated = Signal(str, object)
    job_finished = Signal(str, list)
    save_failed = Signal(str, str)
    job_failed = Signal(str, str)
    job_cancelled = Signal(str)
    warning_raised = Signal(str, str)

    def __init__(
        self,
        device: str = "auto",
        output_dir: Path | None = None,
        backend_factory: BackendFactory | None = None,
        parent: Any = None,
        options: ComputeOptions | None = None,
    ) -> None:
        super().__init__(parent)
        self.setObjectName("GenerationWorker")
        self._inbox: queue.Queue[Any] = queue.Queue()
        self._device = device
        self._options = options or ComputeOptions()
        self._output_dir = output_dir
        self._factory: BackendFactory = backend_factory or local_backend
        self._backend: Backend | None = None
        self._stopping = threading.Event()
        self._current: Job | None = None
        self._lock = threading.Lock()
        threads.track(self)

    # -- GUI-thread API ------------------------------------------------------------------
    def submit(self, job: Job) -> None:
        """Queue ``job``; a job cancelled before it starts is reported as cancelled."""
        self._inbox.put(job)

    def preload(self, model: str) -> None:
        """Load ``model`` now, so the first Generate does not wait for it."""
        self._inbox.put(_Preload(model))

    def set_compute(self, device: str, options: ComputeOptions | None = None) -> None:
        """Use ``device`` and ``options`` from the next job on (the backend is rebuilt when
        either changes; the loaded model goes with it)."""
        self._inbox.put(_SetCompute(device, options or ComputeOptions()))

    def set_output_dir(self, path: Path) -> None:
        with self._lock:
            self._output_dir = path

    @property
    def backend(self) -> Backend | None:
        return self._backend

    def stop(self, timeout_ms: int = 30_000) -> bool:
        """Cancel the running job, drop the rest, end the thread; True when it has ended."""
        self._stopping.set()
        with self._lock:
            if self._current is not None:
                self._current.cancel()
        self._inbox.put(_STOP)
        if not self.isRunning():
            return True
        return self.wait(timeout_ms)

    # -- worker thread -------------------------------------------------------------------
    def run(self) -> None:
        # Below the GUI thread, and so are the compute threads torch starts from here (a
        # thread's priority is inherited): the window paints first while a job runs, and a
        # thread of ours holding the GIL competes only with equals.
        threads.lower_priority()
        self._ensure_backend()
        while not self._stopping.is_set():
            item = self._inbox.get()
            if item is _STOP or self._stopping.is_set():
                break
            try:
                self._handle(item)
            except Exception as exc:  # a bug in one item must not end the worker thread
                traceback.print_exc()
                if isinstance(item, Job):
                    self.job_failed.emit(item.job_id, f"Generation failed unexpectedly: {exc}")
        # Pending jobs are abandoned on shutdown; tell the window so its queue view empties.
        while True:
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, Job):
                self.job_cancelled.emit(item.job_id)
        # Dropping the reference is enough at shutdown; an explicit unload (gc.collect) would
        # cost a noticeable fraction of a second while the window waits to close.
        self._backend = None

    def _handle(self, item: Any) -> None:
        if isinstance(item, _SetCompute):
            if (item.device, item.options) != (self._device, self._options):
                self._device, self._options = item.device, item.options
                self._release_backend()
        elif isinstance(item, _Preload):
            self._preload(item.model)
        elif isinstance(item, Job):
            self._run_job(item)

    def _ensure_backend(self) -> Backend | None:
        if self._backend is not None:
            return self._backend
        self.status_changed.emit("", "Starting engine…")
        try:
            self._backend = self._factory(self._device, self._options)
        except SandstormError as exc:
            self.engine_failed.emit(str(exc))
            return None
        except Exception as exc:  # a backend that cannot start must not kill the thread
            traceback.print_exc()
            self.engine_failed.emit(f"The engine could not start: {exc}")
            return None
        self.engine_ready.emit()
        return self._backend

    def _release_backend(self) -> None:
        backend, self._backend = self._backend, None
        if backend is not None:
            backend.close()

    def _preload(self, model: str) -> None:
        backend = self._ensure_backend()
        if backend is None:
            return
        try:
            backend.preload(model, SignalProgress(self, None))
        except SandstormError as exc:
            self.status_changed.emit("", str(exc))
            return
        except Exception as exc:
            traceback.print_exc()
            self.status_changed.emit("", f"The model could not be loaded: {exc}")
            return
        self.status_changed.emit("", "Ready.")

    def _run_job(self, job: Job) -> None:
        if job.cancelled:
            self.job_cancelled.emit(job.job_id)
            return
        with self._lock:
            self._current = job
        try:
            self.job_started.emit(job.job_id)
            backend = self._ensure_backend()
            if backend is None:
                self.job_failed.emit(job.job_id, "The engine is not running; see the message.")
                return
            try:
                result = backend.generate(job.request, SignalProgress(self, job))
            except Cancelled:
                self.job_cancelled.emit(job.job_id)
                return
            except SandstormError as exc:
                self.job_failed.emit(job.job_id, str(exc))
                return
            except MemoryError:
                self.job_failed.emit(job.job_id, "Out of memory. Try a smaller size or batch size.")
                return
            except Exception as exc:
                traceback.print_exc()
                self.job_failed.emit(job.job_id, f"Generation failed unexpectedly: {exc}")
                return
            self._deliver(job, result)
        finally:
            with self._lock:
                self._current = None

    def _deliver(self, job: Job, result: Any) -> None:
        qimages = [pil_to_qimage(item.image) for item in result.images]
        self.images_generated.emit(
            job.job_id,
            JobImages(
                job.job_id,
                qimages,
                list(result.images),
                result.model,
                result.request,
                list(result.warnings),
            ),
        )
        with self._lock:
            root = self._output_dir
        # Saving runs even when a cancel arrives now: the images are complete, and an
        # interrupted save is what leaves half-written files.
        try:
            saved = save_results(list(result.images), result.model, root)
        except SandstormError as exc:
            self.save_failed.emit(job.job_id, str(exc))
            saved = []
        self.job_finished.emit(job.job_id, saved)
