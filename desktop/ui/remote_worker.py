"""Jobs on ComfyUI servers, reported to the window exactly like the local worker's.

``RemoteWorker`` has the signals of ``GenerationWorker`` (plus ``job_placed``), so the
window connects both to the same handlers; behind it a ``ServerPool`` (engine, no Qt) keeps
the queue and runs each job on a server. The pool's callbacks come on its threads: they
only emit signals (queued to the GUI thread by Qt) and save results, as the local worker
does on its own thread. Previews cross as ``QImage`` tagged with the job id.

The servers are set with ``set_servers``; the pool is rebuilt when they change (jobs
running on the old one are cancelled and reported so; the old pool is closed off the GUI
thread, since stopping a job on a server that hangs can take its full timeout). While a pool
exists a timer asks it for the servers' states every ``POLL_MS`` and emits
``servers_changed`` when they differ, so the window's picker follows servers coming and
going without the (Qt-free) pool knowing about the window.

The pool module is imported when the first pool is made: it brings the engine's generation
module (and torch) with it, which the window must not pay for before its first paint.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QObject, QTimer, Signal
from PySide6.QtGui import QImage

from desktop.engine.errors import SandstormError
from desktop.engine.remote.comfy_client import ServerConfig
from desktop.engine.results import save_results
from desktop.ui.jobs import Job
from desktop.ui.qimage import pil_to_qimage
from desktop.ui.worker import JobImages, SignalProgress

if TYPE_CHECKING:
    from desktop.engine.remote.pool import ServerPool, ServerStatus

#: How often the servers' states are looked at (milliseconds).
POLL_MS = 1000


class _RemoteProgress(SignalProgress):
    """The worker's signals for a job in the pool (called on the pool's threads)."""

    def __init__(self, worker: RemoteWorker, job: Job, pool: ServerPool) -> None:
        super().__init__(worker, job)
        self._remote = worker
        self._pool = pool

    def set_status(self, text: str) -> None:
        # A job whose server failed is back in the pool's queue; its next status says why.
        self._remote._check_placed(self.job_id, self._pool)
        super().set_status(text)


class RemoteWorker(QObject):
    """Runs ``Job``s on ComfyUI servers; submit from the GUI thread.

    Signals: those of ``GenerationWorker`` and
        job_placed(job_id, server label): a server took the job (again after a failure);
            an empty label: its server failed and it waits for another.
        servers_changed(): the servers were set, or one's state changed (for the picker).

    Args:
        output_dir: where results are saved (None: the settings' output folder).
        slots: jobs in flight on one server at most (None: the pool's default, two).
        retry_s: delays between probes of a server that does not answer (None: the pool's).
    """

    job_started = Signal(str)
    job_placed = Signal(str, str)
    status_changed = Signal(str, str)
    step_previewed = Signal(str, int, int, float, QImage)
    images_generated = Signal(str, object)
    job_finished = Signal(str, list)
    save_failed = Signal(str, str)
    job_failed = Signal(str, str)
    job_cancelled = Signal(str)
    warning_raised = Signal(str, str)
    servers_changed = Signal()

    def __init__(
        self,
        output_dir: Path | None = None,
        parent: QObject | None = None,
        slots: int | None = None,
        retry_s: Sequence[float] | None = None,
    ) -> None:
        super().__init__(parent)
        self.setObjectName("RemoteWorker")
        self.slots = slots
        self.retry_s = tuple(retry_s) if retry_s is not None else None
        self._output_dir = output_dir
        self._configs: list[ServerConfig] = []
        self._pool: ServerPool | None = None
        # Reentrant: a signal emitted under it may reach a slot on this thread directly.
        self._lock = threading.RLock()
        self._started: set[str] = set()
        #: job id -> the label of the server it was last placed on ("" after it failed),
        #: and how many times a server took it.
        self._placed: dict[str, str] = {}
        self._placements: dict[str, int] = {}
        self._closing: list[threading.Thread] = []
        self._statuses: list[ServerStatus] = []
        self._poll = QTimer(self)
        self._poll.setInterval(POLL_MS)
        self._poll.timeout.connect(self._check_servers)

    # -- GUI-thread API ---------------------------------------------------------------------
    def set_servers(self, configs: list[ServerConfig]) -> None:
        """Run jobs on ``configs`` from now on (the same list keeps the pool as it is)."""
        if configs == self._configs:
            return
        self._configs = list(configs)
        old, self._pool = self._pool, None
        if old is not None:
            self._retire(old)
        if configs:
            self._pool = self._new_pool(configs)
            self._poll.start()
        else:
            self._poll.stop()
        self._statuses = self.servers()
        self.servers_changed.emit()

    def _new_pool(self, configs: list[ServerConfig]) -> ServerPool:
        from desktop.engine.remote.pool import ServerPool

        options: dict[str, Any] = {}
        if self.slots is not None:
            options["slots"] = self.slots
        if self.retry_s is not None:
            options["retry_s"] = self.retry_s
        return ServerPool(configs, **options)

    def configs(self) -> list[ServerConfig]:
        """The servers jobs go to now (empty: none)."""
        return list(self._configs)

    def servers(self) -> list[ServerStatus]:
        return self._pool.servers() if self._pool is not None else []

    def pool(self) -> ServerPool | None:
        return self._pool

    def set_output_dir(self, path: Path) -> None:
        with self._lock:
            self._output_dir = path

    def submit(self, job: Job) -> None:
        """Queue ``job`` on the servers; without any it fails with the reason."""
        if self._pool is None:
            self.job_failed.emit(
                job.job_id,
                "No ComfyUI server is set up: add one in File ▸ Settings, or choose Local.",
            )
            return
        from desktop.engine.remote.pool import RemoteJob

        remote = RemoteJob(
            job.job_id,
            job.request,
            _RemoteProgress(self, job, self._pool),
            on_started=lambda label, job=job: self._on_started(job, label),
            on_done=lambda result, label, job=job: self._on_done(job, result, label),
            on_failed=lambda message, job=job: self._on_failed(job, message),
            on_cancelled=lambda job=job: self._on_cancelled(job),
        )
        self._pool.submit(remote)

    def where(self, job_id: str) -> str:
        return self._pool.where(job_id) if self._pool is not None else ""

    def stop(self, timeout_ms: int = 30_000) -> bool:
        """Cancel every job and stop the pool's threads; True when they ended."""
        deadline = time.monotonic() + timeout_ms / 1000
        self._poll.stop()
        pool, self._pool = self._pool, None
        self._configs = []
        stopped = pool.close(timeout_ms / 1000) if pool is not None else True
        for thread in self._closing:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._closing = [t for t in self._closing if t.is_alive()]
        return stopped and not self._closing

    def _retire(self, pool: ServerPool) -> None:
        """Close ``pool`` on a thread of its own (its jobs report themselves cancelled)."""
        self._closing = [t for t in self._closing if t.is_alive()]
        thread = threading.Thread(
            target=pool.close, args=(10.0,), name="close server pool", daemon=True
        )
        self._closing.append(thread)
        thread.start()

    def _check_servers(self) -> None:
        statuses = self.servers()
        if statuses != self._statuses:
            self._statuses = statuses
            self.servers_changed.emit()

    # -- the pool's threads -----------------------------------------------------------------
    def _check_placed(self, job_id: str, pool: ServerPool) -> None:
        """Report ``job_id`` as back in the queue when its server failed on it."""
        with self._lock:
            placed, count = self._placed.get(job_id, ""), self._placements.get(job_id, 0)
        if not placed:
            return
        # Never asked under our lock: the pool may call set_status under its own.
        where = pool.where(job_id)
        with self._lock:
            if where or not self._placed.get(job_id) or self._placements.get(job_id) != count:
                return
            self._placed[job_id] = ""
            # Emitted under the lock, so it is queued in order with _on_started's.
            self.job_placed.emit(job_id, "")

    def _forget(self, job: Job) -> None:
        with self._lock:
            self._started.discard(job.job_id)
            self._placed.pop(job.job_id, None)
            self._placements.pop(job.job_id, None)

    def _on_started(self, job: Job, label: str) -> None:
        with self._lock:
            first = job.job_id not in self._started
            self._started.add(job.job_id)
            self._placed[job.job_id] = label
            self._placements[job.job_id] = self._placements.get(job.job_id, 0) + 1
            if first:
                self.job_started.emit(job.job_id)
            self.job_placed.emit(job.job_id, label)

    def _on_failed(self, job: Job, message: str) -> None:
        self._forget(job)
        self.job_failed.emit(job.job_id, message)

    def _on_cancelled(self, job: Job) -> None:
        self._forget(job)
        self.job_cancelled.emit(job.job_id)

    def _on_done(self, job: Job, result: Any, label: str) -> None:
        self._forget(job)
        with self._lock:
            root = self._output_dir
        try:
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
            try:
                saved = save_results(list(result.images), result.model, root)
            except SandstormError as exc:
                self.save_failed.emit(job.job_id, str(exc))
                saved = []
        except Exception as exc:  # never lose the report of a finished job
            traceback.print_exc()
            self.job_failed.emit(job.job_id, f"The results from {label} could not be kept: {exc}")
            return
        self.job_finished.emit(job.job_id, saved)
