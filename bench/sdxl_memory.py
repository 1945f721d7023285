"""SDXL at 1024² through Sandstorm's engine: peak memory (and the seconds it took).

``python -m bench.sdxl_memory [--steps 2] [--precision auto] [--json OUT]``

A random-weight SDXL (``bench.ldm_checkpoint.build_sdxl_pipeline``, 3.5 B parameters) is
saved once as a diffusers folder in the user cache (fp16 on disk, about 7 GB; never
committed). A child process then loads it with the engine and generates one 1024×1024
picture, Euler, CFG 7, previews on, and reports its peak RSS (``VmHWM``): the memory a
user's SDXL job needs with Sandstorm's compute plan (bf16 UNet on CPUs with native bf16,
fp32 VAE decoded in tiles from 1024²). Weights do not change the memory, only the shapes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from desktop.engine.environment import apply_defaults

apply_defaults()

ROOT = Path(__file__).resolve().parents[1]
CHILD_MARK = "SDXL_MEMORY_RESULT "


def default_folder() -> Path:
    from desktop.engine import paths

    return paths.cache_dir() / "bench" / "sdxl-random"


def build_sdxl_folder(folder: Path | None = None, seed: int = 0) -> Path:
    """Write the random SDXL as a diffusers folder once; later calls reuse it."""
    folder = folder or default_folder()
    done = folder / ".complete"
    if done.is_file():
        return folder
    import torch

    from bench.ldm_checkpoint import build_sdxl_pipeline

    pipe = build_sdxl_pipeline(seed=seed, dtype=torch.float16)
    pipe.save_pretrained(folder, safe_serialization=True)
    done.write_text(json.dumps({"seed": seed}))
    return folder


def _child(folder: Path, size: int, steps: int, precision: str) -> dict[str, Any]:
    from bench.full_bench import peak_rss_bytes
    from desktop.engine.devices import ComputeOptions
    from desktop.engine.generate import Engine
    from desktop.engine.progress import Progress
    from desktop.engine.request import GenerationRequest

    stamps: list[float] = []

    class Timed(Progress):
        def set_progress(self, update: Any) -> None:
            stamps.append(time.perf_counter())

    engine = Engine(device="cpu", options=ComputeOptions(precision=precision), extra_sources=[])
    request = GenerationRequest(
        prompt="a lighthouse on a cliff at dusk",
        model=str(folder),
        sampler="Euler",
        steps=steps,
        cfg_scale=7.0,
        seed=1,
        width=size,
        height=size,
    )
    started = time.perf_counter()
    result = engine.generate(request, Timed(job_id="sdxl"))
    ended = time.perf_counter()
    plan = engine.plan_for("sdxl")
    timings = result.timings
    return {
        "sdxl_size": size,
        "sdxl_steps": steps,
        "sdxl_dtype": plan.dtype,
        "sdxl_vae_dtype": plan.vae_dtype,
        "sdxl_peak_rss_mb": peak_rss_bytes() / 2**20,
        "sdxl_end_to_end_s": ended - started,
        "sdxl_load_s": timings.load_s if timings else None,
        "sdxl_decode_s": timings.decode_s if timings else None,
        "sdxl_seconds_per_step": (
            (stamps[-1] - stamps[0]) / (len(stamps) - 1) if len(stamps) > 1 else None
        ),
    }


def run(steps: int = 2, precision: str = "auto", size: int = 1024) -> dict[str, Any]:
    """Build (once) and measure in a fresh process, so the peak is the job's alone."""
    started = time.perf_counter()
    folder = build_sdxl_folder()
    build_s = time.perf_counter() - started
    command = [sys.executable, "-m", "bench.sdxl_memory", "--child", str(folder)]
    command += ["--steps", str(steps), "--precision", precision, "--size", str(size)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    for line in done.stdout.splitlines():
        if line.startswith(CHILD_MARK):
            return {"sdxl_build_s": build_s, **json.loads(line[len(CHILD_MARK) :])}
    tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
    raise RuntimeError(f"the SDXL child failed (exit {done.returncode}):\n{tail}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sdxl_memory")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.child:
        print(CHILD_MARK + json.dumps(_child(args.child, args.size, args.steps, args.precision)))
        return 0
    result = run(args.steps, args.precision, args.size)
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
