"""Stage 2: train the UNet and the text encoder together on the DDPM epsilon objective.

* Latents are encoded once (posterior means of a fixed set of scenes, with jittered
  positions and sizes), which saves a VAE pass per step; captions are re-worded every time.
* Scenes come in pairs that differ only in where the shapes are, and a batch holds both
  halves of each pair, so position words get a clear, low-variance learning signal.
* Classifier-free guidance: 10 % of captions are dropped to the empty prompt.
* Half of the timesteps are drawn from the noisy middle of the schedule (t in [400, 900)),
  where a sample's layout — where the shape goes — is decided; uniform sampling alone gives
  that range little weight, and position words were the last thing the model learned.
* An exponential moving average of the weights is what gets exported.
* Training stops after a wall-clock budget; the learning rate decays over that budget.
"""

from __future__ import annotations

import copy
import json
import math
import pickle
import random
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from desktop.training import architecture, common, data

CFG_DROPOUT = 0.1
# The ε loss weighs a timestep's error in the picture by its signal-to-noise ratio, so at high
# noise — where the layout, hence position, is decided — wrong pictures cost almost nothing.
# Each sample's loss is multiplied by 1/SNR, clamped to [1, HIGH_NOISE_WEIGHT].
HIGH_NOISE_WEIGHT = 3.0


def build_latent_cache(workdir: Path, vae: torch.nn.Module, count: int, seed: int) -> dict:
    """Encode ``count`` random scenes once; cached in ``workdir/latents.pt``."""
    path = workdir / "latents.pt"
    if path.exists():
        cache = torch.load(path, weights_only=False)
        if cache["count"] == count // 2 * 2:
            return cache
    rng = random.Random(seed + 1)
    scenes = []
    for _ in range(count // 2):
        scene = data.random_scene(rng)
        scenes += [scene, data.moved(scene, rng)]
    means = []
    started = time.perf_counter()
    with torch.no_grad():
        for i in range(0, count, 256):
            images = common.to_tensor([data.render(s, rng) for s in scenes[i : i + 256]])
            dist = vae.encode(images).latent_dist
            means.append(dist.mean.half())
    cache = {
        "count": len(scenes),
        "scenes": pickle.dumps(scenes),
        "mean": torch.cat(means),
    }
    torch.save(cache, path)
    print(f"encoded {count} scenes in {time.perf_counter() - started:.0f} s")
    return cache


def sample_timesteps(generator: torch.Generator, count: int) -> torch.Tensor:
    uniform = torch.randint(0, 1000, (count,), generator=generator)
    middle = torch.randint(400, 900, (count,), generator=generator)
    pick = torch.rand(count, generator=generator) < 0.5
    return torch.where(pick, middle, uniform)


class EMA:
    """Exponential moving average of a module's parameters (warm-up as in diffusers)."""

    def __init__(self, module: torch.nn.Module, decay: float = 0.999) -> None:
        self.module = copy.deepcopy(module).eval().requires_grad_(False)
        self.decay = decay
        self.updates = 0

    @torch.no_grad()
    def update(self, module: torch.nn.Module) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for ema_p, p in zip(self.module.parameters(), module.parameters(), strict=True):
            ema_p.lerp_(p.detach(), 1 - decay)


def train_unet(
    workdir: Path,
    minutes: float,
    batch_size: int = 64,
    lr: float = 5e-4,
    seed: int = 0,
    cache_size: int = 40_000,
    save_every_minutes: float = 10.0,
    on_checkpoint: Callable[[torch.nn.Module, torch.nn.Module, int, float], None] | None = None,
) -> tuple[torch.nn.Module, torch.nn.Module, dict]:
    """Train for ``minutes`` of wall time; return the EMA UNet, EMA text encoder and stats.

    ``on_checkpoint(unet, text_encoder, step, elapsed)`` is called with the EMA models every
    ``save_every_minutes`` and at the end, so a usable model exists even if training is cut.
    """
    from diffusers import AutoencoderKL, DDPMScheduler

    from desktop.training.tokenizer import load_tokenizer

    common.seed_everything(seed)
    vae = AutoencoderKL.from_pretrained(workdir / "vae").eval().requires_grad_(False)
    scaling = float(vae.config.scaling_factor)
    cache = build_latent_cache(workdir, vae, cache_size, seed)
    scenes: list[data.Scene] = pickle.loads(cache["scenes"])
    lat_mean = cache["mean"]
    tokenizer = load_tokenizer(workdir / "tokenizer")

    unet = architecture.make_unet().train()
    architecture.use_classic_attention(unet)
    text_encoder = architecture.make_text_encoder(
        len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id
    ).train()
    text_encoder.config._attn_implementation = "eager"
    params = list(unet.parameters()) + list(text_encoder.parameters())
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    scheduler = DDPMScheduler(**{
        k: v for k, v in architecture.SCHEDULER_CONFIG.items()
        if k in ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule",
                 "prediction_type")
    })  # fmt: skip
    snr = scheduler.alphas_cumprod / (1 - scheduler.alphas_cumprod)
    loss_weights = (1 / snr).clamp(1.0, HIGH_NOISE_WEIGHT)
    ema_unet, ema_text = EMA(unet), EMA(text_encoder)
    stats = {
        "unet_parameters": architecture.count_parameters(unet),
        "text_encoder_parameters": architecture.count_parameters(text_encoder),
    }
    print(f"unet {stats['unet_parameters'] / 1e6:.2f} M, text encoder "
          f"{stats['text_encoder_parameters'] / 1e6:.2f} M parameters")  # fmt: skip

    rng = random.Random(seed + 2)
    gen = torch.Generator().manual_seed(seed + 3)
    total = minutes * 60
    warmup = 200
    bar = common.ProgressBar("unet", total, workdir / "unet_loss.jsonl")
    step = 0
    next_save = save_every_minutes * 60
    while bar.elapsed < total:
        frac = bar.elapsed / total
        scale = min(1.0, (step + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
        for group in optimizer.param_groups:
            group["lr"] = lr * scale
        # Both scenes of a pair (same picture, the shapes moved elsewhere): within a batch the
        # position words are then the only thing that tells the two targets apart.
        pairs = torch.randint(0, len(scenes) // 2, (batch_size // 2,), generator=gen)
        index = torch.stack([2 * pairs, 2 * pairs + 1], dim=1).flatten()
        latents = lat_mean[index].float() * scaling
        captions = [
            "" if rng.random() < CFG_DROPOUT else data.caption(scenes[int(i)], rng) for i in index
        ]
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
            hidden = text_encoder(ids).last_hidden_state
            pred = unet(noisy, timesteps, hidden).sample
        per_sample = F.mse_loss(pred.float(), noise, reduction="none").mean(dim=(1, 2, 3))
        weight = loss_weights[timesteps]
        loss = (weight * per_sample).sum() / weight.sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        ema_unet.update(unet)
        ema_text.update(text_encoder)
        step += 1
        bar.update(step, float(loss), lr=lr * scale)
        if on_checkpoint is not None and bar.elapsed >= next_save:
            next_save += save_every_minutes * 60
            on_checkpoint(ema_unet.module, ema_text.module, step, bar.elapsed)
    bar.close()
    stats.update(steps=step, minutes=round(bar.elapsed / 60, 1), batch_size=batch_size, lr=lr)
    (workdir / "unet_stats.json").write_text(json.dumps(stats, indent=2), encoding="utf-8")
    return ema_unet.module, ema_text.module, stats
