"""Does the built-in model follow prompts? Generate held-out prompts and score the pixels.

Run ``python -m desktop.training.evaluate [--model models/builtin] [--count 64]``. The
prompts are single-shape scenes whose colour/shape/background combination never appeared
in training (``data.HELD_OUT``); each picture is read back by ``score.read_image``.

``--dtype bf16`` evaluates in another number format; ``--compare fp32 bf16`` evaluates in
both and reports the accuracy difference per attribute and the PSNR of each picture
against the first format's (the check that a faster format keeps the pictures).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from desktop.training import data, score

# Targets from the model's specification, per attribute.
TARGETS = {"background": 0.95, "colour": 0.90, "position": 0.85, "size": 0.85, "shape": 0.75}

# generate(prompts, seeds) -> one picture per prompt
GenerateFn = Callable[[Sequence[str], Sequence[int]], list[Image.Image]]


def model_defaults(model: Path) -> dict[str, Any]:
    info = json.loads((model / "sandstorm.json").read_text(encoding="utf-8"))
    return {
        "sampler": info["default_sampler"],
        "steps": int(info["default_steps"]),
        "cfg_scale": float(info["default_cfg"]),
        "size": int(info["native_size"]),
    }


def engine_generator(
    model: Path,
    sampler: str | None = None,
    steps: int | None = None,
    cfg_scale: float | None = None,
    engine: Any = None,
    dtype: str = "auto",
) -> GenerateFn:
    """Generate through Sandstorm's own engine, at the model's defaults unless overridden.

    ``dtype``: the precision setting of the engine made here ("auto", "fp32", "bf16").
    """
    from desktop.engine.devices import ComputeOptions
    from desktop.engine.generate import Engine
    from desktop.engine.request import GenerationRequest

    defaults = model_defaults(model)
    engine = engine or Engine(device="cpu", options=ComputeOptions(precision=dtype))

    def generate(prompts: Sequence[str], seeds: Sequence[int]) -> list[Image.Image]:
        images = []
        for prompt, seed in zip(prompts, seeds, strict=True):
            request = GenerationRequest(
                prompt=prompt,
                model=str(model),
                sampler=sampler or defaults["sampler"],
                steps=steps or defaults["steps"],
                cfg_scale=defaults["cfg_scale"] if cfg_scale is None else cfg_scale,
                seed=seed,
                width=defaults["size"],
                height=defaults["size"],
            )
            images.append(engine.generate(request).images[0].image)
        return images

    return generate


def pipeline_generator(
    pipe: Any, sampler: str, steps: int, cfg_scale: float, size: int = data.IMAGE_SIZE
) -> GenerateFn:
    """Generate with a diffusers pipeline held in memory, all prompts in one batch.

    Used while training, before a model folder exists for the engine to load.
    """
    import torch

    from desktop.engine.samplers import make_scheduler

    base = dict(pipe.scheduler.config)

    def generate(prompts: Sequence[str], seeds: Sequence[int]) -> list[Image.Image]:
        pipe.scheduler = make_scheduler(sampler, "Automatic", base)
        generators = [torch.Generator("cpu").manual_seed(s) for s in seeds]
        with torch.inference_mode():
            out = pipe(
                list(prompts),
                num_inference_steps=steps,
                guidance_scale=cfg_scale,
                generator=generators,
                width=size,
                height=size,
            )
        return list(out.images)

    return generate


def evaluate(
    generate: GenerateFn, cases: Sequence[data.EvalCase], batch: int = 16
) -> dict[str, Any]:
    """Score ``cases``; returns per-attribute accuracy, per-case readings and the pictures."""
    images: list[Image.Image] = []
    started = time.perf_counter()
    for i in range(0, len(cases), batch):
        chunk = cases[i : i + batch]
        images += generate([c.prompt for c in chunk], [c.seed for c in chunk])
    elapsed = time.perf_counter() - started
    hits = {name: 0 for name in score.ATTRIBUTES}
    rows = []
    for case, image in zip(cases, images, strict=True):
        result = score.score(image, case.scene)
        for name, ok in result.items():
            hits[name] += ok
        rows.append({"prompt": case.prompt, **result})
    accuracy = {name: hits[name] / len(cases) for name in score.ATTRIBUTES}
    return {"accuracy": accuracy, "rows": rows, "images": images, "seconds": elapsed}


def reconstruction_accuracy(vae: Any, cases: Sequence[data.EvalCase]) -> dict[str, float]:
    """Score the VAE's reconstructions of the scenes ``cases`` ask for.

    This is the ceiling the diffusion model can reach: a colour or outline the decoder cannot
    draw back from the latents cannot be generated either.
    """
    import torch

    from desktop.training import common

    images = common.to_tensor([data.render(c.scene) for c in cases])
    with torch.no_grad():
        recon = vae.decode(vae.encode(images).latent_dist.mean).sample.clamp(-1, 1)
    array = ((recon + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    hits = {name: 0 for name in score.ATTRIBUTES}
    for case, pixels in zip(cases, array, strict=True):
        for name, ok in score.score(Image.fromarray(pixels), case.scene).items():
            hits[name] += ok
    return {name: hits[name] / len(cases) for name in score.ATTRIBUTES}


def psnr(a: Image.Image, b: Image.Image) -> float:
    """Peak signal-to-noise ratio of two 8-bit RGB pictures in dB (inf when identical)."""
    import numpy as np

    x = np.asarray(a.convert("RGB"), dtype=np.float64)
    y = np.asarray(b.convert("RGB"), dtype=np.float64)
    mse = float(np.mean((x - y) ** 2))
    return float("inf") if mse == 0 else 10.0 * float(np.log10(255.0**2 / mse))


def compare(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Accuracy differences (points) and PSNR of each later format against the first one."""
    names = list(results)
    reference = results[names[0]]
    out: dict[str, Any] = {}
    for name in names[1:]:
        other = results[name]
        values = [psnr(a, b) for a, b in zip(reference["images"], other["images"], strict=True)]
        finite = [v for v in values if v != float("inf")]
        out[name] = {
            "points": {
                k: (other["accuracy"][k] - reference["accuracy"][k]) * 100 for k in score.ATTRIBUTES
            },
            "psnr_mean_db": sum(finite) / len(finite) if finite else float("inf"),
            "psnr_min_db": min(values),
            "identical": len(values) - len(finite),
            "speed_ratio": reference["seconds"] / other["seconds"],
        }
    return out


def format_comparison(reference: str, comparison: dict[str, Any]) -> str:
    lines = []
    for name, figures in comparison.items():
        points = ", ".join(f"{k} {v:+.1f}" for k, v in figures["points"].items())
        lines.append(
            f"{name} vs {reference}: points {points}; PSNR mean {figures['psnr_mean_db']:.1f} dB, "
            f"min {figures['psnr_min_db']:.1f} dB ({figures['identical']} identical); "
            f"{figures['speed_ratio']:.2f}x the speed"
        )
    return "\n".join(lines)


def format_table(accuracy: dict[str, float], count: int) -> str:
    """A Markdown table of accuracy against the targets."""
    lines = [
        f"| attribute | accuracy ({count} held-out prompts) | target | met |",
        "|---|---|---|---|",
    ]
    for name in score.ATTRIBUTES:
        acc, target = accuracy[name], TARGETS[name]
        lines.append(
            f"| {name} | {acc * 100:.1f} % | ≥ {target * 100:.0f} % | "
            f"{'yes' if acc >= target else 'no'} |"
        )
    return "\n".join(lines)


def image_grid(images: Sequence[Image.Image], columns: int = 8, scale: int = 2) -> Image.Image:
    """Tile pictures into one grid (each enlarged ``scale`` times, nearest neighbour)."""
    w, h = images[0].size
    rows = (len(images) + columns - 1) // columns
    grid = Image.new("RGB", (columns * w * scale, rows * h * scale), (128, 128, 128))
    for i, image in enumerate(images):
        big = image.resize((w * scale, h * scale), Image.Resampling.NEAREST)
        grid.paste(big, ((i % columns) * w * scale, (i // columns) * h * scale))
    return grid


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m desktop.training.evaluate")
    parser.add_argument("--model", type=Path, default=Path("models/builtin"))
    parser.add_argument("--count", type=int, default=64)
    parser.add_argument("--sampler", default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--cfg", type=float, default=None)
    parser.add_argument("--grid", type=Path, default=None, help="save the pictures as a grid")
    parser.add_argument("--json", type=Path, default=None, help="save the scores as JSON")
    parser.add_argument(
        "--dtype", default="auto", help="the engine's precision: auto, fp32 or bf16"
    )
    parser.add_argument(
        "--compare",
        nargs="+",
        default=None,
        metavar="DTYPE",
        help="evaluate in each of these precisions and compare with the first one",
    )
    args = parser.parse_args(argv)
    from desktop.engine.environment import apply_defaults

    apply_defaults()
    if not (args.model / "sandstorm.json").is_file():
        print(f"No built-in model at {args.model} (sandstorm.json is missing).", file=sys.stderr)
        return 2
    cases = data.evaluation_cases(args.count)
    if args.compare:
        return _compare_main(args, cases)
    generate = engine_generator(args.model, args.sampler, args.steps, args.cfg, dtype=args.dtype)
    result = evaluate(generate, cases)
    table = format_table(result["accuracy"], len(cases))
    print(table)
    print(f"{result['seconds'] / len(cases):.2f} s per picture")
    if args.grid:
        image_grid(result["images"]).save(args.grid)
    if args.json:
        payload = {k: result[k] for k in ("accuracy", "rows", "seconds")}
        args.json.write_text(json.dumps(payload, indent=2), encoding="utf-8")
    return 0 if all(result["accuracy"][k] >= v for k, v in TARGETS.items()) else 1


def _compare_main(args: argparse.Namespace, cases: Sequence[data.EvalCase]) -> int:
    results = {}
    for dtype in args.compare:
        generate = engine_generator(args.model, args.sampler, args.steps, args.cfg, dtype=dtype)
        results[dtype] = evaluate(generate, cases)
        print(f"## {dtype}")
        print(format_table(results[dtype]["accuracy"], len(cases)))
        print(f"{results[dtype]['seconds'] / len(cases):.2f} s per picture\n")
    comparison = compare(results)
    print(format_comparison(args.compare[0], comparison))
    if args.json:
        payload = {
            "results": {k: {n: r[n] for n in ("accuracy", "seconds")} for k, r in results.items()},
            "comparison": comparison,
        }
        args.json.write_text(json.dumps(payload, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
