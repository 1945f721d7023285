"""The worker thread on its own, with a scripted backend (fast, no torch) and the tiny model."""

from __future__ import annotations

import threading
from pathlib import Path

from PIL import Image

from desktop.engine.backend import Backend
from desktop.engine.devices import ComputeOptions
from desktop.engine.errors import GenerationError, ModelError
from desktop.engine.progress import Progress, StepUpdate
from desktop.engine.request import GenerationRequest
from desktop.ui.jobs import JobQueue
from desktop.ui.worker import GenerationWorker


def _job(jobs: JobQueue, prompt: str = "p", steps: int = 3):
    request = GenerationRequest(prompt=prompt, model="m", steps=steps, width=64, height=64, seed=5)
    return jobs.add(request)


class ScriptedBackend:
    """A ``Backend``: previews per step, honours cancel, fails on request."""

    name = "scripted"

    def __init__(self) -> None:
        self.step_gate = threading.Event()
        self.step_gate.set()
        self.preloaded: list[str] = []
        self.closed = 0

    def preload(self, model: str, progress: Progress) -> None:
        self.preloaded.append(model)

    def close(self) -> None:
        self.closed += 1

    def generate(self, request, progress: Progress):
        if request.prompt == "fail":
            raise GenerationError("Out of memory at 64×64 with batch 1. Try a smaller size.")
        if request.prompt == "crash":
            raise RuntimeError("a bug")
        for step in range(1, request.steps + 1):
            self.step_gate.wait(5)
            progress.check_cancelled()
            preview = Image.new("RGB", (8, 8), (step * 20, 0, 0))
            progress.set_progress(
                StepUpdate(progress.job_id, step, request.steps, 0.01 * step, preview)
            )
        progress.check_cancelled()
        raise AssertionError("every job that gets this far is cancelled by the test")


def test_engine_start_failure_is_reported_and_jobs_fail_cleanly(qtbot):
    def broken(_device: str, _options: ComputeOptions):
        raise ModelError("No usable device was found.")

    worker = GenerationWorker(backend_factory=broken)
    jobs = JobQueue()
    job = _job(jobs)
    failures: list[tuple] = []
    worker.engine_failed.connect(lambda message: failures.append(("engine", message)))
    worker.job_failed.connect(lambda job_id, message: failures.append((job_id, message)))
    worker.submit(job)
    worker.start()
    qtbot.waitUntil(lambda: any(f[0] == job.job_id for f in failures), timeout=10_000)
    # The engine is retried for the job, so its failure is reported again before the job's.
    assert failures[0] == ("engine", "No usable device was found.")
    assert failures[-1][0] == job.job_id and failures[-1][1].endswith(".")
    assert worker.stop(5000)


def test_failures_and_cancels_do_not_stop_the_worker(qtbot, tmp_path):
    engine = ScriptedBackend()
    assert isinstance(engine, Backend)
    worker = GenerationWorker(output_dir=tmp_path, backend_factory=lambda _d, _o: engine)
    jobs = JobQueue()
    events: list[tuple] = []
    worker.job_failed.connect(lambda j, m: events.append(("failed", j, m)))
    worker.job_cancelled.connect(lambda j: events.append(("cancelled", j)))
    worker.step_previewed.connect(
        lambda j, s, t, e, img: events.append(("step", j, s, img.width()))
    )
    fail, crash, skipped, running = (_job(jobs, p) for p in ("fail", "crash", "skip", "run"))
    skipped.cancel()
    engine.step_gate.clear()
    for job in (fail, crash, skipped, running):
        worker.submit(job)
    worker.start()
    qtbot.waitUntil(lambda: len(events) >= 3, timeout=10_000)
    running.cancel()
    engine.step_gate.set()
    qtbot.waitUntil(lambda: ("cancelled", running.job_id) in events, timeout=10_000)
    assert events[0] == (
        "failed",
        fail.job_id,
        "Out of memory at 64×64 with batch 1. Try a smaller size.",
    )
    assert events[1][:2] == ("failed", crash.job_id) and "a bug" in events[1][2]
    assert events[2] == ("cancelled", skipped.job_id)
    assert all(e[0] != "step" or e[3] == 8 for e in events)
    assert worker.isRunning()
    assert worker.stop(5000)
    assert not worker.isRunning()


def test_tiny_model_previews_every_step_and_saves(qtbot, tiny_sd: Path, tmp_path: Path):
    worker = GenerationWorker(device="cpu", output_dir=tmp_path / "out")
    jobs = JobQueue()
    request = GenerationRequest(
        prompt="dunes", model=str(tiny_sd), steps=2, width=64, height=64, batch_size=2
    )
    job = jobs.add(request)
    statuses: list[str] = []
    steps: list[tuple] = []
    worker.status_changed.connect(lambda _j, text: statuses.append(text))
    worker.step_previewed.connect(lambda j, s, t, e, img: steps.append((j, s, t, img.isNull())))
    with qtbot.waitSignal(worker.job_finished, timeout=60_000) as finished:
        worker.submit(job)
        worker.start()
    assert finished.args[0] == job.job_id
    assert len(finished.args[1]) == 2
    assert steps == [(job.job_id, 1, 2, False), (job.job_id, 2, 2, False)]
    assert statuses[0] == "Starting engine…"
    assert any(s.startswith("Loading model") for s in statuses)
    assert len(list((tmp_path / "out").rglob("*.png"))) == 2
    assert worker.stop(5000)


def test_preload_and_device_change_go_through_the_backend(qtbot, tmp_path):
    backends: list[ScriptedBackend] = []
    made_for: list[tuple[str, ComputeOptions]] = []

    def factory(device: str, options: ComputeOptions) -> ScriptedBackend:
        backends.append(ScriptedBackend())
        made_for.append((device, options))
        return backends[-1]

    worker = GenerationWorker(device="cpu", output_dir=tmp_path, backend_factory=factory)
    statuses: list[str] = []
    worker.status_changed.connect(lambda _j, text: statuses.append(text))
    worker.start()
    with qtbot.waitSignal(
        worker.status_changed, timeout=10_000, check_params_cb=lambda j, t: t == "Ready."
    ):
        worker.preload("model-a")
    assert backends[0].preloaded == ["model-a"]
    worker.set_compute("cuda:1")
    with qtbot.waitSignal(
        worker.status_changed, timeout=10_000, check_params_cb=lambda j, t: t == "Ready."
    ):
        worker.preload("model-b")
    # A new device gets a new backend; the old one released what it held.
    assert len(backends) == 2 and backends[0].closed == 1 and backends[1].preloaded == ["model-b"]
    # The same settings again keep the backend; new performance settings rebuild it.
    bf16 = ComputeOptions(precision="bf16", memory_mode="tiling")
    for options in (None, bf16):
        worker.set_compute("cuda:1", options)
        with qtbot.waitSignal(
            worker.status_changed, timeout=10_000, check_params_cb=lambda j, t: t == "Ready."
        ):
            worker.preload("model-c")
    assert made_for == [("cpu", ComputeOptions()), ("cuda:1", ComputeOptions()), ("cuda:1", bf16)]
    assert backends[1].closed == 1 and backends[1].preloaded == ["model-b", "model-c"]
    assert worker.stop(5000)
