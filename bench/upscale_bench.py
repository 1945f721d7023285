"""What a 4× upscale of a 1024×1024 image costs, tiled and untiled.

``PYTHONPATH=. python -m bench.upscale_bench [--side 1024] [--threads N] [--skip-untiled]``

The model is a full-size RealESRGAN-general-x4v3-like Compact network (64 features, 32
convolutions, 4×) with random weights (speed and memory depend on the shapes, not the
weights), saved as ``.safetensors`` and loaded with ``desktop.engine.upscalers``. Each case
runs in its own process, so its peak RSS (Linux ``VmHWM``) is its own:

- ``tiled``: ``Upscaler.upscale`` with the automatic tile size;
- ``untiled``: the same with one tile covering the whole image;
- ``untiled_half``: untiled at half the side, to check how the untiled cost grows;
- ``bf16``: tiled in bf16, compared with fp32 (mean and largest difference in 8-bit levels).

Printed per case: seconds, peak RSS and the peak's growth over the loaded model (``extra``),
the plan's tile size, tile count and memory estimate. Nothing is asserted or written.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MARK = "UPSCALE_BENCH_RESULT "


def _vm(field: str) -> int:
    """A ``/proc/self/status`` value in bytes (0 where there is none)."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _reset_peak() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")  # resets VmHWM to the current RSS
    except OSError:
        pass


def _model_file(folder: Path) -> Path:
    import torch
    from safetensors.torch import save_file
    from spandrel.architectures.Compact import Compact

    path = folder / "4x-general-v3-like.safetensors"
    if not path.exists():
        torch.manual_seed(0)
        model = Compact(num_feat=64, num_conv=32, upscale=4)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def _image(side: int) -> Any:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 255, side, dtype=np.float32)
    pixels = np.stack([ramp[None, :].repeat(side, 0), ramp[:, None].repeat(side, 1)], -1)
    pixels = np.concatenate([pixels, rng.uniform(0, 255, (side, side, 1))], -1)
    return Image.fromarray(pixels.astype(np.uint8), "RGB")


def child(case: str, side: int, folder: Path, threads: int | None) -> dict[str, Any]:
    """Run one case in this process and return its numbers."""
    import numpy as np
    import torch

    from desktop.engine import upscalers

    if threads:
        torch.set_num_threads(threads)
    path = _model_file(folder)
    dtype = torch.bfloat16 if case == "bf16" else torch.float32
    upscaler = upscalers.load_upscaler(upscalers.UpscalerInfo(path.stem, path), "cpu", dtype)
    if case == "untiled_half":
        side //= 2
    image = _image(side)
    tile = max(image.size) if case.startswith("untiled") else None
    plan = upscaler.plan(image.width, image.height, 4, tile)
    loaded = _vm("VmRSS")
    _reset_peak()
    start = time.perf_counter()
    result = upscaler.upscale(image, 4, tile=tile)
    seconds = time.perf_counter() - start
    peak = _vm("VmHWM")
    report: dict[str, Any] = {
        "case": case,
        "input": f"{side}x{side}",
        "output": f"{result.width}x{result.height}",
        "seconds": round(seconds, 2),
        "peak_rss_mb": round(peak / 2**20),
        "extra_mb": round((peak - loaded) / 2**20),
        "tile": plan.tile,
        "tiles": plan.tiles,
        "plan_memory_mb": round(plan.memory / 2**20),
        "threads": torch.get_num_threads(),
    }
    if case == "bf16":
        info = upscalers.UpscalerInfo(path.stem, path)
        reference = upscalers.load_upscaler(info, "cpu", torch.float32)
        expected = np.asarray(reference.upscale(image, 4), dtype=np.int16)
        diff = np.abs(np.asarray(result, dtype=np.int16) - expected)
        report["mean_abs_diff_levels"] = round(float(diff.mean()), 3)
        report["max_abs_diff_levels"] = int(diff.max())
    return report


def run(side: int = 1024, threads: int | None = None, skip_untiled: bool = False) -> list[dict]:
    """Run every case in its own process; returns their reports."""
    cases = ["tiled", "bf16", "untiled_half"] + ([] if skip_untiled else ["untiled"])
    folder = Path(tempfile.mkdtemp(prefix="sandstorm-upscale-bench-"))
    env = {**os.environ, "SANDSTORM_HOME": str(folder / "home")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    reports = []
    for case in cases:
        command = [sys.executable, "-m", "bench.upscale_bench", "--child", case]
        command += ["--side", str(side), "--folder", str(folder)]
        if threads:
            command += ["--threads", str(threads)]
        done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
        lines = [line for line in done.stdout.splitlines() if line.startswith(MARK)]
        if done.returncode or not lines:
            print(f"{case}: failed\n{done.stderr[-2000:]}", file=sys.stderr)
            continue
        report = json.loads(lines[-1][len(MARK) :])
        print(json.dumps(report))
        reports.append(report)
    return reports


def main() -> None:
    from desktop.engine.environment import apply_defaults

    apply_defaults()  # before torch loads, as the app does
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--side", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--skip-untiled", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        report = child(args.child, args.side, args.folder, args.threads)
        print(MARK + json.dumps(report), flush=True)
        return
    run(args.side, args.threads, args.skip_untiled)


if __name__ == "__main__":
    main()
