"""What inpainting and outpainting cost next to plain img2img, on the built-in model.

``python -m bench.inpaint_bench [--repeats 5]``

One engine (automatic compute plan) makes a red circle on blue with the built-in model,
then times, in one run and interleaved so the machine's drift cancels:

- ``img2img``: the circle picture at strength 0.75 (the baseline);
- ``inpaint``: a square mask over the circle, "a big blue square", whole picture;
- ``inpaint_only_masked``: the same with "only masked" (crop and paste back);
- ``outpaint``: the picture grown by half its width on the right.

It reports each job's median seconds, the ratios to img2img, whether the inpainted square
came out blue (mean RGB inside the mask) and whether the pixels outside the feather are the
input's bit for bit. Results go to ``bench/results/inpaint.json``. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def run(repeats: int = 5, log: Any = print) -> dict[str, Any]:
    os.environ.setdefault("SANDSTORM_HOME", tempfile.mkdtemp(prefix="sandstorm-inpaint-bench-"))
    import numpy as np
    from PIL import Image, ImageDraw

    from desktop.engine import paths
    from desktop.engine.devices import ComputeOptions
    from desktop.engine.generate import Engine
    from desktop.engine.inpaint import prepare_inpaint
    from desktop.engine.parts import ExpandSpec, MaskSpec
    from desktop.engine.request import GenerationRequest

    model = str(paths.BUILTIN_MODEL)
    work = Path(tempfile.mkdtemp(prefix="inpaint-bench-"))
    engine = Engine(options=ComputeOptions())
    size = 64
    base = GenerationRequest(
        prompt="a big red circle in the center, white background",
        model=model,
        seed=3,
        width=size,
        height=size,
    )
    init = work / "circle.png"
    engine.generate(base).images[0].image.save(init)
    mask = Image.new("L", (size, size), 0)
    ImageDraw.Draw(mask).rectangle((12, 12, 51, 51), fill=255)
    mask_path = work / "mask.png"
    mask.save(mask_path)
    square = dict(
        prompt="a big blue square in the center, white background",
        model=model,
        seed=5,
        width=size,
        height=size,
        init_image=str(init),
        strength=0.75,
    )
    jobs = {
        "img2img": GenerationRequest(**square),
        "inpaint": GenerationRequest(
            **square, mask=MaskSpec(image=str(mask_path), blur=4, only_masked=False)
        ),
        "inpaint_only_masked": GenerationRequest(
            **square, mask=MaskSpec(image=str(mask_path), blur=4, only_masked=True)
        ),
        "outpaint": GenerationRequest(
            **{**square, "prompt": "white background", "strength": 1.0},
            expand=ExpandSpec(right=size // 2, feather=8),
        ),
    }
    times: dict[str, list[float]] = {name: [] for name in jobs}
    outputs: dict[str, Any] = {}
    engine.generate(jobs["inpaint"])  # warm-up
    for _ in range(repeats):
        for name, request in jobs.items():
            started = time.perf_counter()
            outputs[name] = engine.generate(request).images[0].image
            times[name].append(time.perf_counter() - started)
    median = {name: statistics.median(values) for name, values in times.items()}
    out = np.asarray(outputs["inpaint"]).astype(int)
    original = np.asarray(Image.open(init).convert("RGB")).astype(int)
    soft = np.asarray(prepare_inpaint(jobs["inpaint"].mask, init, size, size).soft_mask)
    red, green, blue = out[20:44, 20:44].reshape(-1, 3).mean(axis=0)
    result = {
        "model": "builtin",
        "size": size,
        "steps": base.steps,
        "repeats": repeats,
        "seconds": {name: round(value, 3) for name, value in median.items()},
        "ratio_to_img2img": {
            name: round(value / median["img2img"], 3) for name, value in median.items()
        },
        "square_mean_rgb": [round(float(v), 1) for v in (red, green, blue)],
        "square_is_blue": bool(blue > 180 and blue > red + 80 and blue > green + 60),
        "outside_bit_identical": bool(np.array_equal(out[soft == 0], original[soft == 0])),
        "outpaint_size": list(outputs["outpaint"].size),
        "threads": engine.plan.threads,
        "dtype": engine.plan.dtype,
    }
    log(json.dumps(result, indent=2))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    result = run(args.repeats)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "inpaint.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
