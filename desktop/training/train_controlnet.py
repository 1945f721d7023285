"""Train the built-in model's scribble ControlNet: a sketched outline becomes a filled shape.

``python -m desktop.training train-controlnet [--steps N] [--out FOLDER]`` (default folder
``models/controlnet/builtin_scribble``)

* Data: the shape world of ``data.py`` (the same colours, shapes, captions and held-out
  combinations). Half of the shapes sit on the nine positions with the usual jitter and the two
  sizes; the other half anywhere in the picture at any size between the two, so a sketch may
  go anywhere. The control image is the shape's outline drawn the way a user sketches it
  (black, 1.5–4 px, wobbling, a little off the true outline, sometimes not closed, drawn on a
  page of 64, 128 or 256 px and fitted to 64 like the engine does) and then passed through
  ``control_images.preprocess("scribble", …)``: training sees exactly what the engine feeds.
* Frozen: the VAE, text encoder and UNet of ``models/builtin``. Trainable: a ControlNet with
  the shipped config (``resources/model_configs/controlnet/builtin``), its encoder an exact
  functional copy of the UNet's (``make_controlnet``) and zero output convolutions, so a new
  net changes nothing.
* Objective: the UNet's ε loss with the ControlNet's residuals added, the timestep sampling and
  1/SNR weights of ``train_unet``; 10 % of captions dropped (empty prompt), and captions name the
  position only half of the time, so a sketch works with prompts that do not say where.
* Latents of the pictures are encoded once; bf16 autocast; classic attention processor; the EMA
  of the weights is exported in fp16.
"""

from __future__ import annotations

import argparse
import inspect
import itertools
import json
import math
import pickle
import random
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from desktop.training import architecture, common, data
from desktop.training.train_unet import EMA, HIGH_NOISE_WEIGHT, sample_timesteps

CONFIG = Path(__file__).resolve().parents[2] / "resources/model_configs/controlnet/builtin"
CFG_DROPOUT = 0.1
POSITION_WORD_KEPT = 0.5  # captions name the position only this often (the sketch says where)
SIZE_WORD_KEPT = 0.7
FREE_PLACEMENT = 0.5  # shapes placed anywhere (otherwise on data.POSITIONS with jitter)
FREE_RADIUS = (5.0, 13.0)  # radius range of the equal-area circle for freely placed shapes
SKETCH_SCALES = (1, 2, 4)  # page size = 64 × scale, fitted back to 64 as the engine does
STROKE_WIDTH = (1.5, 4.0)  # in 64-px pixels


# -- scenes with their exact geometry --------------------------------------------------------
@dataclass(frozen=True)
class Placed:
    """One shape of a scene and where it is drawn: centroid (cx, cy) and radius r in px."""

    spec: data.ShapeSpec
    cx: float
    cy: float
    r: float


@dataclass(frozen=True)
class Layout:
    background: str
    shapes: tuple[Placed, ...]

    @property
    def scene(self) -> data.Scene:
        return data.Scene(self.background, tuple(p.spec for p in self.shapes))


def _clamp(shape: str, cx: float, cy: float, r: float, size: int) -> tuple[float, float]:
    """The centroid moved so the whole shape stays inside (as ``data.render`` does)."""
    left, right, up, down = data._extent(shape, r)
    margin = 1.0
    return (
        min(max(cx, left + margin), size - right - margin),
        min(max(cy, up + margin), size - down - margin),
    )


def grid_position(cx: float, cy: float, size: int = data.IMAGE_SIZE) -> str:
    """The position word of the 3×3 cell a centroid falls into (as the scorer reads it)."""
    col, row = min(2, int(3 * cx / size)), min(2, int(3 * cy / size))
    for name, (fx, fy) in data.POSITIONS.items():
        if (round((fx - 0.25) * 4), round((fy - 0.25) * 4)) == (col, row):
            return name
    raise AssertionError((col, row))


def size_word(r: float) -> str:
    return "big" if r * r > data.SIZES["small"] * data.SIZES["big"] else "small"


def place(spec: data.ShapeSpec, rng: random.Random | None, size: int = data.IMAGE_SIZE) -> Placed:
    """``spec`` at its position word with ``data.render``'s jitter (none without ``rng``)."""
    fx, fy = data.POSITIONS[spec.position]
    r = data.SIZES[spec.size] * size / data.IMAGE_SIZE
    cx, cy = fx * size, fy * size
    if rng is not None:
        r *= rng.uniform(0.9, 1.1)
        cx += rng.uniform(-2.5, 2.5) * size / data.IMAGE_SIZE
        cy += rng.uniform(-2.5, 2.5) * size / data.IMAGE_SIZE
    cx, cy = _clamp(spec.shape, cx, cy, r, size)
    return Placed(spec, cx, cy, r)


def place_freely(spec: data.ShapeSpec, rng: random.Random, size: int = data.IMAGE_SIZE) -> Placed:
    """``spec``'s shape and colour anywhere, any size; its position and size words follow."""
    r = rng.uniform(*FREE_RADIUS) * size / data.IMAGE_SIZE
    cx, cy = _clamp(spec.shape, rng.uniform(0, size), rng.uniform(0, size), r, size)
    words = data.ShapeSpec(spec.shape, spec.colour, size_word(r), grid_position(cx, cy, size))
    return Placed(words, cx, cy, r)


def random_layout(rng: random.Random) -> Layout:
    """A training scene (``data.random_scene``: never a held-out combination) and its geometry."""
    scene = data.random_scene(rng)
    if len(scene.shapes) == 1 and rng.random() < FREE_PLACEMENT:
        return Layout(scene.background, (place_freely(scene.shapes[0], rng),))
    return Layout(scene.background, tuple(place(s, rng) for s in scene.shapes))


def render_layout(layout: Layout, size: int = data.IMAGE_SIZE) -> Image.Image:
    """The picture of ``layout``, drawn exactly as ``data.render`` draws a scene."""
    scale = data._SUPERSAMPLE
    canvas = Image.new("RGB", (size * scale, size * scale), data.COLOURS[layout.background])
    draw = ImageDraw.Draw(canvas)
    for p in layout.shapes:
        points = [
            (x * scale, y * scale) for x, y in data._shape_polygon(p.spec.shape, p.cx, p.cy, p.r)
        ]
        draw.polygon(points, fill=data.COLOURS[p.spec.colour])
    return canvas.resize((size, size), Image.Resampling.BOX)


# -- sketches --------------------------------------------------------------------------------
def sketch_path(p: Placed, rng: random.Random) -> list[tuple[float, float]]:
    """A hand-drawn version of ``p``'s outline in 64-px coordinates: a little off in place and
    size, wobbling, slightly rotated, its end overshooting or short of the start."""
    cx = p.cx + rng.gauss(0, 0.7)
    cy = p.cy + rng.gauss(0, 0.7)
    r = p.r * rng.uniform(0.92, 1.08)
    if p.spec.shape == "circle":
        start = rng.uniform(0, 2 * math.pi)
        sweep = 2 * math.pi + rng.uniform(-0.35, 0.45)
        waves = [(k, rng.uniform(0, 0.07) * r, rng.uniform(0, 2 * math.pi)) for k in (1, 2, 3)]
        points = []
        count = 40
        for i in range(count + 1):
            t = start + sweep * i / count
            radius = r + sum(a * math.sin(k * t + phase) for k, a, phase in waves)
            radius += rng.gauss(0, 0.12)
            points.append((cx + radius * math.cos(t), cy + radius * math.sin(t)))
        return points
    corners = data._shape_polygon(p.spec.shape, 0.0, 0.0, r)
    angle = math.radians(rng.uniform(-5, 5))
    cos, sin = math.cos(angle), math.sin(angle)
    corners = [
        (cx + x * cos - y * sin + rng.gauss(0, 0.5), cy + x * sin + y * cos + rng.gauss(0, 0.5))
        for x, y in corners
    ]
    first = rng.randrange(len(corners))
    corners = corners[first:] + corners[:first] + [corners[first]]
    points = []
    for (x0, y0), (x1, y1) in itertools.pairwise(corners):
        length = math.hypot(x1 - x0, y1 - y0) or 1.0
        nx, ny = -(y1 - y0) / length, (x1 - x0) / length
        bow = rng.gauss(0, 0.03) * length
        pieces = 6
        for j in range(pieces):
            u = j / pieces
            offset = bow * 4 * u * (1 - u) + rng.gauss(0, 0.1)
            points.append((x0 + (x1 - x0) * u + nx * offset, y0 + (y1 - y0) * u + ny * offset))
    # The last edge stops short of or runs past the first corner.
    (xa, ya), (xb, yb) = corners[-2], corners[-1]
    end = rng.uniform(0.9, 1.12)
    points.append((xa + (xb - xa) * end, ya + (yb - ya) * end))
    return points


def draw_sketch(
    layout: Layout, rng: random.Random, size: int = data.IMAGE_SIZE
) -> tuple[Image.Image, list[list[tuple[float, float]]]]:
    """Black outlines on a white page (what the sketch pad gives), fitted to ``size`` px,
    and the drawn paths (in ``size``-px coordinates)."""
    scale = rng.choice(SKETCH_SCALES)
    width = rng.uniform(*STROKE_WIDTH) * scale
    page = Image.new("RGB", (size * scale, size * scale), (255, 255, 255))
    draw = ImageDraw.Draw(page)
    paths = []
    for p in layout.shapes:
        path = sketch_path(p, rng)
        paths.append(path)
        pixels = [(x * scale, y * scale) for x, y in path]
        draw.line(pixels, fill=(0, 0, 0), width=max(1, round(width)), joint="curve")
    if scale != 1:
        page = page.resize((size, size), Image.Resampling.LANCZOS)  # fit_control's resize
    return page, paths


def control_image(sketch: Image.Image) -> np.ndarray:
    """What the engine gives the ControlNet for this drawing: (h, w, 3) floats in [0, 1]."""
    from desktop.engine.control_images import preprocess

    return np.asarray(preprocess("scribble", sketch), dtype=np.float32) / 255.0


def control_batch(layouts: Sequence[Layout], rng: random.Random) -> torch.Tensor:
    """(N, 3, 64, 64) control images for fresh sketches of ``layouts``."""
    arrays = np.stack([control_image(draw_sketch(layout, rng)[0]) for layout in layouts])
    return torch.from_numpy(arrays).permute(0, 3, 1, 2).contiguous()


def caption(layout: Layout, rng: random.Random) -> str:
    """``data.caption``'s wording, but position and size words are often left out."""
    with_size = rng.random() < SIZE_WORD_KEPT
    with_position = rng.random() < POSITION_WORD_KEPT
    shapes = " and ".join(
        data.describe_shape(p.spec, rng, with_size, with_position) for p in layout.shapes
    )
    if rng.random() < 0.1:
        return shapes
    background = rng.choice(data._BACKGROUND_PHRASES).format(b=layout.background)
    return f"{shapes}, {background}" if rng.random() < 0.6 else f"{shapes} {background}"


# -- the network -----------------------------------------------------------------------------
def controlnet_config() -> dict:
    return json.loads((CONFIG / "config.json").read_text(encoding="utf-8"))


def make_controlnet(unet: torch.nn.Module) -> torch.nn.Module:
    """A ControlNet with the shipped config whose encoder computes exactly what ``unet``'s does.

    ``ControlNetModel.from_unet`` fails on the built-in UNet: ControlNet fixes its time
    embedding at 4 × the first block's channels (256) while the UNet's is 128. Tensors whose
    names and shapes match are copied; the time embedding, the prompt's added embedding and
    every ResNet's time projection are widened by *duplicating* the UNet's 128 values into 256
    (a LayerNorm over [x, x] equals [LN(x), LN(x)]; each time projection reads both copies at
    half weight), so the copy is exact. The zero output convolutions stay zero.
    """
    from diffusers import ControlNetModel

    config = {k: v for k, v in controlnet_config().items() if not k.startswith("_")}
    allowed = set(inspect.signature(ControlNetModel.__init__).parameters) - {"self"}
    net = ControlNetModel(**{k: v for k, v in config.items() if k in allowed})
    source = unet.state_dict()
    target = net.state_dict()
    with torch.no_grad():
        for name, tensor in target.items():
            if name.startswith(("controlnet_", "controlnet_cond_embedding")):
                continue
            value = source.get(name)
            if value is None:
                continue
            value = value.to(tensor.dtype)
            if value.shape == tensor.shape:
                tensor.copy_(value)
            elif name.endswith("time_emb_proj.weight") and tensor.shape[1] == 2 * value.shape[1]:
                tensor.copy_(torch.cat([value, value], dim=1) / 2)  # reads both copies
            elif name == "time_embedding.linear_2.weight" and tensor.shape == (
                2 * value.shape[0], 2 * value.shape[1]
            ):  # fmt: skip
                half = torch.cat([value, value], dim=1) / 2
                tensor.copy_(torch.cat([half, half], dim=0))
            elif (
                tensor.dim() >= 1
                and tensor.shape[0] == 2 * value.shape[0]
                and tensor.shape[1:] == value.shape[1:]
            ):  # outputs widened: time_embedding.linear_1, add_embedding.proj / norm2
                tensor.copy_(torch.cat([value, value], dim=0))
            else:
                raise ValueError(
                    f"{name}: ControlNet {tuple(tensor.shape)}, UNet {tuple(value.shape)}"
                )
    net.load_state_dict(target)
    return net


def save_controlnet(net: torch.nn.Module, out: Path) -> Path:
    """fp16 safetensors + the shipped config.json (so the engine and
    ``ControlNetModel.from_pretrained(out)`` both load it)."""
    from safetensors.torch import save_file

    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in net.state_dict().items()}
    weights = out / "diffusion_pytorch_model.safetensors"
    save_file(state, str(weights), metadata={"format": "pt"})
    weights.chmod(0o644)
    shutil.copyfile(CONFIG / "config.json", out / "config.json")
    return out


def load_builtin(model: Path) -> tuple:
    """The frozen parts of the built-in model, float32, eval, no gradients."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    vae = AutoencoderKL.from_pretrained(model / "vae", torch_dtype=torch.float32)
    unet = UNet2DConditionModel.from_pretrained(model / "unet", torch_dtype=torch.float32)
    text = CLIPTextModel.from_pretrained(model / "text_encoder", torch_dtype=torch.float32)
    tokenizer = CLIPTokenizer.from_pretrained(model / "tokenizer")
    text.config._attn_implementation = "eager"
    for module in (vae, unet, text):
        module.eval().requires_grad_(False)
    return vae, unet, text, tokenizer


# -- training --------------------------------------------------------------------------------
def build_cache(workdir: Path | None, vae: torch.nn.Module, count: int, seed: int) -> dict:
    """``count`` random layouts and the posterior means of their pictures (cached)."""
    path = workdir / f"control_latents_{count}_{seed}.pt" if workdir is not None else None
    if path is not None and path.exists():
        return torch.load(path, weights_only=False)
    rng = random.Random(seed + 11)
    layouts = [random_layout(rng) for _ in range(count)]
    means = []
    started = time.perf_counter()
    with torch.no_grad():
        for i in range(0, count, 256):
            images = common.to_tensor([render_layout(x) for x in layouts[i : i + 256]])
            means.append(vae.encode(images).latent_dist.mean.half())
    cache = {"layouts": pickle.dumps(layouts), "mean": torch.cat(means)}
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(cache, path)
    print(f"encoded {count} pictures in {time.perf_counter() - started:.0f} s", flush=True)
    return cache


def train_controlnet(
    model: Path,
    steps: int,
    workdir: Path | None = None,
    batch_size: int = 64,
    lr: float = 3e-4,
    seed: int = 0,
    cache_size: int = 20_000,
    warmup: int = 100,
    ema_decay: float = 0.998,
    log_every: int = 25,
    max_minutes: float | None = None,
) -> tuple[torch.nn.Module, dict]:
    """Train for ``steps`` steps (or until ``max_minutes`` of wall time, whichever comes
    first: the learning rate then decays over whichever runs out sooner); return the EMA
    ControlNet (float32) and stats."""
    from diffusers import DDPMScheduler

    common.seed_everything(seed)
    vae, unet, text_encoder, tokenizer = load_builtin(model)
    scaling = float(vae.config.scaling_factor)
    cache = build_cache(workdir, vae, cache_size, seed)
    layouts: list[Layout] = pickle.loads(cache["layouts"])
    lat_mean = cache["mean"]
    del vae

    architecture.use_classic_attention(unet)
    net = make_controlnet(unet).train()
    net.set_attn_processor(_classic())
    params = [p for p in net.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    sched_cfg = json.loads((model / "scheduler" / "scheduler_config.json").read_text())
    scheduler = DDPMScheduler(**{
        k: v for k, v in sched_cfg.items()
        if k in ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule",
                 "prediction_type")
    })  # fmt: skip
    snr = scheduler.alphas_cumprod / (1 - scheduler.alphas_cumprod)
    loss_weights = (1 / snr).clamp(1.0, HIGH_NOISE_WEIGHT)
    ema = EMA(net, decay=ema_decay)
    stats: dict = {"controlnet_parameters": architecture.count_parameters(net)}
    print(f"controlnet {stats['controlnet_parameters'] / 1e6:.2f} M parameters", flush=True)

    rng = random.Random(seed + 12)
    gen = torch.Generator().manual_seed(seed + 13)
    log = (workdir / "controlnet_loss.jsonl").open("a", encoding="utf-8") if workdir else None
    started = time.perf_counter()
    recent: list[tuple[float, float]] = []
    budget = max_minutes * 60 if max_minutes else None
    done = 0
    for step in range(steps):
        elapsed = time.perf_counter() - started
        if budget is not None and elapsed >= budget:
            print(f"time budget reached after {step} steps", flush=True)
            break
        frac = max(step / max(1, steps), elapsed / budget if budget else 0.0)
        scale = min(1.0, (step + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
        for group in optimizer.param_groups:
            group["lr"] = lr * scale
        index = torch.randint(0, len(layouts), (batch_size,), generator=gen)
        batch = [layouts[int(i)] for i in index]
        latents = lat_mean[index].float() * scaling
        cond = control_batch(batch, rng)
        captions = ["" if rng.random() < CFG_DROPOUT else caption(x, rng) for x in batch]
        ids = tokenizer(
            captions,
            padding="max_length",
            truncation=True,
            max_length=tokenizer.model_max_length,
            return_tensors="pt",
        ).input_ids
        noise = torch.randn(latents.shape, generator=gen)
        timesteps = sample_timesteps(gen, batch_size)
        noisy = scheduler.add_noise(latents, noise, timesteps)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            with torch.no_grad():
                hidden = text_encoder(ids).last_hidden_state
            down, mid = net(
                noisy, timesteps, encoder_hidden_states=hidden, controlnet_cond=cond,
                return_dict=False,
            )  # fmt: skip
            pred = unet(
                noisy, timesteps, hidden,
                down_block_additional_residuals=down, mid_block_additional_residual=mid,
            ).sample  # fmt: skip
        per_sample = F.mse_loss(pred.float(), noise, reduction="none").mean(dim=(1, 2, 3))
        weight = loss_weights[timesteps]
        loss = (weight * per_sample).sum() / weight.sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        ema.update(net)
        done = step + 1
        elapsed = time.perf_counter() - started
        value = float(loss.detach())
        recent.append((value, elapsed))
        if log is not None:
            log.write(json.dumps({"step": step + 1, "time": round(elapsed, 2),
                                  "loss": value, "lr": lr * scale}) + "\n")  # fmt: skip
        if log_every and ((step + 1) % log_every == 0 or step + 1 == steps):
            mean = sum(v for v, _ in recent) / len(recent)
            per_step = (recent[-1][1] - recent[0][1]) / max(1, len(recent) - 1)
            print(f"step {step + 1}/{steps} loss {mean:.4f} {per_step:.2f} s/step "
                  f"{elapsed / 60:.1f} min", flush=True)  # fmt: skip
            if log is not None:
                log.flush()
            recent = []
    if log is not None:
        log.close()
    stats.update(
        steps=done, minutes=round((time.perf_counter() - started) / 60, 1),
        batch_size=batch_size, lr=lr, cache_size=cache_size, ema_decay=ema_decay,
    )  # fmt: skip
    if workdir is not None:
        (workdir / "controlnet_stats.json").write_text(json.dumps(stats, indent=2))
    return ema.module.float(), stats


def loss_figure(workdir: Path, out: Path) -> Path:
    """The training loss (raw and a 50-step moving average), like ``plots.loss_curve``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from desktop.training import plots

    xs, ys = plots._read(workdir / "controlnet_loss.jsonl")
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.plot(xs, ys, color="0.8", linewidth=0.6)
    ax.plot(xs, plots._smooth(ys), color="C0")
    ax.set_title("ControlNet: UNet ε-prediction MSE (1/SNR-weighted)")
    ax.set_xlabel("step")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def _classic():
    from diffusers.models.attention_processor import AttnProcessor

    return AttnProcessor()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m desktop.training train-controlnet", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("--model", type=Path, default=Path("models/builtin"))
    parser.add_argument("--out", type=Path, default=Path("models/controlnet/builtin_scribble"))
    parser.add_argument("--workdir", type=Path, default=Path("training-runs/controlnet"))
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument(
        "--max-minutes", type=float, default=None,
        help="stop after this much wall time even if --steps are not done",
    )  # fmt: skip
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--cache-size", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--figure", type=Path, default=Path("models/figures/controlnet-scribble-loss.png"),
        help="where the loss curve goes",
    )  # fmt: skip
    args = parser.parse_args(argv)
    from desktop.engine.environment import apply_defaults

    apply_defaults()
    torch.set_num_threads(args.threads)
    args.workdir.mkdir(parents=True, exist_ok=True)
    (args.workdir / "controlnet_loss.jsonl").unlink(missing_ok=True)  # a fresh run's log
    started = time.perf_counter()
    net, stats = train_controlnet(
        args.model, args.steps, args.workdir, batch_size=args.batch_size, lr=args.lr,
        seed=args.seed, cache_size=args.cache_size, max_minutes=args.max_minutes,
    )  # fmt: skip
    save_controlnet(net, args.out)
    loss_figure(args.workdir, args.figure)
    stats["total_minutes"] = round((time.perf_counter() - started) / 60, 1)
    (args.workdir / "controlnet_stats.json").write_text(json.dumps(stats, indent=2))
    size = sum(p.stat().st_size for p in args.out.iterdir()) / 2**20
    print(f"ControlNet written to {args.out} ({size:.1f} MiB)")
    print(json.dumps(stats, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
