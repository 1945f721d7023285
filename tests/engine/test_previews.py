"""Latent→RGB previews: linear factors per family, and TAESD when its weights are present."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from desktop.engine import paths
from desktop.engine.generate import Engine
from desktop.engine.models import ModelInfo
from desktop.engine.previews import (
    SD_FACTORS,
    SDXL_BIAS,
    LinearPreviewer,
    TaesdPreviewer,
    find_taesd,
    previewer_for,
)
from desktop.engine.progress import RecordingProgress
from desktop.engine.request import GenerationRequest


def _info(family: str, **extras) -> ModelInfo:
    return ModelInfo("m", Path("/nowhere"), "diffusers", family, extras=extras)


def test_linear_preview_matches_the_factor_formula():
    latents = torch.randn(2, 4, 8, 6)
    image = LinearPreviewer(SD_FACTORS)(latents)
    assert image.size == (6, 8) and image.mode == "RGB"
    expected = (latents[0].permute(1, 2, 0) @ torch.tensor(SD_FACTORS)).clamp(-1, 1)
    expected = ((expected + 1) * 127.5).numpy().clip(0, 255).astype(np.uint8)
    assert np.abs(np.asarray(image, int) - expected.astype(int)).max() <= 1


def test_sdxl_uses_bias_and_builtin_uses_its_own_factors():
    zero = torch.zeros(1, 4, 2, 2)
    xl = np.asarray(previewer_for(_info("sdxl"), use_taesd=False)(zero))
    expected = [(b + 1) * 127.5 for b in SDXL_BIAS]
    assert np.abs(xl[0, 0].astype(float) - expected).max() <= 0.5
    own = previewer_for(
        _info("builtin", latent_rgb_factors=[[1, 0, 0]] * 4, latent_rgb_bias=[0, 0, 1])
    )
    assert tuple(np.asarray(own(zero))[0, 0]) == (128, 128, 255)


def test_unusual_latent_channels_fall_back_to_normalised_channels():
    image = LinearPreviewer(SD_FACTORS)(torch.randn(1, 16, 4, 4))
    assert image.size == (4, 4)


def _write_taesd(folder: Path, name: str) -> Path:
    from diffusers import AutoencoderTiny

    decoder = AutoencoderTiny().decoder.state_dict()
    # The original TAESD file is a Sequential whose first element is a parameter-free clamp.
    original = {}
    for key, value in decoder.items():
        index, _, rest = key.removeprefix("layers.").partition(".")
        original[f"{int(index) + 1}.{rest}"] = value.contiguous()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    save_file(original, str(path))
    return path


def test_taesd_weights_give_full_resolution_previews(tiny_sd):
    assert find_taesd(sdxl=False) is None
    path = _write_taesd(paths.user_models_dir() / "vae_approx", "taesd_decoder.safetensors")
    assert find_taesd(sdxl=False) == path and find_taesd(sdxl=True) is None
    previewer = previewer_for(replace(_info("sd1")), "cpu")
    assert isinstance(previewer, TaesdPreviewer)
    assert previewer(torch.randn(1, 4, 8, 8)).size == (64, 64)

    progress = RecordingProgress()
    request = GenerationRequest(prompt="x", model=str(tiny_sd), steps=2, width=64, height=64)
    Engine(device="cpu").generate(request, progress)
    assert [u.preview.size for u in progress.updates] == [(64, 64), (64, 64)]
