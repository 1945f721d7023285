"""``sandstorm generate``: run one request headless and write PNGs with metadata."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from desktop.cli import fail
from desktop.engine.errors import SandstormError


def add_parser(sub: Any) -> None:
    p = sub.add_parser("generate", help="generate images from a prompt, without the window")
    p.add_argument("--prompt", required=True, help="what to draw")
    p.add_argument("--negative", default="", help="what to avoid")
    p.add_argument("--model", default="", help="model file/folder path or discovered name")
    p.add_argument("--vae", default="", help="VAE override (path or name in models/vae)")
    p.add_argument("--sampler", default=None, help="sampler name, e.g. 'DPM++ 2M'")
    p.add_argument("--schedule", default="Automatic", help="Automatic, Karras or Exponential")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--cfg", type=float, default=None, help="CFG scale")
    p.add_argument("--seed", type=int, default=-1, help="-1 for random")
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--height", type=int, default=None)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--init-image", default=None, help="image for img2img")
    p.add_argument("--strength", type=float, default=0.75, help="img2img denoising strength")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: gallery)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"))
    p.add_argument("--json", action="store_true", help="print a JSON object instead of paths")
    p.set_defaults(func=run)


def build_request(args: argparse.Namespace) -> Any:
    """Make the request, filling unset values from the model's defaults."""
    from desktop.engine.defaults import defaults_for
    from desktop.engine.models import find_model
    from desktop.engine.request import GenerationRequest

    info = find_model(args.model)
    defaults = defaults_for(info)
    return GenerationRequest(
        prompt=args.prompt,
        negative_prompt=args.negative,
        model=str(info.path) if args.model else "",
        vae=args.vae,
        sampler=args.sampler or defaults.sampler,
        schedule=args.schedule,
        steps=args.steps if args.steps is not None else defaults.steps,
        cfg_scale=args.cfg if args.cfg is not None else defaults.cfg_scale,
        seed=args.seed,
        width=args.width or defaults.width,
        height=args.height or defaults.height,
        batch_size=args.batch,
        init_image=args.init_image,
        strength=args.strength,
    )


class _TerminalProgress:
    """A one-line progress bar on a terminal; silent when output is not a terminal."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()

    def status(self, text: str) -> None:
        if self.tty:
            print(f"\r{text:<60}", end="", file=sys.stderr, flush=True)

    def step(self, step: int, total: int, elapsed: float) -> None:
        if not self.tty or total <= 0:
            return
        width = 30
        done = int(width * step / total)
        rate = step / elapsed if elapsed > 0 else 0.0
        bar = "#" * done + "-" * (width - done)
        print(f"\r[{bar}] {step}/{total} {rate:.1f} it/s ", end="", file=sys.stderr, flush=True)
        if step == total:
            print(file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    from desktop.engine.gallery import Gallery
    from desktop.engine.generate import Engine
    from desktop.engine.progress import Progress

    bar = _TerminalProgress()

    class CliProgress(Progress):
        def set_status(self, text: str) -> None:
            bar.status(text)

        def set_progress(self, update: Any) -> None:
            bar.step(update.step, update.total, update.elapsed)

        def warn(self, text: str) -> None:
            print(f"sandstorm: warning: {text}", file=sys.stderr)

    try:
        request = build_request(args)
        engine = Engine(device=args.device)
        result = engine.generate(request, CliProgress(job_id="cli", previews=False))
        gallery = Gallery(root=args.out) if args.out else Gallery()
        try:
            saved = [gallery.save(g.image, g.request, result.model) for g in result.images]
        finally:
            gallery.close()
    except SandstormError as exc:
        return fail(str(exc))
    paths = [str(item.path) for item in saved]
    if args.json:
        payload = {"paths": paths, "request": result.request.to_dict(), "model": result.model.name}
        print(json.dumps(payload, indent=2))
    else:
        print("\n".join(paths))
    return 0
