"""Per-step previews: the model's predicted image, decoded cheaply from latents.

A linear latent→RGB map at latent resolution costs microseconds, so previews can be shown
at every step without slowing generation. When TAESD decoder weights are present in
``models/vae_approx`` (``taesd_decoder.*`` for SD1/SD2, ``taesdxl_decoder.*`` for SDXL) the
tiny autoencoder from diffusers (``AutoencoderTiny``) gives full-resolution previews instead.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    import torch

    from desktop.engine.models import ModelInfo

# Linear fits of the SD1/SD2 and SDXL VAEs' decoders (the factors the community tools use),
# applied to latents in the UNet's (scaled) space; output is RGB in [-1, 1].
SD_FACTORS = (
    (0.3512, 0.2297, 0.3227),
    (0.3250, 0.4974, 0.2350),
    (-0.2829, 0.1762, 0.2721),
    (-0.2120, -0.2616, -0.7177),
)
SD_BIAS = (0.0, 0.0, 0.0)
SDXL_FACTORS = (
    (0.3651, 0.4232, 0.4341),
    (-0.2533, -0.0042, 0.1068),
    (0.1076, 0.1111, -0.0362),
    (-0.3165, -0.2492, -0.2188),
)
SDXL_BIAS = (0.1084, -0.0175, -0.0011)

Previewer = Callable[["torch.Tensor"], Image.Image]


class LinearPreviewer:
    """Maps the first latent of a batch to an RGB image with ``latent @ factors + bias``."""

    def __init__(self, factors: tuple | list, bias: tuple | list = (0.0, 0.0, 0.0)) -> None:
        import torch

        self.factors = torch.tensor(factors, dtype=torch.float32)
        self.bias = torch.tensor(bias, dtype=torch.float32)

    def __call__(self, latents: torch.Tensor) -> Image.Image:
        latent = latents[0].detach().to("cpu", dtype=self.factors.dtype)
        if latent.shape[0] != self.factors.shape[0]:
            return _channel_preview(latent)
        rgb = (latent.permute(1, 2, 0) @ self.factors + self.bias).clamp(-1.0, 1.0)
        return _to_image(((rgb + 1.0) * 127.5).numpy())


def _channel_preview(latent: torch.Tensor) -> Image.Image:
    """Fallback for latent spaces without factors: first three channels, normalised."""
    chans = latent[:3] if latent.shape[0] >= 3 else latent[:1].expand(3, -1, -1)
    lo, hi = chans.amin(), chans.amax()
    scaled = (chans - lo) / (hi - lo).clamp_min(1e-6) * 255.0
    return _to_image(scaled.permute(1, 2, 0).numpy())


def _to_image(array: np.ndarray) -> Image.Image:
    return Image.fromarray(np.rint(np.nan_to_num(array)).clip(0, 255).astype(np.uint8), "RGB")


class TaesdPreviewer:
    """Full-resolution previews through a tiny autoencoder decoder."""

    def __init__(self, decoder_file: Path, device: str) -> None:
        import torch
        from diffusers import AutoencoderTiny

        self.device = device
        # cast: mypy does not see AutoencoderTiny's torch.nn.Module base (eval, to, ...).
        self.model = cast(Any, AutoencoderTiny())
        self.model.eval()
        state = _load_weights(decoder_file)
        self.model.decoder.load_state_dict(_taesd_decoder_keys(state))
        self.model.to(device, dtype=torch.float32)

    def __call__(self, latents: torch.Tensor) -> Image.Image:
        import torch

        with torch.no_grad():
            latent = latents[:1].detach().to(self.device, dtype=torch.float32)
            out = self.model.decode(latent).sample[0]  # [-1, 1]
        rgb = ((out.clamp(-1, 1) + 1.0) * 127.5).permute(1, 2, 0).cpu().numpy()
        return _to_image(rgb)


def _load_weights(path: Path) -> dict:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)


def _taesd_decoder_keys(state: dict) -> dict:
    """Accept both the original TAESD layout (``"3.conv.0.weight"``, a Sequential whose
    element 0 is a parameter-free clamp) and diffusers' ``layers.N`` / ``decoder.layers.N``."""
    out = {}
    for key, value in state.items():
        key = key.removeprefix("decoder.")
        if key.startswith("layers."):
            out[key] = value
            continue
        index, _, rest = key.partition(".")
        out[f"layers.{int(index) - 1}.{rest}"] = value
    return out


def find_taesd(sdxl: bool) -> Path | None:
    """The TAESD decoder weights for the family, if the user installed them."""
    stem = "taesdxl_decoder" if sdxl else "taesd_decoder"
    from desktop.engine.model_folders import own_folders

    for folder in own_folders("vae_approx"):
        for suffix in (".safetensors", ".pth", ".pt"):
            candidate = folder / f"{stem}{suffix}"
            if candidate.is_file():
                return candidate
    return None


def previewer_for(info: ModelInfo, device: str = "cpu", use_taesd: bool = True) -> Previewer:
    """Pick the best previewer for a model: TAESD if installed, else its linear factors."""
    if info.family == "builtin" and "latent_rgb_factors" in info.extras:
        return LinearPreviewer(
            info.extras["latent_rgb_factors"], info.extras.get("latent_rgb_bias", (0, 0, 0))
        )
    if use_taesd and info.family != "builtin" and (taesd := find_taesd(info.is_sdxl)):
        return TaesdPreviewer(taesd, device)
    if info.is_sdxl:
        return LinearPreviewer(SDXL_FACTORS, SDXL_BIAS)
    return LinearPreviewer(SD_FACTORS, SD_BIAS)
