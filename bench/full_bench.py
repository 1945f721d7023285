"""Full-size benchmark: a real-sized SD1.5 in Sandstorm, in bare diffusers and in ComfyUI.

``python -m bench --full [--quick] [--comfyui DIR]``

A random-weight SD1.5 checkpoint in the original LDM key layout is built once and cached in
the user cache folder (``bench.ldm_checkpoint``; timing depends on shapes, not weights).
Each system runs in its own process, one after another, on the same checkpoint with the
same size, steps, sampler (Euler, normal schedule), CFG and seeds:

- ``sandstorm``: the engine with its automatic compute plan (bf16 on CPUs with native bf16);
- ``sandstorm_fp32``: the engine forced to fp32, so its overhead over bare diffusers shows;
- ``diffusers_fp32``: ``StableDiffusionPipeline.from_single_file`` in fp32, nothing else;
- ``comfyui``: ComfyUI's own server (``bench.comfyui_bench``), when ``--comfyui`` is given.

Every process runs ``jobs`` jobs (default 2): the first starts cold (the checkpoint is not
loaded yet), the rest warm. Reported per system: ``seconds_per_step`` (median gap between
step callbacks of the warm jobs), ``end_to_end_s`` (median warm job), ``load_to_first_preview_s``
(cold job: from the request until the first step's preview), ``peak_rss_mb`` (the process's
high-water mark) and, for the two Python systems, ``import_s``. Ratios compare the systems
measured in this one run (> 1: the first named is faster). Nothing is asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from itertools import pairwise
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
#: Marks the result line a child prints on stdout (the rest is the libraries' noise).
CHILD_MARK = "FULL_BENCH_CHILD_RESULT "
CHILD_TIMEOUT_S = 3 * 3600
PROMPT = "a big red circle on the left, blue background"
CFG = 7.0
#: (size, steps) of ``--full`` and of ``--full --quick``.
FULL = (512, 20)
QUICK = (256, 4)
PYTHON_SYSTEMS = ("sandstorm", "sandstorm_fp32", "diffusers_fp32")


def peak_rss_bytes() -> int:
    """This process's peak RSS (Linux ``VmHWM``; ``ru_maxrss`` elsewhere)."""
    with contextlib.suppress(OSError), open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    try:
        import resource
    except ImportError:  # Windows
        import psutil

        return int(psutil.Process().memory_info().peak_wset)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def rss_bytes() -> int:
    """This process's resident memory now (the steady state after the jobs)."""
    import psutil

    return int(psutil.Process().memory_info().rss)


def job_metrics(started: float, steps: list[float], ended: float) -> dict[str, Any]:
    """One job's figures from perf_counter times: request, each step's callback, the end."""
    gaps = [b - a for a, b in pairwise(steps)]
    return {
        "end_to_end_s": ended - started,
        "first_preview_s": steps[0] - started if steps else None,
        "seconds_per_step": statistics.median(gaps) if gaps else None,
        "steps_seen": len(steps),
    }


def summarize(system: dict[str, Any]) -> dict[str, Any]:
    """The headline figures of one system from its per-job list (first job = cold)."""
    jobs = system["jobs"]
    warm = jobs[1:] or jobs
    per_step = [j["seconds_per_step"] for j in warm if j.get("seconds_per_step")]
    out = {
        "seconds_per_step": statistics.median(per_step) if per_step else None,
        "end_to_end_s": statistics.median(j["end_to_end_s"] for j in warm),
        "cold_end_to_end_s": jobs[0]["end_to_end_s"],
        "load_to_first_preview_s": jobs[0].get("first_preview_s"),
        "peak_rss_mb": system.get("peak_rss_mb"),
    }
    for key in ("import_s", "startup_s", "dtype", "rss_after_mb"):
        if key in system:
            out[key] = system[key]
    return out


def ratios(summary: dict[str, dict[str, Any]]) -> dict[str, float]:
    """``a_vs_b_<metric>`` = b / a for times (> 1: a is faster) and b / a for memory."""
    pairs = [
        ("sandstorm", "diffusers_fp32"),
        ("sandstorm", "comfyui"),
        ("sandstorm_fp32", "diffusers_fp32"),
        ("sandstorm_fp32", "comfyui"),
        ("sandstorm", "sandstorm_fp32"),
    ]
    metrics = ("seconds_per_step", "end_to_end_s", "load_to_first_preview_s", "peak_rss_mb")
    out: dict[str, float] = {}
    for a, b in pairs:
        if a not in summary or b not in summary:
            continue
        for metric in metrics:
            va, vb = summary[a].get(metric), summary[b].get(metric)
            if va and vb:
                out[f"{a}_vs_{b}_{metric}"] = vb / va
    return out


# -- the child processes --------------------------------------------------------------------


def _sandstorm_child(checkpoint: Path, size: int, steps: int, jobs: int, dtype: str) -> dict:
    start_import = time.perf_counter()
    from desktop.engine.devices import ComputeOptions
    from desktop.engine.generate import Engine
    from desktop.engine.progress import Progress
    from desktop.engine.request import GenerationRequest

    import_s = time.perf_counter() - start_import

    class Timed(Progress):
        def __init__(self) -> None:
            super().__init__(job_id="bench", previews=True)
            self.steps: list[float] = []

        def set_progress(self, update: Any) -> None:
            self.steps.append(time.perf_counter())

    engine = Engine(device="cpu", options=ComputeOptions(precision=dtype), extra_sources=[])
    results = []
    for seed in range(1, jobs + 1):
        request = GenerationRequest(
            prompt=PROMPT,
            model=str(checkpoint),
            sampler="Euler",
            steps=steps,
            cfg_scale=CFG,
            seed=seed,
            width=size,
            height=size,
        )
        progress = Timed()
        started = time.perf_counter()
        result = engine.generate(request, progress)
        metrics = job_metrics(started, progress.steps, time.perf_counter())
        if result.timings is not None:
            metrics["load_s"] = result.timings.load_s
            metrics["decode_s"] = result.timings.decode_s
            metrics["overhead_ratio"] = result.timings.overhead_ratio
        results.append(metrics)
    return {
        "jobs": results,
        "import_s": import_s,
        "dtype": engine.plan_for("sd1").dtype,
        "peak_rss_mb": peak_rss_bytes() / 2**20,
        "rss_after_mb": rss_bytes() / 2**20,
    }


def _diffusers_child(checkpoint: Path, size: int, steps: int, jobs: int) -> dict:
    """Bare diffusers as its documentation shows it, fp32, offline (local config folder)."""
    start_import = time.perf_counter()
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline

    import_s = time.perf_counter() - start_import
    config = ROOT / "resources" / "model_configs" / "sd15"
    results = []
    pipe = None
    for seed in range(1, jobs + 1):
        started = time.perf_counter()
        if pipe is None:
            pipe = StableDiffusionPipeline.from_single_file(
                str(checkpoint),
                config=str(config),
                torch_dtype=torch.float32,
                local_files_only=True,
                safety_checker=None,
                requires_safety_checker=False,
            )
            pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
            pipe.set_progress_bar_config(disable=True)
        stamps: list[float] = []

        def on_step(_p: Any, _i: int, _t: Any, kwargs: dict, stamps: list = stamps) -> dict:
            stamps.append(time.perf_counter())
            return kwargs

        with torch.inference_mode():
            pipe(
                prompt=PROMPT,
                num_inference_steps=steps,
                guidance_scale=CFG,
                width=size,
                height=size,
                generator=torch.Generator("cpu").manual_seed(seed),
                callback_on_step_end=on_step,
            )
        results.append(job_metrics(started, stamps, time.perf_counter()))
    return {
        "jobs": results,
        "import_s": import_s,
        "dtype": "fp32",
        "peak_rss_mb": peak_rss_bytes() / 2**20,
        "rss_after_mb": rss_bytes() / 2**20,
    }


def run_child(system: str, checkpoint: Path, size: int, steps: int, jobs: int) -> dict:
    """Run one Python system in a fresh process (clean memory high-water mark, cold load)."""
    command = [sys.executable, "-m", "bench.full_bench", "--child", system]
    command += ["--checkpoint", str(checkpoint), "--size", str(size), "--steps", str(steps)]
    command += ["--jobs", str(jobs)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S
    )
    for line in done.stdout.splitlines():
        if line.startswith(CHILD_MARK):
            return json.loads(line[len(CHILD_MARK) :])
    tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
    raise RuntimeError(f"{system} failed (exit {done.returncode}):\n{tail}")


def _child_main(args: argparse.Namespace) -> int:
    from desktop.engine.environment import apply_defaults

    apply_defaults()
    if args.child == "diffusers_fp32":
        result = _diffusers_child(args.checkpoint, args.size, args.steps, args.jobs)
    else:
        dtype = "fp32" if args.child == "sandstorm_fp32" else "auto"
        result = _sandstorm_child(args.checkpoint, args.size, args.steps, args.jobs, dtype)
    print(CHILD_MARK + json.dumps(result), flush=True)
    return 0


# -- the orchestration ----------------------------------------------------------------------


def run(
    quick: bool = False,
    comfyui: Path | None = None,
    jobs: int = 2,
    systems: tuple[str, ...] = PYTHON_SYSTEMS,
    comfy_python: str | None = None,
    log: Any = print,
) -> dict[str, Any]:
    """Measure every system; returns ``full_*`` settings, per-system results and ratios."""
    from bench.ldm_checkpoint import build_sd15_checkpoint

    size, steps = QUICK if quick else FULL
    started = time.perf_counter()
    checkpoint = build_sd15_checkpoint()
    out: dict[str, Any] = {
        "full_size": size,
        "full_steps": steps,
        "full_jobs": jobs,
        "full_checkpoint": str(checkpoint),
        "full_checkpoint_build_s": time.perf_counter() - started,
    }
    raw: dict[str, Any] = {}
    summary: dict[str, dict[str, Any]] = {}
    for system in systems:
        log(f"   {system} ({size}², {steps} steps, {jobs} jobs) …")
        try:
            raw[system] = run_child(system, checkpoint, size, steps, jobs)
            summary[system] = summarize(raw[system])
        except Exception as exc:  # one broken system must not hide the others
            out[f"full_{system}_error"] = f"{type(exc).__name__}: {exc}"
    if comfyui is not None:
        log(f"   comfyui ({size}², {steps} steps, {jobs} jobs) …")
        try:
            raw["comfyui"] = _run_comfyui(comfyui, checkpoint, size, steps, jobs, comfy_python)
            summary["comfyui"] = summarize(raw["comfyui"])
        except Exception as exc:
            out["full_comfyui_error"] = f"{type(exc).__name__}: {exc}"
    for system, figures in summary.items():
        for key, value in figures.items():
            out[f"full_{system}_{key}"] = value
    out.update({f"full_{k}": v for k, v in ratios(summary).items()})
    out["full_raw"] = raw
    return out


def _run_comfyui(
    comfy_dir: Path, checkpoint: Path, size: int, steps: int, jobs: int, python: str | None
) -> dict:
    from bench import comfyui_bench

    work = [
        {"width": size, "height": size, "steps": steps, "cfg": CFG, "seed": seed}
        | {"prompt": PROMPT, "negative": ""}
        for seed in range(1, jobs + 1)
    ]
    kwargs = {"python": python} if python else {}
    return comfyui_bench.run_comfyui(comfy_dir, checkpoint, work, **kwargs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.full_bench")
    parser.add_argument("--child", choices=PYTHON_SYSTEMS, help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, default=FULL[0], help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=FULL[1], help=argparse.SUPPRESS)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args(argv)
    if args.child:
        return _child_main(args)
    parser.error("run it as `python -m bench --full [--quick] [--comfyui DIR]`")
    return 2


if __name__ == "__main__":
    sys.exit(main())
