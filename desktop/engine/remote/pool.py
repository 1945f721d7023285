"""Many ComfyUI servers, one queue: jobs wait here and each server takes the next it can run.

``ServerPool`` keeps the jobs in submission order. A server takes a job when it is online,
has fewer than ``slots`` jobs in flight (two by default: the next prompt already waits on
the server while one runs, so it is never idle between jobs) and can run it — it has the
checkpoint, LoRAs, VAE and ControlNets and every setting (``comfy_graph.unsupported``).
Among the servers that could take a job, one whose last job used the same checkpoint (so
it is loaded there) comes first, then the least busy one.

Nothing is lost when a server fails. A ``ServerError`` from a job (refused connection,
timeout, restart, garbage answers) puts the job back at the front of the queue with a status
saying why, and marks the server offline; offline servers are probed again with growing
delays (``RETRY_S``) and take jobs once they answer. A job that no server can run right now
waits, saying so; it fails only when every server has answered and none can run it (the
message says why). A job the server refused (``ServerRejected``) or that failed while
executing fails with that message: running it elsewhere would fail the same way.

Everything is plain threads (no Qt): a scheduler thread, a thread per running job and a
thread per probe; ``close`` stops them all. Callbacks run on those threads.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from desktop.engine.errors import Cancelled, SandstormError
from desktop.engine.progress import Progress
from desktop.engine.remote.comfy_client import ComfyClient, ServerConfig, ServerError, ServerModels
from desktop.engine.remote.comfy_graph import match_name, unsupported
from desktop.engine.remote.server_job import run_server_job
from desktop.engine.request import GenerationRequest

if TYPE_CHECKING:
    from desktop.engine.generate import GenerationResult

log = logging.getLogger(__name__)

#: Delays between probes of a server that does not answer (seconds; the last repeats).
RETRY_S = (1.0, 2.0, 5.0, 10.0, 30.0)
#: Jobs in flight on one server at most.
SLOTS = 2


@dataclass
class RemoteJob:
    """A job for the pool, with the callbacks that report what became of it.

    ``on_started(server label)`` runs each time a server takes it (again, after a failure
    elsewhere); exactly one of ``on_done(result, server label)``, ``on_failed(message)``
    and ``on_cancelled()`` runs at the end.
    """

    job_id: str
    request: GenerationRequest
    progress: Progress
    on_started: Callable[[str], None] = lambda _label: None
    on_done: Callable[[GenerationResult, str], None] = lambda _r, _label: None
    on_failed: Callable[[str], None] = lambda _message: None
    on_cancelled: Callable[[], None] = lambda: None
    #: Servers that failed on this job (their labels), in order.
    failures: list[str] = field(default_factory=list)


@dataclass
class ServerState:
    """What the pool knows of one server."""

    config: ServerConfig
    client: Any
    online: bool = False
    probed: bool = False
    probing: bool = False
    models: ServerModels | None = None
    version: str = ""
    in_flight: int = 0
    loaded: str = ""
    error: str = ""
    next_probe: float = 0.0
    reprobe: bool = False
    failures_in_row: int = 0
    jobs_done: int = 0

    @property
    def label(self) -> str:
        return self.config.label


@dataclass(frozen=True)
class ServerStatus:
    """A server as the window shows it."""

    label: str
    url: str
    online: bool
    probed: bool
    version: str
    checkpoints: int
    loras: int
    in_flight: int
    error: str
    jobs_done: int


class ServerPool:
    """Runs jobs on ComfyUI servers; see the module docstring."""

    def __init__(
        self,
        configs: Sequence[ServerConfig],
        slots: int = SLOTS,
        client_factory: Callable[[ServerConfig], Any] = ComfyClient,
        retry_s: Sequence[float] = RETRY_S,
    ) -> None:
        self.slots = slots
        self.retry_s = tuple(retry_s)
        self._servers = [ServerState(config, client_factory(config)) for config in configs]
        self._queue: list[RemoteJob] = []
        self._running: dict[str, tuple[RemoteJob, ServerState]] = {}
        self._threads: set[threading.Thread] = set()
        self._cond = threading.Condition()
        self._closing = False
        self._scheduler = threading.Thread(target=self._schedule, name="server-pool", daemon=True)
        self._scheduler.start()

    # -- the caller's side ----------------------------------------------------------------
    def submit(self, job: RemoteJob) -> None:
        """Queue ``job``; it runs when a server can take it."""
        with self._cond:
            if self._closing:
                raise RuntimeError("the server pool is closed")
            self._queue.append(job)
            self._cond.notify_all()
        job.progress.set_status("Waiting for a server…")

    def cancel(self, job_id: str) -> bool:
        """Stop a job: a waiting one leaves the queue at once, a running one is stopped on
        its server (its ``on_cancelled`` follows). False when the pool does not have it."""
        with self._cond:
            for job in self._queue:
                if job.job_id == job_id:
                    self._queue.remove(job)
                    break
            else:
                running = self._running.get(job_id)
                if running is None:
                    return False
                running[0].progress.cancel()
                return True
        job.progress.cancel()
        job.on_cancelled()
        return True

    def servers(self) -> list[ServerStatus]:
        with self._cond:
            return [
                ServerStatus(
                    s.label,
                    s.config.url,
                    s.online,
                    s.probed,
                    s.version,
                    len(s.models.checkpoints) if s.models else 0,
                    len(s.models.loras) if s.models else 0,
                    s.in_flight,
                    s.error,
                    s.jobs_done,
                )
                for s in self._servers
            ]

    def models(self) -> ServerModels | None:
        """What the online servers have together (None until one has answered)."""
        with self._cond:
            known = [s.models for s in self._servers if s.online and s.models is not None]
        if not known:
            return None
        merged: dict[str, list[str]] = {}
        for models in known:
            for name, values in vars(models).items():
                bucket = merged.setdefault(name, [])
                bucket.extend(v for v in values if v not in bucket)
        return type(known[0])(**{k: tuple(v) for k, v in merged.items()})

    def where(self, job_id: str) -> str:
        """The label of the server running ``job_id`` ("" while it waits or is unknown)."""
        with self._cond:
            running = self._running.get(job_id)
            return running[1].label if running else ""

    def waiting(self) -> int:
        with self._cond:
            return len(self._queue)

    def refresh(self) -> None:
        """Ask every server again for its models (the user added some)."""
        with self._cond:
            for server in self._servers:
                server.next_probe = 0.0
                server.reprobe = True
            self._cond.notify_all()

    def close(self, timeout: float = 30.0) -> bool:
        """Cancel every job (waiting ones report ``on_cancelled``) and stop the threads."""
        with self._cond:
            self._closing = True
            waiting, self._queue = self._queue, []
            for job, _server in self._running.values():
                job.progress.cancel()
            self._cond.notify_all()
        for job in waiting:
            job.progress.cancel()
            job.on_cancelled()
        deadline = time.monotonic() + timeout
        self._scheduler.join(max(0.0, deadline - time.monotonic()))
        with self._cond:
            threads = list(self._threads)
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not self._scheduler.is_alive() and not any(t.is_alive() for t in threads)

    # -- the scheduler ----------------------------------------------------------------------
    def _schedule(self) -> None:
        while True:
            with self._cond:
                if self._closing:
                    return
                self._start_probes()
                self._assign()
                self._cond.wait(timeout=0.25)

    def _start_probes(self) -> None:
        now = time.monotonic()
        for server in self._servers:
            due = (not server.online or server.reprobe) and now >= server.next_probe
            if due and not server.probing:
                server.probing, server.reprobe = True, False
                self._spawn(self._probe, server, name=f"probe {server.label}")

    def _probe(self, server: ServerState) -> None:
        try:
            version = server.client.version()
            models = server.client.models()
        except SandstormError as exc:
            with self._cond:
                server.online, server.probed, server.probing = False, True, False
                server.error = str(exc)
                delay = self.retry_s[min(server.failures_in_row, len(self.retry_s) - 1)]
                server.failures_in_row += 1
                server.next_probe = time.monotonic() + delay
                self._cond.notify_all()
            return
        except Exception as exc:  # a bug must not leave the server "probing" forever
            traceback.print_exc()
            with self._cond:
                server.online, server.probed, server.probing = False, True, False
                server.error = f"unexpected answer: {exc}"
                server.next_probe = time.monotonic() + self.retry_s[-1]
            return
        with self._cond:
            server.online, server.probed, server.probing = True, True, False
            server.models, server.version, server.error = models, version, ""
            server.failures_in_row = 0
            self._cond.notify_all()

    def _assign(self) -> None:
        """Start every waiting job some free server can run, in queue order."""
        for job in list(self._queue):
            if job.progress.cancelled:  # cancelled while it waited here
                self._queue.remove(job)
                self._spawn(job.on_cancelled, name="report")
                continue
            candidates = [
                s
                for s in self._servers
                if s.online and s.in_flight < self.slots and self._can_run(s, job)
            ]
            if not candidates:
                self._report_waiting(job)
                continue
            checkpoint = job.request.model

            def rank(server: ServerState, checkpoint: str = checkpoint) -> tuple[bool, int, int]:
                loaded = bool(server.loaded) and server.loaded == self._checkpoint(
                    server, checkpoint
                )
                return (not loaded, server.in_flight, self._servers.index(server))

            server = min(candidates, key=rank)
            self._queue.remove(job)
            server.in_flight += 1
            server.loaded = self._checkpoint(server, checkpoint) or server.loaded
            self._running[job.job_id] = (job, server)
            self._spawn(self._run, job, server, name=f"job {job.job_id} on {server.label}")

    @staticmethod
    def _checkpoint(server: ServerState, model: str) -> str:
        if server.models is None:
            return ""
        return match_name(model, server.models.checkpoints) or ""

    @staticmethod
    def _can_run(server: ServerState, job: RemoteJob) -> bool:
        return server.models is not None and not unsupported(job.request, server.models)

    def _report_waiting(self, job: RemoteJob) -> None:
        """Say why ``job`` waits, or fail it when no server will ever take it."""
        if all(s.probed and not s.probing for s in self._servers):
            lists = [s.models for s in self._servers if s.online and s.models is not None]
            if lists and len(lists) == len(self._servers):
                able = [m for m in lists if not unsupported(job.request, m)]
                if not able:  # every server answered and none can run it
                    problems = unsupported(job.request, lists[0])
                    online = lists
                    where = "the server" if len(online) == 1 else "any of the servers"
                    self._queue.remove(job)
                    self._spawn(
                        job.on_failed,
                        f"This job cannot run on {where}: {' '.join(problems)}",
                        name="report",
                    )
                    return
        offline = [s for s in self._servers if not s.online]
        if offline and len(offline) == len(self._servers):
            reasons = "; ".join(f"{s.label}: {s.error or 'connecting'}" for s in offline)
            text = f"Waiting for a server (none is reachable; retrying) — {reasons}"
        else:
            text = "Waiting for a free server…"
        if getattr(job, "_last_status", "") != text:
            job._last_status = text  # type: ignore[attr-defined]
            job.progress.set_status(text)

    # -- running ----------------------------------------------------------------------------
    def _spawn(self, target: Callable[..., None], *args: Any, name: str) -> None:
        def body() -> None:
            try:
                target(*args)
            finally:
                with self._cond:
                    self._threads.discard(threading.current_thread())

        thread = threading.Thread(target=body, name=name, daemon=True)
        self._threads.add(thread)
        thread.start()

    def _run(self, job: RemoteJob, server: ServerState) -> None:
        result: GenerationResult | None = None
        failure: str | None = None
        try:
            job.on_started(server.label)
            assert server.models is not None
            result = run_server_job(server.client, job.request, job.progress, server.models)
            with self._cond:
                server.jobs_done += 1
                server.failures_in_row = 0
        except Cancelled:
            pass
        except ServerError as exc:
            if getattr(exc, "retryable", True) and not job.progress.cancelled:
                self._put_back(job, server, exc)
                return
            failure = str(exc)
        except SandstormError as exc:
            failure = str(exc)
        except Exception as exc:  # a bug in one job must not stop the pool
            traceback.print_exc()
            failure = f"The job failed unexpectedly on {server.label}: {exc}"
        with self._cond:
            self._running.pop(job.job_id, None)
            server.in_flight -= 1
            self._cond.notify_all()
        if result is not None:
            job.on_done(result, server.label)
        elif failure is not None:
            job.on_failed(failure)
        else:
            job.on_cancelled()

    def _put_back(self, job: RemoteJob, server: ServerState, exc: ServerError) -> None:
        """The server failed: the job goes back to the front, the server offline."""
        log.info("job %s back in the queue: %s failed: %s", job.job_id, server.label, exc)
        job.failures.append(server.label)
        # Said before the job is back in the queue, so a newer "waiting" status wins.
        job.progress.set_status(f"{server.label} failed ({exc}); the job waits for a server.")
        with self._cond:
            self._running.pop(job.job_id, None)
            server.in_flight -= 1
            server.online = False
            server.loaded = ""
            server.error = str(exc)
            delay = self.retry_s[min(server.failures_in_row, len(self.retry_s) - 1)]
            server.failures_in_row += 1
            server.next_probe = time.monotonic() + delay
            closing = self._closing
            if not closing:
                self._queue.insert(0, job)
            self._cond.notify_all()
        if closing:
            job.on_cancelled()
