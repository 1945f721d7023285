"""A Qt-free progress and cancellation interface between the engine and any front end.

The engine calls ``set_status`` / ``set_progress`` / ``check_cancelled``; the Qt worker
subclasses ``Progress`` and turns the calls into signals; the command line prints a bar.
Cancellation is a ``threading.Event`` so the GUI thread can set it directly while the
worker is deep inside a pipeline call (a queued signal would never be delivered there).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from desktop.engine.errors import Cancelled

if TYPE_CHECKING:
    from PIL import Image


@dataclass(frozen=True)
class StepUpdate:
    """One denoising step of a job.

    ``preview`` is the model's predicted final image (first image of the batch) at latent
    resolution, or None when previews are off. ``step`` counts from 1 to ``total``.
    """

    job_id: str
    step: int
    total: int
    elapsed: float
    preview: Image.Image | None


class Progress:
    """Receives a job's progress; base implementation records nothing and never cancels.

    Args:
        job_id: tag copied onto every update so stale ones can be dropped.
        cancel_event: set it (from any thread) to stop the job within one step.
        previews: whether the engine should compute a preview image every step.
    """

    def __init__(
        self,
        job_id: str = "",
        cancel_event: threading.Event | None = None,
        previews: bool = True,
    ) -> None:
        self.job_id = job_id
        self.cancel_event = cancel_event or threading.Event()
        self.previews = previews
        self.started = time.perf_counter()

    def cancel(self) -> None:
        self.cancel_event.set()

    @property
    def cancelled(self) -> bool:
        return self.cancel_event.is_set()

    def check_cancelled(self) -> None:
        """Raise ``Cancelled`` if the job was cancelled."""
        if self.cancel_event.is_set():
            raise Cancelled()

    def set_status(self, text: str) -> None:
        """A short state such as "Loading model…"; override to show it."""

    def set_progress(self, update: StepUpdate) -> None:
        """Called once per scheduler step; override to show it."""

    def warn(self, text: str) -> None:
        """A non-fatal problem the user should know about (e.g. prompt truncated)."""


class RecordingProgress(Progress):
    """Keeps every status, update and warning; handy for scripts and tests."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.statuses: list[str] = []
        self.updates: list[StepUpdate] = []
        self.warnings: list[str] = []

    def set_status(self, text: str) -> None:
        self.statuses.append(text)

    def set_progress(self, update: StepUpdate) -> None:
        self.updates.append(update)

    def warn(self, text: str) -> None:
        self.warnings.append(text)
