"""Queue bookkeeping for the window, as a plain class the tests can drive without Qt.

The worker thread consumes jobs in submission order; this class mirrors that order for the
queue view and owns each job's cancel event, which the GUI thread sets directly so a running
job stops within one step (a queued signal would wait until the pipeline call returns).

Several jobs can run at once (on ComfyUI servers, two per server): ``running_jobs`` lists
them in the order they started and ``running`` is the most recently started one, the job the
progress bar and the canvas follow. The local worker runs one job at a time, so there it is
simply the running job.

With a ``QueueStore`` the queue is written to disk on every change, so waiting jobs survive
a close or a crash. On the next start ``restore`` recreates them; the job that was running
when the process died comes back *interrupted*: listed, never rerun on its own, until the
user runs it again (``requeue_interrupted``) or dismisses it (``dismiss_interrupted``).

The window submits jobs to the worker through ``take_submittable``, which hands out each
waiting job once and nothing while the queue is paused.
"""

from __future__ import annotations

import itertools
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from desktop.engine.queue_store import JobEntry, QueueStore, RestoredQueue, StoredJob
from desktop.engine.request import GenerationRequest

_ID_NUMBER = re.compile(r"job-(\d+)\Z")


@dataclass
class Job:
    """One queued generation: the frozen request, its id and its cancel switch.

    ``created`` is a monotonic time (for durations), ``created_at`` the wall-clock time that
    is stored with the queue; ``submitted`` is set once ``take_submittable`` handed the job
    to the window for the worker.
    """

    job_id: str
    request: GenerationRequest
    cancel_event: threading.Event = field(default_factory=threading.Event)
    created: float = field(default_factory=time.monotonic)
    created_at: float = field(default_factory=time.time)
    submitted: bool = False
    #: Sent to the ComfyUI servers rather than the local worker.
    remote: bool = False
    #: The label of the server running it ("" locally, or while it waits for a server).
    where: str = ""
    #: The last status its backend reported ("Waiting for a server…", "Loading model…").
    status: str = ""
    #: The last step reported and when the job started (``time.perf_counter``).
    step: int = 0
    started_at: float = 0.0
    #: Elapsed seconds at the first step (the it/s figure leaves the warm-up out).
    first_step_elapsed: float | None = None
    #: Previews not drawn: another job had the canvas, or this one was being cancelled.
    dropped_previews: int = 0

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

    def entry(self) -> JobEntry:
        """What the queue store records for this job."""
        return (self.job_id, self.request, self.created_at)


class JobQueue:
    """Pending, running and interrupted jobs. Not thread-safe: the GUI thread owns it.

    Args:
        store: where the queue is saved on every change; None keeps it in memory only.
    """

    def __init__(self, store: QueueStore | None = None) -> None:
        self._ids = itertools.count(1)
        self._pending: list[Job] = []
        #: In the order they started; the last one is ``running``.
        self._running: list[Job] = []
        self._interrupted: list[Job] = []
        self._paused = False
        self._store = store
        self._save_error: str | None = None

    # -- state ------------------------------------------------------------------------------
    @property
    def pending(self) -> list[Job]:
        return list(self._pending)

    @property
    def running(self) -> Job | None:
        """The most recently started running job (the one the canvas follows)."""
        return self._running[-1] if self._running else None

    @property
    def running_jobs(self) -> list[Job]:
        """Every running job, in the order they started."""
        return list(self._running)

    @property
    def interrupted(self) -> list[Job]:
        """Jobs that were running when the app died; shown, never rerun automatically."""
        return list(self._interrupted)

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def store(self) -> QueueStore | None:
        return self._store

    @property
    def save_error(self) -> str | None:
        """Why the last save failed (None after a successful one or without a store)."""
        return self._save_error

    def __len__(self) -> int:
        return len(self._pending) + len(self._running)

    def get(self, job_id: str) -> Job | None:
        """The running or waiting job ``job_id`` (None when it is neither)."""
        return next((j for j in [*self._running, *self._pending] if j.job_id == job_id), None)

    def is_running(self, job_id: str) -> bool:
        return any(j.job_id == job_id for j in self._running)

    def is_current(self, job_id: str) -> bool:
        """True while ``job_id`` is the (most recently started) running job and has not been
        cancelled."""
        job = self.running
        return job is not None and job.job_id == job_id and not job.cancelled

    # -- changes ----------------------------------------------------------------------------
    def add(self, request: GenerationRequest) -> Job:
        job = Job(self._new_id(), request)
        self._pending.append(job)
        self._persist()
        return job

    def mark_started(self, job_id: str) -> Job | None:
        """The worker picked up ``job_id``: move it from pending to running."""
        job = next((j for j in self._pending if j.job_id == job_id), None)
        if job is None:
            return None
        self._pending.remove(job)
        self._running.append(job)
        self._persist()
        return job

    def mark_done(self, job_id: str) -> Job | None:
        """The job finished, failed or was cancelled; forget it wherever it is."""
        for jobs in (self._running, self._pending):
            job = next((j for j in jobs if j.job_id == job_id), None)
            if job is not None:
                jobs.remove(job)
                self._persist()
                return job
        return None

    def remove(self, job_id: str) -> Job | None:
        """Drop a pending job: it is cancelled so the worker skips it when it comes up."""
        job = next((j for j in self._pending if j.job_id == job_id), None)
        if job is not None:
            job.cancel()
            self._pending.remove(job)
            self._persist()
        return job

    def cancel_current(self) -> Job | None:
        """Cancel the most recently started running job (the one on the canvas)."""
        job = self.running
        if job is not None:
            job.cancel()
            self._persist()  # a cancelled job is not stored as running any more
        return job

    def cancel(self, job_id: str) -> Job | None:
        """Cancel one running job (it stays listed until its backend confirms) or remove a
        waiting one; None when there is no such job."""
        job = next((j for j in self._running if j.job_id == job_id), None)
        if job is None:
            return self.remove(job_id)
        job.cancel()
        self._persist()
        return job

    def cancel_all(self) -> list[Job]:
        """Cancel the running jobs and empty the queue; returns every job cancelled.

        Interrupted jobs stay listed (they are not queued; dismiss them one by one).
        """
        jobs = [*self._running, *self._pending]
        for job in jobs:
            job.cancel()
        self._pending.clear()
        self._persist()
        return jobs

    # -- pausing and submitting -------------------------------------------------------------
    def pause(self) -> None:
        """Hold back jobs not yet submitted (those already with the worker still run)."""
        self._paused = True

    def resume(self) -> None:
        """Let ``take_submittable`` hand out waiting jobs again."""
        self._paused = False

    def take_submittable(self) -> list[Job]:
        """Waiting jobs not yet handed to the worker, in order, now marked submitted.

        Empty while paused. The window calls this after ``add``, ``restore``, ``resume`` and
        ``requeue_interrupted`` and passes each job to ``worker.submit``.
        """
        if self._paused:
            return []
        jobs = [j for j in self._pending if not j.submitted and not j.cancelled]
        for job in jobs:
            job.submitted = True
        return jobs

    # -- restoring after a restart ----------------------------------------------------------
    def restore(self, restored: RestoredQueue, paused: bool) -> list[Job]:
        """Recreate the jobs a previous run left (``QueueStore.load``'s result).

        Waiting jobs are queued again with fresh ids numbered after the highest id in
        ``restored`` (and in this queue), so no id is ever used twice. Interrupted jobs keep
        their ids and go to ``interrupted``; they are never queued here.

        Args:
            restored: what the store loaded.
            paused: True to restore into a paused queue (the "restore paused" setting);
                otherwise the paused state is left as it is.

        Returns:
            The recreated waiting jobs, in order (not yet submitted).
        """
        if paused:
            self._paused = True
        self._skip_ids_past(j.job_id for j in [*restored.waiting, *restored.interrupted])
        known = {j.job_id for j in self._interrupted}
        for stored in restored.interrupted:
            if stored.job_id not in known:
                self._interrupted.append(_job_from(stored, stored.job_id))
                known.add(stored.job_id)
        jobs = [_job_from(stored, self._new_id()) for stored in restored.waiting]
        self._pending.extend(jobs)
        self._persist()
        return jobs

    def requeue_interrupted(self, job_id: str) -> Job:
        """Queue an interrupted job again (at the end, with a fresh id).

        Raises:
            KeyError: ``job_id`` is not an interrupted job.
        """
        old = self._take_interrupted(job_id)
        job = Job(self._new_id(), old.request)
        self._pending.append(job)
        self._persist()
        return job

    def dismiss_interrupted(self, job_id: str) -> Job | None:
        """Forget an interrupted job; returns it, or None when there is no such job."""
        try:
            job = self._take_interrupted(job_id)
        except KeyError:
            return None
        self._persist()
        return job

    def shutdown(self) -> list[Job]:
        """The app is closing: keep the queue for the next start, then cancel everything.

        The running jobs are stored at the head of the waiting jobs (a clean close is not a
        crash, so they run again next time), then the store is detached so the cancellations
        that follow (and the worker's late signals) do not erase the saved queue.

        Returns:
            Every job cancelled (as ``cancel_all``).
        """
        self._persist(closing=True)
        self._store = None
        return self.cancel_all()

    # -- helpers ----------------------------------------------------------------------------
    def _new_id(self) -> str:
        return f"job-{next(self._ids)}"

    def _skip_ids_past(self, job_ids: Iterable[str]) -> None:
        highest = 0
        for job_id in [*job_ids, *(j.job_id for j in self._all())]:
            match = _ID_NUMBER.match(job_id)
            if match:
                highest = max(highest, int(match.group(1)))
        upcoming = next(self._ids)
        self._ids = itertools.count(max(upcoming, highest + 1))

    def _all(self) -> list[Job]:
        return [*self._running, *self._pending, *self._interrupted]

    def _take_interrupted(self, job_id: str) -> Job:
        job = next((j for j in self._interrupted if j.job_id == job_id), None)
        if job is None:
            raise KeyError(job_id)
        self._interrupted.remove(job)
        return job

    def _persist(self, closing: bool = False) -> None:
        """Save the queue (cancelled jobs are left out); a failure is kept in ``save_error``.

        ``closing`` stores the running jobs as the first waiting ones (see ``shutdown``).

        The store records one running job; any other running job is stored as interrupted,
        which is exactly what every running job becomes when the file is loaded again.
        """
        if self._store is None:
            return
        waiting = self._pending
        running = [j for j in self._running if not j.cancelled]
        if closing:
            waiting, running = [*running, *waiting], []
        try:
            self._store.save(
                [j.entry() for j in waiting if not j.cancelled],
                running[-1].entry() if running else None,
                [j.entry() for j in [*self._interrupted, *running[:-1]]],
            )
        except OSError as exc:
            self._save_error = f"Could not save the queue: {exc.strerror or exc}"
        else:
            self._save_error = None


def _job_from(stored: StoredJob, job_id: str) -> Job:
    return Job(job_id, stored.request, created_at=stored.created)
