"""Hires fix arithmetic: the second pass's size and steps, and the latent upscale.

AUTOMATIC1111's hires fix, as its users know it: generate at the base size, upscale (the
latents, or the decoded pixels with Lanczos or an upscaler model), then run img2img at the
larger size with its own steps and denoising strength. "Hires steps" are the steps the second
pass actually runs (0: the base steps), so the sampler is given ``steps / denoise`` steps and
skips the first ones, as A1111 does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from desktop.engine.errors import RequestError
from desktop.engine.parts import HiresSpec

if TYPE_CHECKING:
    import torch

    from desktop.engine.request import GenerationRequest

#: The upscaler that resizes the latents themselves (no decode, no model).
LATENT = "Latent"
#: Largest side a hires pass may reach (the request's own size limit).
MAX_HIRES_SIDE = 4096


@dataclass(frozen=True)
class HiresPlan:
    """The second pass of one request.

    Attributes:
        width, height: the upscaled size (multiples of 8).
        steps: the steps the pass runs (what the progress bar counts).
        scheduler_steps: what the sampler is given; it runs the last ``steps`` of them.
        denoise: the img2img strength of the pass.
        upscaler: "Latent", "Lanczos" or an upscaler model's name.
    """

    width: int
    height: int
    steps: int
    scheduler_steps: int
    denoise: float
    upscaler: str

    @property
    def latent(self) -> bool:
        return self.upscaler == LATENT


def hires_size(width: int, height: int, scale: float) -> tuple[int, int]:
    """The base size times ``scale``, each side rounded to a multiple of 8 (as A1111)."""
    return (max(8, round(width * scale / 8) * 8), max(8, round(height * scale / 8) * 8))


def scheduler_steps(steps: int, denoise: float) -> int:
    """The sampler's step count so that img2img at ``denoise`` runs exactly ``steps``.

    diffusers' img2img runs ``min(int(n * strength), n)`` of ``n`` steps; the smallest such
    ``n`` is searched from ``steps / denoise``.
    """
    if denoise <= 0:
        return 0
    n = max(steps, math.floor(steps / min(denoise, 1.0)))
    while min(int(n * denoise), n) < steps:
        n += 1
    return n


def plan_hires(request: GenerationRequest) -> HiresPlan | None:
    """The request's second pass, or None without one; ``RequestError`` when it cannot run."""
    spec: HiresSpec | None = request.hires
    if spec is None:
        return None
    if request.is_img2img or request.mask is not None or request.expand is not None:
        raise RequestError(
            "Hires fix works on text to image; for an init image, set the larger size in "
            "img2img or upscale the image from the gallery."
        )
    width, height = hires_size(request.width, request.height, spec.scale)
    if max(width, height) > MAX_HIRES_SIDE:
        fits = MAX_HIRES_SIDE / max(request.width, request.height)
        raise RequestError(
            f"Hires fix ×{spec.scale:g} would make {width}×{height}, larger than "
            f"{MAX_HIRES_SIDE} pixels a side; use a hires upscale of at most ×{fits:.2f}."
        )
    steps = spec.steps or request.steps
    return HiresPlan(
        width=width,
        height=height,
        steps=steps if spec.denoise > 0 else 0,
        scheduler_steps=scheduler_steps(steps, spec.denoise),
        denoise=spec.denoise,
        upscaler=spec.upscaler,
    )


def upscale_latents(latents: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Latents resized to ``width``×``height`` pixels (bilinear, as A1111's "Latent")."""
    import torch.nn.functional as F

    size = (height // 8, width // 8)
    return F.interpolate(latents.float(), size=size, mode="bilinear", antialias=False).to(
        latents.dtype
    )
