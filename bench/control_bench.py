"""What one ControlNet costs per step on a full-size SD1.5, and that a unit outside its
range costs nothing.

``python -m bench.control_bench [--size 512] [--steps 6]``

One engine (automatic compute plan) loads the cached random-weight SD1.5 checkpoint
(``bench.ldm_checkpoint``) and a random-weight full-size SD1.5 ControlNet built from the
shipped config (``resources/model_configs/controlnet/sd15``, written to the user's
``models/controlnet`` as a scribble model). After a warm-up it runs, alternating so the
machine's drift cancels: plain jobs, jobs with one scribble layer over the whole range,
and jobs with the layer limited to the first half of the steps. It reports the median
gap between step callbacks of each and the ratios:

- ``control_step_ratio``: with the ControlNet / without (≤ 1.5 asked);
- ``half_range_ratio``: the half-range job's mean step / plain (≈ half the extra cost:
  steps outside the range do not run the ControlNet).

Results go to ``bench/results/control.json``. Nothing is asserted.
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


def run(size: int = 512, steps: int = 6, log: Any = print) -> dict[str, Any]:
    os.environ.setdefault("SANDSTORM_HOME", tempfile.mkdtemp(prefix="sandstorm-control-bench-"))
    import torch
    from diffusers import ControlNetModel
    from PIL import Image, ImageDraw

    from bench.full_bench import peak_rss_bytes
    from bench.ldm_checkpoint import build_sd15_checkpoint, default_path
    from desktop.engine import paths
    from desktop.engine.generate import Engine
    from desktop.engine.parts import ControlUnit
    from desktop.engine.progress import Progress
    from desktop.engine.request import GenerationRequest

    checkpoint = build_sd15_checkpoint(default_path())
    engine = Engine(device="cpu", extra_sources=[])
    folder = paths.user_models_dir() / "controlnet" / "bench_sd15_scribble"
    config = ControlNetModel.load_config(str(paths.MODEL_CONFIGS / "controlnet" / "sd15"))
    torch.manual_seed(0)
    net = ControlNetModel.from_config(config)
    with torch.no_grad():  # non-zero output convs, as a trained net has
        for module in [*net.controlnet_down_blocks, net.controlnet_mid_block]:
            module.weight.normal_(0, 0.01)
    net.to(torch.float16).save_pretrained(folder, safe_serialization=True)
    parameters = sum(p.numel() for p in net.parameters())
    del net
    sketch = Path(tempfile.mkdtemp()) / "sketch.png"
    image = Image.new("RGB", (size, size), "white")
    ImageDraw.Draw(image).ellipse((40, size // 3, size // 2, size - 60), outline="black", width=6)
    image.save(sketch)

    class Timed(Progress):
        def __init__(self) -> None:
            super().__init__(job_id="bench", previews=False)
            self.stamps: list[float] = []

        def set_progress(self, update: Any) -> None:
            self.stamps.append(time.perf_counter())

    def job(controls: tuple = (), job_steps: int = steps) -> tuple[float, float]:
        request = GenerationRequest(
            prompt=PROMPT,
            model=str(checkpoint),
            sampler="Euler",
            steps=job_steps,
            seed=1,
            width=size,
            height=size,
            controls=controls,
        )
        progress = Timed()
        engine.generate(request, progress)
        gaps = [b - a for a, b in pairwise(progress.stamps)]
        return statistics.median(gaps), statistics.fmean(gaps)

    full = (ControlUnit("scribble", str(sketch)),)
    half = (ControlUnit("scribble", str(sketch), end=0.5),)
    log("warm-up (loads the checkpoint and the ControlNet) …")
    job(full, 2)
    plain, control, halves = [], [], []
    for round_index in range(2):
        plain.append(job()[0])
        control.append(job(full)[0])
        halves.append(job(half)[1])
        log(
            f"round {round_index + 1}: plain {plain[-1]:.3f} s/step, ControlNet "
            f"{control[-1]:.3f} s/step, half range {halves[-1]:.3f} s/step (mean)"
        )
    base = statistics.median(plain)
    return {
        "size": size,
        "steps": steps,
        "controlnet_parameters_m": round(parameters / 1e6, 1),
        "dtype": engine.plan_for("sd1").dtype,
        "seconds_per_step_plain": round(base, 3),
        "seconds_per_step_control": round(statistics.median(control), 3),
        "control_step_ratio": round(statistics.median(control) / base, 3),
        "half_range_ratio": round(statistics.median(halves) / base, 3),
        "controlnet_loads": engine._controls.loads,
        "peak_rss_mb": round(peak_rss_bytes() / 2**20),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.control_bench", description=__doc__)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=6)
    args = parser.parse_args(argv)
    results = run(args.size, args.steps)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "control.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
