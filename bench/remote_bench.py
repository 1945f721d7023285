"""What Sandstorm adds on top of real ComfyUI servers: overhead, preview latency, throughput.

Runs the real ComfyUI (``tests.helpers.comfy_server``; a separate program, never imported)
on the random-weight SD1.5 test checkpoint and measures, in one run:

* **overhead per job**: Sandstorm's time from submitting a request to the pool until the
  finished images are in hand (graph building, upload, websocket, ``/view``, decoding),
  divided by ComfyUI's own execution time of that prompt (``execution_start`` to
  ``execution_success`` in its history). Jobs run one at a time on one server using every
  core. Asked: ≤ 1.05.
* **preview latency**: from the moment a preview frame is read off the websocket to the
  moment the canvas (an ``ImageCanvas`` on the GUI thread) shows it, through the same
  ``RemoteWorker`` signals the window uses. Asked: ≤ 100 ms.
* **throughput with two servers**: 8 queued jobs on one server, then the same 8 on two.
  This machine has 2 cores, so each server is pinned to its own core (``taskset``) and the
  one-server run uses one of them: the ratio is what the pool gets out of a second machine
  of the same speed. Asked: ≥ 1.8.

    QT_QPA_PLATFORM=offscreen PYTHONPATH=. python -m bench.remote_bench [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from desktop.engine.progress import Progress
from desktop.engine.remote import pool as pool_module
from desktop.engine.remote import server_job
from desktop.engine.remote.comfy_client import ComfyClient, PreviewFrame, ServerConfig
from desktop.engine.remote.pool import RemoteJob, ServerPool
from desktop.engine.request import GenerationRequest
from tests.helpers import comfy_server

CHECKPOINT = "sandstorm-bench-sd15.safetensors"


def _request(seed: int, size: int, steps: int) -> GenerationRequest:
    return GenerationRequest(
        prompt="a red circle on a blue background",
        model=CHECKPOINT,
        sampler="Euler",
        steps=steps,
        width=size,
        height=size,
        seed=seed,
        cfg_scale=7.0,
    )


class _Waiter:
    """Submits jobs to a pool and waits for them; records when each ended."""

    def __init__(self, pool: ServerPool) -> None:
        self.pool = pool
        self.done: dict[str, float] = {}
        self.where: dict[str, str] = {}
        self.failed: dict[str, str] = {}
        self.results: dict[str, Any] = {}
        self._all = threading.Condition()

    def submit(self, job_id: str, request: GenerationRequest, progress: Progress) -> None:
        def finished(result: Any, label: str) -> None:
            with self._all:
                self.done[job_id], self.where[job_id] = time.perf_counter(), label
                self.results[job_id] = result
                self._all.notify_all()

        def failed(message: str) -> None:
            with self._all:
                self.failed[job_id] = message
                self.done[job_id] = time.perf_counter()
                self._all.notify_all()

        self.pool.submit(
            RemoteJob(
                job_id,
                request,
                progress,
                on_done=finished,
                on_failed=failed,
                on_cancelled=lambda: failed("cancelled"),
            )
        )

    def wait(self, job_ids: list[str], timeout: float = 1800.0) -> None:
        deadline = time.monotonic() + timeout
        with self._all:
            while not all(j in self.done for j in job_ids):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"jobs not done: {set(job_ids) - set(self.done)}")
                self._all.wait(left)
        if any(j in self.failed for j in job_ids):
            raise RuntimeError(f"jobs failed: {self.failed}")


def _execution_s(client: ComfyClient, prompt_id: str) -> float:
    """ComfyUI's own time for a prompt, from its history's status messages."""
    entry = client.history(prompt_id) or {}
    stamps = {
        kind: data.get("timestamp")
        for kind, data in (entry.get("status") or {}).get("messages", [])
        if isinstance(data, dict)
    }
    return (stamps["execution_success"] - stamps["execution_start"]) / 1000.0


def measure_overhead(url: str, size: int, steps: int, jobs: int) -> dict[str, Any]:
    """Jobs one after another on one server: our wall time vs the server's execution."""
    client = ComfyClient(ServerConfig(url))
    pool = ServerPool([ServerConfig(url)])
    prompt_ids: dict[str, str] = {}
    original = pool_module.run_server_job

    def recording(client_, request, progress, models, on_queued=None):
        return original(
            client_,
            request,
            progress,
            models,
            on_queued=lambda pid: prompt_ids.__setitem__(progress.job_id, pid),
        )

    pool_module.run_server_job = recording  # type: ignore[assignment]
    waiter = _Waiter(pool)
    try:
        waiter.submit("warm", _request(1, size, steps), Progress("warm"))
        waiter.wait(["warm"])
        rows = []
        for i in range(jobs):
            job_id = f"job{i}"
            started = time.perf_counter()
            waiter.submit(job_id, _request(100 + i, size, steps), Progress(job_id))
            waiter.wait([job_id])
            ours = waiter.done[job_id] - started
            theirs = _execution_s(client, prompt_ids[job_id])
            rows.append({"sandstorm_s": round(ours, 3), "comfyui_s": round(theirs, 3)})
    finally:
        pool_module.run_server_job = original  # type: ignore[assignment]
        pool.close(30)
    total_ours = sum(r["sandstorm_s"] for r in rows)
    total_theirs = sum(r["comfyui_s"] for r in rows)
    return {
        "jobs": rows,
        "overhead_ratio": round(total_ours / total_theirs, 4),
        "added_ms_per_job": round(1000 * (total_ours - total_theirs) / len(rows), 1),
    }


def measure_preview_latency(url: str, size: int, steps: int) -> dict[str, Any]:
    """Frame read off the websocket → shown on the canvas, through the window's signals."""
    from PySide6.QtCore import QSize
    from PySide6.QtWidgets import QApplication

    from desktop.ui.canvas import ImageCanvas
    from desktop.ui.jobs import Job
    from desktop.ui.remote_worker import RemoteWorker

    app = QApplication.instance() or QApplication([])
    canvas = ImageCanvas()
    canvas.resize(512, 512)
    canvas.show()
    received: list[float] = []
    shown: list[float] = []
    original = server_job.parse_event

    def stamping(opcode: int, payload: bytes) -> Any:
        event = original(opcode, payload)
        if isinstance(event, PreviewFrame):
            received.append(time.perf_counter())
        return event

    server_job.parse_event = stamping  # type: ignore[assignment]
    worker = RemoteWorker(Path(tempfile.mkdtemp(prefix="sandstorm-bench-out-")))
    done = threading.Event()

    def on_step(_job: str, _step: int, _total: int, _elapsed: float, image: Any) -> None:
        if not image.isNull():
            canvas.set_image(image, QSize(size, size), preview=True)
            shown.append(time.perf_counter())

    worker.step_previewed.connect(on_step)
    worker.job_finished.connect(lambda *_: done.set())
    worker.job_failed.connect(lambda *_: done.set())
    try:
        worker.set_servers([ServerConfig(url)])
        job = Job("latency", _request(7, size, steps))
        worker.submit(job)
        deadline = time.monotonic() + 900
        while not done.is_set() and time.monotonic() < deadline:
            app.processEvents()
            time.sleep(0.002)
        app.processEvents()
    finally:
        server_job.parse_event = original  # type: ignore[assignment]
        worker.stop(30_000)
        canvas.close()
    pairs = list(zip(received, shown, strict=False))
    latencies = [1000 * (b - a) for a, b in pairs]
    return {
        "frames": len(latencies),
        "median_ms": round(statistics.median(latencies), 1) if latencies else None,
        "max_ms": round(max(latencies), 1) if latencies else None,
    }


def measure_throughput(urls: list[str], size: int, steps: int, jobs: int) -> dict[str, Any]:
    """``jobs`` queued at once on the first server alone, then on all of them."""
    timings: dict[str, float] = {}
    placements: dict[str, dict[str, int]] = {}
    for name, chosen in (("one_server", urls[:1]), ("two_servers", urls)):
        pool = ServerPool([ServerConfig(u, name=f"server{i}") for i, u in enumerate(chosen)])
        waiter = _Waiter(pool)
        try:
            # Warm every server (model loaded) before the clock starts.
            warm = [f"warm{i}" for i in range(len(chosen))]
            for i, job_id in enumerate(warm):
                waiter.submit(job_id, _request(500 + i, size, steps), Progress(job_id))
            waiter.wait(warm)
            ids = [f"{name}{i}" for i in range(jobs)]
            started = time.perf_counter()
            for i, job_id in enumerate(ids):
                waiter.submit(job_id, _request(1000 + i, size, steps), Progress(job_id))
            waiter.wait(ids)
            timings[name] = time.perf_counter() - started
            counts: dict[str, int] = {}
            for job_id in ids:
                counts[waiter.where[job_id]] = counts.get(waiter.where[job_id], 0) + 1
            placements[name] = counts
        finally:
            pool.close(30)
    return {
        "jobs": jobs,
        "one_server_s": round(timings["one_server"], 2),
        "two_servers_s": round(timings["two_servers"], 2),
        "throughput_ratio": round(timings["one_server"] / timings["two_servers"], 3),
        "placements": placements,
    }


def measure_scheduling(jobs: int, step_delay: float = 0.05, steps: int = 8) -> dict[str, Any]:
    """The same throughput figure with fake servers whose steps take ``step_delay``
    seconds each and cost no CPU: what the pool's scheduling gets out of two servers when
    they do not share this machine's cores."""
    from tests.helpers.fake_comfy import FakeComfy

    fakes = [FakeComfy(checkpoints=[CHECKPOINT], step_delay=step_delay) for _ in range(2)]
    for fake in fakes:
        fake.start()
    try:
        return measure_throughput([f.url for f in fakes], 64, steps, jobs)
    finally:
        for fake in fakes:
            fake.stop()


def _pinned_python(core: int, folder: Path) -> Path:
    """A wrapper that runs ComfyUI's python on one core only."""
    python = comfy_server.comfy_python()
    assert python is not None
    script = folder / f"python-core{core}"
    script.write_text(f'#!/bin/sh\nexec taskset -c {core} "{python}" "$@"\n')
    script.chmod(0o755)
    return script


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--out", type=Path, default=Path("bench/results/remote.json"))
    args = parser.parse_args(argv)
    reason = comfy_server.skip_reason()
    if reason:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    checkpoint = comfy_server.sd15_checkpoint(comfy_server.default_cache_dir() / "comfyui")
    work = Path(tempfile.mkdtemp(prefix="sandstorm-remote-bench-"))
    report: dict[str, Any] = {"size": args.size, "steps": args.steps, "cpu_cores": os.cpu_count()}
    report["scheduling_with_fake_servers"] = measure_scheduling(args.jobs)
    print(json.dumps(report["scheduling_with_fake_servers"]), flush=True)
    try:
        models = work / "models"
        comfy_server.link_into(checkpoint, models / "checkpoints", CHECKPOINT)
        with comfy_server.running_comfyui(models) as comfy:
            report["overhead"] = measure_overhead(comfy.url, args.size, args.steps, 4)
            print(json.dumps(report["overhead"]), flush=True)
            report["preview_latency"] = measure_preview_latency(comfy.url, args.size, args.steps)
            print(json.dumps(report["preview_latency"]), flush=True)
        with (
            comfy_server.running_comfyui(models, python=_pinned_python(0, work)) as first,
            comfy_server.running_comfyui(models, python=_pinned_python(1, work)) as second,
        ):
            report["throughput"] = measure_throughput(
                [first.url, second.url], args.size, args.steps, args.jobs
            )
            print(json.dumps(report["throughput"]), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
