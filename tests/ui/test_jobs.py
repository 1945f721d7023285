"""JobQueue persistence: saved on every change, restored after a restart, interrupted jobs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from desktop.engine.queue_store import QueueStore, RestoredQueue, StoredJob
from desktop.engine.request import GenerationRequest
from desktop.ui.jobs import JobQueue


def _request(prompt: str = "p") -> GenerationRequest:
    return GenerationRequest(prompt=prompt, model="m", width=64, height=64, seed=1)


@pytest.fixture
def store(tmp_path: Path) -> QueueStore:
    return QueueStore(tmp_path / "queue.json")


def _on_disk(store: QueueStore) -> list[tuple[str, str, str]]:
    """(id, state, prompt) per entry, read straight from the file."""
    data = json.loads(store.path.read_text(encoding="utf-8"))
    return [(e["id"], e["state"], e["request"]["prompt"]) for e in data["jobs"]]


def _restart(store: QueueStore, paused: bool = False) -> tuple[JobQueue, list]:
    jobs = JobQueue(QueueStore(store.path))
    return jobs, jobs.restore(jobs.store.load(), paused=paused)  # type: ignore[union-attr]


def test_without_a_store_nothing_is_written(sandstorm_home: Path):
    jobs = JobQueue()
    jobs.mark_started(jobs.add(_request()).job_id)
    assert jobs.store is None and not sandstorm_home.exists()


def test_every_change_is_saved(store: QueueStore):
    jobs = JobQueue(store)
    a, b, c, d = (jobs.add(_request(x)) for x in "abcd")
    assert _on_disk(store) == [(j.job_id, "waiting", j.request.prompt) for j in (a, b, c, d)]
    jobs.mark_started(a.job_id)
    assert _on_disk(store)[0] == (a.job_id, "running", "a")
    jobs.remove(b.job_id)
    assert [e[0] for e in _on_disk(store)] == [a.job_id, c.job_id, d.job_id]
    jobs.mark_done(a.job_id)
    assert [e[0] for e in _on_disk(store)] == [c.job_id, d.job_id]
    jobs.mark_started(c.job_id)
    jobs.cancel_current()  # a cancelled job is no longer stored as running
    assert _on_disk(store) == [(d.job_id, "waiting", "d")]
    jobs.mark_done(d.job_id)  # a job can be dropped while still waiting, too
    assert _on_disk(store) == []
    jobs.add(_request("e"))
    jobs.cancel_all()
    assert _on_disk(store) == []
    assert jobs.save_error is None


def test_a_failed_save_is_reported_not_raised(store: QueueStore, monkeypatch):
    jobs = JobQueue(store)

    def full(*_args, **_kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store, "save", full)
    job = jobs.add(_request())
    assert jobs.pending == [job] and "No space left" in (jobs.save_error or "")
    monkeypatch.undo()
    jobs.remove(job.job_id)
    assert jobs.save_error is None


def test_restore_runs_waiting_jobs_and_keeps_the_running_one_interrupted(store: QueueStore):
    old = JobQueue(store)
    first, second, third = (old.add(_request(x)) for x in ("crashy", "b", "c"))
    old.mark_started(first.job_id)  # ... and the process dies here

    jobs, restored = _restart(store)
    assert not jobs.paused
    assert [j.request for j in restored] == [second.request, third.request]
    assert jobs.pending == restored and jobs.running is None
    assert [(j.job_id, j.request.prompt) for j in jobs.interrupted] == [(first.job_id, "crashy")]
    # Only the waiting jobs are handed to the worker, each once.
    assert jobs.take_submittable() == restored
    assert jobs.take_submittable() == []
    assert all(j.submitted for j in restored)
    # The interrupted job is stored as such, so it survives another restart until dismissed.
    assert ("interrupted" in {e[1] for e in _on_disk(store)}) and len(_on_disk(store)) == 3
    again, _ = _restart(store)
    assert [j.job_id for j in again.interrupted] == [first.job_id]
    assert again.take_submittable()[0].request == second.request


def test_restore_keeps_creation_times(store: QueueStore):
    old = JobQueue(store)
    job = old.add(_request())
    _, restored = _restart(store)
    assert restored[0].created_at == job.created_at


def test_restore_paused_submits_nothing_until_resumed(store: QueueStore):
    old = JobQueue(store)
    for x in "abc":
        old.add(_request(x))
    jobs, restored = _restart(store, paused=True)
    assert jobs.paused and len(restored) == 3
    assert jobs.take_submittable() == []
    late = jobs.add(_request("added while paused"))
    assert jobs.take_submittable() == []
    jobs.resume()
    assert not jobs.paused
    assert jobs.take_submittable() == [*restored, late]
    jobs.pause()
    assert jobs.paused and jobs.take_submittable() == []


def test_take_submittable_skips_removed_and_already_submitted_jobs():
    jobs = JobQueue()
    a, b, c = (jobs.add(_request(x)) for x in "abc")
    assert jobs.take_submittable() == [a, b, c]
    d = jobs.add(_request("d"))
    e = jobs.add(_request("e"))
    jobs.remove(d.job_id)
    assert jobs.take_submittable() == [e]


def test_restored_ids_continue_after_the_highest_number(store: QueueStore):
    old = JobQueue(store)
    jobs_ = [old.add(_request(str(i))) for i in range(12)]  # job-1 .. job-12
    for job in jobs_[:10]:
        old.remove(job.job_id)
    old.mark_started(jobs_[10].job_id)  # job-11 running, job-12 waiting
    jobs, restored = _restart(store)
    assert [j.job_id for j in jobs.interrupted] == ["job-11"]
    assert [j.job_id for j in restored] == ["job-13"]
    assert jobs.add(_request()).job_id == "job-14"
    assert jobs.requeue_interrupted("job-11").job_id == "job-15"


def test_restore_into_a_used_queue_does_not_clash():
    jobs = JobQueue()
    jobs.add(_request())
    jobs.add(_request())
    restored = RestoredQueue()
    restored.waiting.append(_stored("job-1"))
    restored.interrupted.append(_stored("weird-id"))
    back = jobs.restore(restored, paused=False)
    ids = [j.job_id for j in jobs.pending]
    assert len(set(ids)) == len(ids) == 3 and back[0].job_id == "job-3"
    jobs.restore(restored, paused=False)  # the same interrupted job is not listed twice
    assert [j.job_id for j in jobs.interrupted] == ["weird-id"]


def _stored(job_id: str) -> StoredJob:
    return StoredJob(job_id, _request(job_id), 0.0, "waiting")


def test_requeue_and_dismiss_interrupted_jobs(store: QueueStore):
    old = JobQueue(store)
    for x in ("one", "two", "waiting"):
        old.add(_request(x))
    old.mark_started("job-1")
    old.mark_done("job-1")
    old.mark_started("job-2")  # crash while job-2 runs
    first, _ = _restart(store)
    first.mark_started(first.take_submittable()[0].job_id)  # and crash again on the next
    jobs, restored = _restart(store)
    assert restored == []
    assert [j.request.prompt for j in jobs.interrupted] == ["two", "waiting"]
    two, waiting = jobs.interrupted

    job = jobs.requeue_interrupted(two.job_id)
    assert job.request == two.request and jobs.pending == [job] and not job.submitted
    assert jobs.take_submittable() == [job]
    assert [j.job_id for j in jobs.interrupted] == [waiting.job_id]
    assert (job.job_id, "waiting", "two") in _on_disk(store)
    with pytest.raises(KeyError):
        jobs.requeue_interrupted(two.job_id)

    assert jobs.dismiss_interrupted(waiting.job_id) is waiting
    assert jobs.dismiss_interrupted(waiting.job_id) is None
    assert jobs.interrupted == []
    assert _on_disk(store) == [(job.job_id, "waiting", "two")]
    # cancel_all leaves interrupted jobs alone; they are not queued.
    jobs.restore(RestoredQueue(interrupted=[_stored("job-99")]), paused=False)
    jobs.cancel_all()
    assert [j.job_id for j in jobs.interrupted] == ["job-99"]


def test_shutdown_keeps_the_queue_for_the_next_start(store: QueueStore):
    jobs = JobQueue(store)
    a, b, c = (jobs.add(_request(x)) for x in "abc")
    jobs.mark_started(a.job_id)
    jobs.remove(c.job_id)
    cancelled = jobs.shutdown()
    assert cancelled == [a, b] and all(j.cancelled for j in cancelled) and len(jobs) == 1
    # The worker's late signals after closing do not erase what was saved.
    jobs.mark_done(a.job_id)
    jobs.mark_done(b.job_id)
    assert _on_disk(store) == [(a.job_id, "waiting", "a"), (b.job_id, "waiting", "b")]
    again, restored = _restart(store)
    assert [j.request.prompt for j in restored] == ["a", "b"] and again.interrupted == []


def test_shutdown_does_not_keep_a_cancelled_running_job(store: QueueStore):
    jobs = JobQueue(store)
    a = jobs.add(_request("a"))
    jobs.mark_started(a.job_id)
    jobs.cancel_current()
    jobs.shutdown()
    assert _on_disk(store) == []


def test_restore_with_a_problem_still_restores_what_it_can(store: QueueStore):
    store.path.write_text("{broken", encoding="utf-8")
    jobs = JobQueue(QueueStore(store.path))
    restored = jobs.store.load()  # type: ignore[union-attr]
    assert restored.problem and jobs.restore(restored, paused=False) == []


def test_several_jobs_run_at_once_and_the_last_started_is_current():
    jobs = JobQueue()
    a, b, c, d = (jobs.add(_request(x)) for x in "abcd")
    jobs.mark_started(a.job_id)
    jobs.mark_started(b.job_id)
    assert jobs.running_jobs == [a, b] and jobs.running is b and len(jobs) == 4
    assert jobs.is_current(b.job_id) and not jobs.is_current(a.job_id)
    assert jobs.is_running(a.job_id) and not jobs.is_running(c.job_id)
    assert jobs.get(a.job_id) is a and jobs.get(c.job_id) is c
    # Cancelling one running job leaves the other alone; both stay listed until confirmed.
    assert jobs.cancel(a.job_id) is a and a.cancelled and not b.cancelled
    assert jobs.running_jobs == [a, b]
    assert jobs.cancel(d.job_id) is d and d.cancelled and jobs.pending == [c]  # waiting: removed
    assert jobs.cancel("job-99") is None
    assert jobs.mark_done(b.job_id) is b and jobs.running is a  # the bar moves on to a
    jobs.mark_started(c.job_id)
    assert jobs.running is c and jobs.cancel_current() is c and not jobs.is_current(c.job_id)
    assert jobs.cancel_all() == [a, c]
    jobs.mark_done(a.job_id)
    jobs.mark_done(c.job_id)
    assert jobs.running is None and len(jobs) == 0


def test_several_running_jobs_come_back_interrupted_after_a_crash(store: QueueStore):
    old = JobQueue(store)
    a, b, _c = (old.add(_request(x)) for x in "abc")
    old.mark_started(a.job_id)
    old.mark_started(b.job_id)  # ... and the process dies with both running
    jobs, restored = _restart(store)
    assert sorted(j.job_id for j in jobs.interrupted) == [a.job_id, b.job_id]
    assert [j.request.prompt for j in restored] == ["c"]
    # A cancelled running job is not kept; a clean close keeps both running jobs first.
    again = JobQueue(QueueStore(store.path))
    x, y, z = (again.add(_request(p)) for p in "xyz")
    again.mark_started(x.job_id)
    again.mark_started(y.job_id)
    again.cancel(x.job_id)
    assert [e[0] for e in _on_disk(store)] == [y.job_id, z.job_id]
    again.mark_started(z.job_id)
    again.shutdown()
    assert _on_disk(store) == [(y.job_id, "waiting", "y"), (z.job_id, "waiting", "z")]
