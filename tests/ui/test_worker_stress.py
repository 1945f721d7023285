"""Hardening: 100 queued jobs with random cancels all end, finished or cancelled, no deadlock."""

from __future__ import annotations

import random
from pathlib import Path

from desktop.engine.request import GenerationRequest
from desktop.ui.jobs import JobQueue
from desktop.ui.worker import GenerationWorker


def test_hundred_queued_jobs_with_random_cancels(qtbot, tiny_sd: Path, tmp_path: Path):
    rng = random.Random(1234)
    worker = GenerationWorker(device="cpu", output_dir=tmp_path / "out")
    jobs = JobQueue()
    ended: dict[str, str] = {}
    started: list[str] = []
    worker.job_started.connect(started.append)
    worker.job_finished.connect(lambda job_id, saved: ended.setdefault(job_id, "finished"))
    worker.job_cancelled.connect(lambda job_id: ended.setdefault(job_id, "cancelled"))
    worker.job_failed.connect(
        lambda job_id, message: ended.setdefault(job_id, f"failed: {message}")
    )

    all_jobs = []
    for i in range(100):
        request = GenerationRequest(
            prompt=f"job {i}",
            model=str(tiny_sd),
            sampler="Euler",
            steps=rng.choice((1, 2, 3)),
            width=64,
            height=64,
            seed=i,
        )
        job = jobs.add(request)
        all_jobs.append(job)
        worker.submit(job)
    # Some are cancelled before they start, some while running (when their start is seen).
    doomed_early = set(rng.sample(range(100), 20))
    for index in doomed_early:
        all_jobs[index].cancel()
    doomed_running = {job.job_id for job in rng.sample(all_jobs, 20)}

    def cancel_when_started(job_id: str) -> None:
        if job_id in doomed_running:
            next(j for j in all_jobs if j.job_id == job_id).cancel()

    worker.job_started.connect(cancel_when_started)
    worker.start()
    try:
        qtbot.waitUntil(lambda: len(ended) == 100, timeout=240_000)
    finally:
        assert worker.stop(10_000)
    outcomes = {job.job_id: ended[job.job_id] for job in all_jobs}
    assert all(v in ("finished", "cancelled") for v in outcomes.values()), outcomes
    for index in doomed_early:
        assert outcomes[all_jobs[index].job_id] == "cancelled"
    finished = [j for j in all_jobs if outcomes[j.job_id] == "finished"]
    assert finished and all(not j.cancelled for j in finished)
    # Jobs ran in submission order.
    order = [job.job_id for job in all_jobs if job.job_id in started]
    assert started == order
    pngs = list((tmp_path / "out").rglob("*.png"))
    assert len(pngs) == len(finished)
