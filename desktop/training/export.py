"""Write the trained parts as a Stable Diffusion diffusers folder plus ``sandstorm.json``."""

from __future__ import annotations

import copy
import json
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from desktop.training import architecture, common, data

DEFAULTS = {"default_sampler": "DPM++ 2M", "default_steps": 20, "default_cfg": 2.5}
EXAMPLE_PROMPTS = (
    "a big red circle on the left, blue background",
    "small yellow triangle at the top on black",
    "a big white square in the center, purple background",
    "a small green circle in the bottom right corner, orange background",
    "a big blue triangle on the right, yellow background",
)


@torch.no_grad()
def fit_preview_factors(
    vae: Any, count: int = 512, seed: int = 7
) -> tuple[list[list[float]], list[float]]:
    """Least-squares map from scaled latents (what the UNet sees) to RGB in [-1, 1].

    Each latent pixel covers an 8×8 patch; the target is that patch's mean colour. Returns
    ``(factors, bias)`` with ``rgb = latent @ factors + bias``.
    """
    rng = random.Random(seed)
    images = common.image_batch(rng, count)
    latents = vae.encode(images).latent_dist.mean * vae.config.scaling_factor
    factor = images.shape[-1] // latents.shape[-1]
    targets = torch.nn.functional.avg_pool2d(images, factor)
    x = latents.permute(0, 2, 3, 1).reshape(-1, latents.shape[1]).double().numpy()
    y = targets.permute(0, 2, 3, 1).reshape(-1, 3).double().numpy()
    x1 = np.concatenate([x, np.ones((len(x), 1))], axis=1)
    solution, *_ = np.linalg.lstsq(x1, y, rcond=None)
    factors = [[round(float(v), 5) for v in row] for row in solution[:-1]]
    bias = [round(float(v), 5) for v in solution[-1]]
    return factors, bias


def make_pipeline(vae: Any, text_encoder: Any, tokenizer: Any, unet: Any) -> Any:
    from diffusers import PNDMScheduler, StableDiffusionPipeline

    scheduler = PNDMScheduler.from_config(
        {k: v for k, v in architecture.SCHEDULER_CONFIG.items() if k != "_class_name"}
    )
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def export_model(
    out: Path,
    vae: Any,
    text_encoder: Any,
    tokenizer: Any,
    unet: Any,
    defaults: dict[str, Any] | None = None,
) -> Path:
    """Save an fp16 safetensors diffusers folder at ``out`` (replaced atomically-ish)."""
    halves = [copy.deepcopy(m).half() for m in (vae, text_encoder, unet)]
    pipe = make_pipeline(halves[0], halves[1], tokenizer, halves[2])
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    pipe.save_pretrained(staging, safe_serialization=True)
    factors, bias = fit_preview_factors(vae)
    info = {
        "family": "builtin",
        "native_size": data.IMAGE_SIZE,
        "latent_rgb_factors": factors,
        "latent_rgb_bias": bias,
        "example_prompts": list(EXAMPLE_PROMPTS),
        **DEFAULTS,
        **(defaults or {}),
    }
    (staging / "sandstorm.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)
    return out


def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
