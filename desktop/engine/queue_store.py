"""The job queue on disk, so waiting jobs survive a close or a crash (no Qt here).

The window's ``JobQueue`` calls ``QueueStore.save`` on every change. The file is versioned
JSON written atomically: a temporary file in the same folder is written, flushed and fsynced,
then ``os.replace``-d over the old one and the folder is fsynced where the platform allows,
so a crash at any moment leaves either the previous state or the new one, never a mix.

Each entry records the job id, its state, the request's ``to_dict()`` and when the job was
created (wall-clock seconds). States:

* ``waiting``: queued and not started; restored as waiting (and run unless the user chose
  "restore paused").
* ``running``: the job the worker had when the file was last written. If the process died
  with the file in that state, the job is restored as *interrupted* and never rerun
  automatically, so a job that crashes the app cannot crash it again on every start.
* ``interrupted``: restored from an earlier crash and not dismissed yet; stays interrupted.

``load`` never raises: a corrupt, truncated, unreadable or newer-version file is moved aside
to ``queue.json.corrupt-<timestamp>`` (nothing is silently lost) and an empty queue with a
``problem`` message is returned; an entry whose request no longer validates is skipped with a
message naming it, and a copy of the file is kept as ``queue.json.skipped-<timestamp>``.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from desktop.engine import paths
from desktop.engine.durable import fsync_folder
from desktop.engine.errors import RequestError
from desktop.engine.request import GenerationRequest

#: Version of the queue file; a newer one is moved aside, not misread.
QUEUE_VERSION = 1
WAITING, RUNNING, INTERRUPTED = "waiting", "running", "interrupted"
STATES = (WAITING, RUNNING, INTERRUPTED)
_TMP_PREFIX = ".queue-"
_TMP_SUFFIX = ".tmp"

#: What ``save`` accepts for one job: ``(job_id, request)`` or ``(job_id, request, created)``
#: with ``created`` in wall-clock seconds (``time.time()``). Without it, the time the store
#: first saw the job id is recorded (and kept for later saves).
JobEntry = tuple[str, GenerationRequest] | tuple[str, GenerationRequest, float]


def queue_file() -> Path:
    """The default queue file in the per-user data folder."""
    return paths.data_dir() / "queue.json"


@dataclass(frozen=True)
class StoredJob:
    """One job read back from the queue file."""

    job_id: str
    request: GenerationRequest
    created: float
    state: str = WAITING


@dataclass
class RestoredQueue:
    """What ``QueueStore.load`` found.

    Attributes:
        waiting: jobs that had not started, in queue order.
        interrupted: jobs that were running when the process died (or were still
            interrupted from an earlier crash); they must not be rerun automatically.
        problems: one message per thing that could not be restored (empty when all was
            well); ``problem`` joins them for a message bar.
        moved_to: where an unusable or partly usable file was put aside, if anywhere.
    """

    waiting: list[StoredJob] = field(default_factory=list)
    interrupted: list[StoredJob] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    moved_to: Path | None = None

    @property
    def problem(self) -> str | None:
        return " ".join(self.problems) if self.problems else None

    def __bool__(self) -> bool:
        return bool(self.waiting or self.interrupted)


class QueueStore:
    """Reads and writes the queue file. Not thread-safe: the GUI thread owns it."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = Path(path) if path is not None else queue_file()
        # job id -> (request, its JSON text): requests are frozen, so an unchanged one is
        # not serialised again on the next save (the queue is saved on every change).
        self._encoded: dict[str, tuple[GenerationRequest, str]] = {}
        self._first_seen: dict[str, float] = {}

    # -- writing ----------------------------------------------------------------------------
    def save(
        self,
        waiting: Sequence[JobEntry],
        running: JobEntry | None = None,
        interrupted: Sequence[JobEntry] = (),
    ) -> None:
        """Atomically replace the file with this queue state.

        Args:
            waiting: queued jobs in order, each ``(job_id, request[, created])``.
            running: the job the worker is running now, if any.
            interrupted: jobs restored as interrupted and not dismissed yet.

        Raises:
            OSError: the file could not be written; the previous file is left intact and
                no temporary file is left behind.
        """
        entries: list[tuple[str, JobEntry]] = [(INTERRUPTED, e) for e in interrupted]
        if running is not None:
            entries.append((RUNNING, running))
        entries.extend((WAITING, e) for e in waiting)
        now = time.time()
        seen: set[str] = set()
        parts = []
        for state, entry in entries:
            job_id, request = entry[0], entry[1]
            created = entry[2] if len(entry) > 2 else self._first_seen.setdefault(job_id, now)
            seen.add(job_id)
            parts.append(
                f'{{"id":{json.dumps(job_id)},"state":"{state}",'
                f'"created":{float(created)!r},"request":{self._encode(job_id, request)}}}'
            )
        for cache in (self._encoded, self._first_seen):
            for stale in cache.keys() - seen:
                del cache[stale]
        text = (
            f'{{"version":{QUEUE_VERSION},"saved":{now!r},"jobs":[\n' + ",\n".join(parts) + "\n]}\n"
        )
        self._write(text)

    def _encode(self, job_id: str, request: GenerationRequest) -> str:
        cached = self._encoded.get(job_id)
        if cached is not None and cached[0] is request:
            return cached[1]
        text = json.dumps(request.to_dict(), ensure_ascii=False, sort_keys=True)
        self._encoded[job_id] = (request, text)
        return text

    def _write(self, text: str) -> None:
        folder = self.path.parent
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, suffix=_TMP_SUFFIX, dir=folder)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        fsync_folder(folder)

    def clear(self) -> None:
        """Forget the stored queue (the file is deleted)."""
        self._encoded.clear()
        self._first_seen.clear()
        self.path.unlink(missing_ok=True)

    # -- reading ----------------------------------------------------------------------------
    def load(self) -> RestoredQueue:
        """Read the stored queue; never raises (see the module docstring)."""
        self._remove_stale_temporaries()
        restored = RestoredQueue()
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return restored
        except OSError as exc:
            return self._set_aside(restored, f"could not be read ({exc.strerror or exc})")
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return self._set_aside(restored, "is damaged (not valid JSON; truncated?)")
        if not isinstance(data, dict) or not isinstance(data.get("jobs"), list):
            return self._set_aside(restored, "is not a queue file")
        version = data.get("version")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            return self._set_aside(restored, f"has an unknown version ({version!r})")
        if version > QUEUE_VERSION:
            return self._set_aside(
                restored, f"was written by a newer Sandstorm (queue version {version})"
            )
        seen: set[str] = set()
        for index, entry in enumerate(data["jobs"], start=1):
            job, reason = _read_entry(entry)
            name = _entry_name(entry, index)
            if job is not None and job.job_id in seen:
                job, reason = None, "its id is used twice"
            if job is None:
                restored.problems.append(f"Skipped queued {name}: {reason}")
                continue
            seen.add(job.job_id)
            if job.state == WAITING:
                restored.waiting.append(job)
            else:
                restored.interrupted.append(_with_state(job, INTERRUPTED))
        if restored.problems:
            restored.moved_to = self._keep_copy("skipped")
            if restored.moved_to is not None:
                restored.problems.append(f"The original queue file is kept as {restored.moved_to}.")
        return restored

    def _set_aside(self, restored: RestoredQueue, why: str) -> RestoredQueue:
        target = _unused(self.path.with_name(f"{self.path.name}.corrupt-{_stamp()}"))
        try:
            os.replace(self.path, target)
        except OSError as exc:
            restored.problems.append(
                f"The saved queue {why} and could not be moved aside ({exc.strerror or exc}); "
                "no jobs were restored."
            )
            return restored
        restored.moved_to = target
        restored.problems.append(
            f"The saved queue {why}; no jobs were restored. It was kept as {target}."
        )
        return restored

    def _keep_copy(self, tag: str) -> Path | None:
        target = _unused(self.path.with_name(f"{self.path.name}.{tag}-{_stamp()}"))
        try:
            target.write_bytes(self.path.read_bytes())
        except OSError:
            return None
        return target

    def _remove_stale_temporaries(self) -> None:
        """Temporary files a crash left mid-write (the real file is intact beside them)."""
        try:
            stale = list(self.path.parent.glob(f"{_TMP_PREFIX}*{_TMP_SUFFIX}"))
        except OSError:
            return
        for path in stale:
            with contextlib.suppress(OSError):
                path.unlink()


def _read_entry(entry: Any) -> tuple[StoredJob | None, str]:
    """One job from the file, or None and why it was skipped."""
    if not isinstance(entry, dict):
        return None, "the entry is not an object"
    job_id, state, created = entry.get("id"), entry.get("state"), entry.get("created")
    if not isinstance(job_id, str) or not job_id:
        return None, "it has no id"
    if state not in STATES:
        return None, f"unknown state {state!r}"
    if not isinstance(created, (int, float)) or isinstance(created, bool):
        created = 0.0
    try:
        request = GenerationRequest.from_dict(entry.get("request"))  # type: ignore[arg-type]
    except RequestError as exc:
        return None, str(exc)
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        return None, f"its settings could not be read ({exc})"
    return StoredJob(job_id, request, float(created), state), ""


def _entry_name(entry: Any, index: int) -> str:
    """How a skipped entry is named in a message: its id and prompt when they can be read."""
    if not isinstance(entry, dict):
        return f"job #{index}"
    job_id = entry.get("id")
    name = job_id if isinstance(job_id, str) and job_id else f"job #{index}"
    request = entry.get("request")
    prompt = request.get("prompt") if isinstance(request, dict) else None
    if isinstance(prompt, str) and prompt.strip():
        short = " ".join(prompt.split())
        short = short if len(short) <= 40 else short[:39] + "…"
        name += f" (“{short}”)"
    return name


def _with_state(job: StoredJob, state: str) -> StoredJob:
    return StoredJob(job.job_id, job.request, job.created, state)


def _stamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S")


def _unused(path: Path) -> Path:
    candidate, n = path, 1
    while candidate.exists():
        candidate = path.with_name(f"{path.name}-{n}")
        n += 1
    return candidate


def entries(jobs: Iterable[StoredJob]) -> list[JobEntry]:
    """``save`` entries for stored jobs (keeps their ids and creation times)."""
    return [(j.job_id, j.request, j.created) for j in jobs]
