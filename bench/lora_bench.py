"""What one LoRA costs per step on a full-size SD1.5, and what switching LoRAs costs.

``python -m bench.lora_bench [--size 512] [--steps 6] [--rank 32]``

One engine with its automatic compute plan loads the cached random-weight SD1.5 checkpoint
(``bench.ldm_checkpoint``) and a random rank-``rank`` kohya LoRA on every attention and
feed-forward layer of the UNet and text encoder (the usual kind). After a warm-up job it
runs base, LoRA, base, LoRA jobs (alternating, so drift in the machine's speed cancels)
with the same seed, and reports:

- ``seconds_per_step_base`` / ``seconds_per_step_lora`` and their ratio
  ``lora_step_ratio`` (median gap between step callbacks; 1.0 means free);
- ``fuse_s``: the time to fuse the LoRA (first use, and after a strength change);
- ``base_image_restored``: whether the base jobs after a LoRA job give bit-for-bit the
  first base image; ``loads``: checkpoint loads in the whole run (1: never reloaded).

Results go to ``bench/results/lora.json``. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from itertools import pairwise
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
PROMPT = "a big red circle on the left, blue background"


def run(size: int = 512, steps: int = 6, rank: int = 32, log: Any = print) -> dict[str, Any]:
    os.environ.setdefault("SANDSTORM_HOME", tempfile.mkdtemp(prefix="sandstorm-lora-bench-"))
    import numpy as np

    from bench.full_bench import peak_rss_bytes
    from bench.ldm_checkpoint import build_sd15_checkpoint, default_path
    from desktop.engine import paths
    from desktop.engine.generate import Engine
    from desktop.engine.progress import Progress
    from desktop.engine.request import GenerationRequest
    from tests.helpers import network_files

    checkpoint = build_sd15_checkpoint(default_path())
    engine = Engine(device="cpu", extra_sources=[])

    class Timed(Progress):
        def __init__(self) -> None:
            super().__init__(job_id="bench", previews=True)
            self.stamps: list[float] = []

        def set_progress(self, update: Any) -> None:
            self.stamps.append(time.perf_counter())

    def job(prompt: str, job_steps: int = steps) -> tuple[float, np.ndarray, float]:
        request = GenerationRequest(
            prompt=prompt,
            model=str(checkpoint),
            sampler="Euler",
            steps=job_steps,
            seed=1,
            width=size,
            height=size,
        )
        progress = Timed()
        result = engine.generate(request, progress)
        gaps = [b - a for a, b in pairwise(progress.stamps)]
        state = engine.lora_state
        fuse = state.fuse_s if state is not None else 0.0
        return statistics.median(gaps), np.asarray(result.images[0].image), fuse

    log("warm-up job (loads the checkpoint) …")
    job(PROMPT, 2)
    pipe = engine.load(engine.resolve_model(str(checkpoint))).txt2img
    folder = paths.user_models_dir() / "loras"
    lora = network_files.kohya_lora(pipe, rank=rank, scale=0.02)
    network_files.save({k: v.half() for k, v in lora.items()}, folder / "bench_lora.safetensors")
    layers = sum(1 for k in lora if k.endswith(".lora_down.weight"))
    log(f"LoRA: rank {rank}, {layers} layers")
    base_steps, lora_steps, fuses = [], [], []
    images = []
    for round_index in range(2):
        step, image, _ = job(PROMPT)
        base_steps.append(step)
        images.append(image)
        strength = 0.8 if round_index == 0 else 0.6  # the second round changes the strength
        step, _, fuse = job(f"{PROMPT} <lora:bench_lora:{strength}>")
        lora_steps.append(step)
        fuses.append(fuse)
        log(f"round {round_index + 1}: base {base_steps[-1]:.3f} s/step, LoRA {step:.3f} s/step")
    final, image, _ = job(PROMPT)
    base_steps.append(final)
    images.append(image)
    base = statistics.median(base_steps)
    with_lora = statistics.median(lora_steps)
    return {
        "size": size,
        "steps": steps,
        "rank": rank,
        "lora_layers": layers,
        "dtype": engine.plan_for("sd1").dtype,
        "seconds_per_step_base": base,
        "seconds_per_step_lora": with_lora,
        "lora_step_ratio": with_lora / base,
        "fuse_s": fuses,
        "base_image_restored": all(np.array_equal(images[0], other) for other in images[1:]),
        "loads": engine.loads,
        "peak_rss_mb": peak_rss_bytes() / 2**20,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.lora_bench", description=__doc__)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--rank", type=int, default=32)
    args = parser.parse_args(argv)
    results = run(args.size, args.steps, args.rank)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "lora.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
