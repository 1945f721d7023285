"""Queue bookkeeping for the window, as a plain class the tests can drive without Qt.

The worker thread consumes jobs in submission order; this class mirrors that order for the
queue view and owns each job's cancel event, which the GUI thread sets directly so a running
job stops within one step (a queued signal would wait until the pipeline call returns).
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field

from desktop.engine.request import GenerationRequest


@dataclass
class Job:
    """One queued generation: the frozen request, its id and its cancel switch."""

    job_id: str
    request: GenerationRequest
    cancel_event: threading.Event = field(default_factory=threading.Event)
    created: float = field(default_factory=time.monotonic)

    @property
    def cancelled(self) -> bool:
        return self.cancel_event.is_set()

    def cancel(self) -> None:
        self.cancel_event.set()

    def summary(self, limit: int = 48) -> str:
        """A one-line description for the queue view."""
        prompt = " ".join(self.request.prompt.split()) or "(empty prompt)"
        if len(prompt) > limit:
            prompt = prompt[: limit - 1] + "…"
        mode = "img2img" if self.request.is_img2img else "txt2img"
        r = self.request
        return f"{prompt} · {r.width}×{r.height} · {r.steps} steps · {mode}"


class JobQueue:
    """Pending and running jobs in order. Not thread-safe: the GUI thread owns it."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._pending: list[Job] = []
        self._running: Job | None = None

    def add(self, request: GenerationRequest) -> Job:
        job = Job(f"job-{next(self._ids)}", request)
        self._pending.append(job)
        return job

    @property
    def pending(self) -> list[Job]:
        return list(self._pending)

    @property
    def running(self) -> Job | None:
        return self._running

    def __len__(self) -> int:
        return len(self._pending) + (self._running is not None)

    def get(self, job_id: str) -> Job | None:
        if self._running is not None and self._running.job_id == job_id:
            return self._running
        return next((j for j in self._pending if j.job_id == job_id), None)

    def is_current(self, job_id: str) -> bool:
        """True while ``job_id`` is the running job and has not been cancelled."""
        job = self._running
        return job is not None and job.job_id == job_id and not job.cancelled

    def mark_started(self, job_id: str) -> Job | None:
        """The worker picked up ``job_id``: move it from pending to running."""
        job = next((j for j in self._pending if j.job_id == job_id), None)
        if job is None:
            return None
        self._pending.remove(job)
        self._running = job
        return job

    def mark_done(self, job_id: str) -> Job | None:
        """The job finished, failed or was cancelled; forget it wherever it is."""
        if self._running is not None and self._running.job_id == job_id:
            job, self._running = self._running, None
            return job
        job = next((j for j in self._pending if j.job_id == job_id), None)
        if job is not None:
            self._pending.remove(job)
        return job

    def remove(self, job_id: str) -> Job | None:
        """Drop a pending job: it is cancelled so the worker skips it when it comes up."""
        job = next((j for j in self._pending if j.job_id == job_id), None)
        if job is not None:
            job.cancel()
            self._pending.remove(job)
        return job

    def cancel_current(self) -> Job | None:
        job = self._running
        if job is not None:
            job.cancel()
        return job

    def cancel_all(self) -> list[Job]:
        """Cancel the running job and empty the queue; returns every job cancelled."""
        jobs = ([self._running] if self._running is not None else []) + self._pending
        for job in jobs:
            job.cancel()
        self._pending.clear()
        return jobs
