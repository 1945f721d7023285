"""9-channel inpainting checkpoints: found usable, loaded offline, and used for masked jobs.

The tiny models have a 9-channel UNet (latents, mask, masked-image latents) like the public
SD1.5/SD2/SDXL inpainting checkpoints; the SD1 one is also written as one original-layout
file, so it loads through the shipped config with ``num_in_channels=9``.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from desktop.engine.inpaint import prepare_inpaint
from desktop.engine.loader import load_pipeline
from desktop.engine.models import inspect_file, inspect_folder
from desktop.engine.parts import MaskSpec
from desktop.engine.request import GenerationRequest
from tests.helpers import ldm
from tests.helpers.tiny_models import build_tiny_sd, build_tiny_sdxl, mark_native_size


@pytest.fixture(scope="module")
def inpaint_sd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = build_tiny_sd(tmp_path_factory.mktemp("models") / "tiny-sd-inpaint", in_channels=9)
    mark_native_size(folder)
    return folder


@pytest.fixture(scope="module")
def inpaint_sdxl(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = build_tiny_sdxl(
        tmp_path_factory.mktemp("models") / "tiny-sdxl-inpaint", seed=1, in_channels=9
    )
    mark_native_size(folder)
    return folder


@pytest.fixture(scope="module")
def engine():
    from desktop.engine.devices import ComputeOptions
    from desktop.engine.generate import Engine

    return Engine(device="cpu", options=ComputeOptions(precision="fp32"), extra_sources=[])


def _noise(path: Path, size=(64, 64), seed: int = 0) -> Path:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels, "RGB").save(path)
    return path


def _mask(path: Path, size=(64, 64), box=(20, 20, 43, 43)) -> Path:
    mask = Image.new("L", size, 0)
    ImageDraw.Draw(mask).rectangle(box, fill=255)
    mask.save(path)
    return path


def _four_channel_copy(folder: Path, tmp_path: Path) -> Path:
    """A copy with 4-channel network configs, as the shipped SD1.5 config folder has them: the
    loader must widen the UNet to 9 channels itself, as it does for a real checkpoint."""
    copy = tmp_path / "four-channel"
    shutil.copytree(folder, copy)
    config = copy / "unet" / "config.json"
    data = json.loads(config.read_text())
    data["in_channels"] = 4
    config.write_text(json.dumps(data))
    return copy


def test_a_single_file_inpainting_checkpoint_loads_offline_with_the_shipped_config(
    inpaint_sd: Path, tmp_path: Path
):
    pipe = ldm.load_tiny_pipeline(inpaint_sd)
    assert pipe.unet.config.in_channels == 9
    file = ldm.write_single_file(pipe, tmp_path / "tiny-sd1-inpainting.safetensors")
    info = inspect_file(file)
    assert (info.family, info.usable, info.is_inpaint, info.base_family) == (
        "sd1-inpaint",
        True,
        True,
        "sd1",
    )
    configs = ldm.make_config_root(_four_channel_copy(inpaint_sd, tmp_path), tmp_path / "configs")
    loaded = load_pipeline(info, "cpu", torch.float32, config_root=configs)
    assert type(loaded.txt2img).__name__ == "StableDiffusionInpaintPipeline"
    assert loaded.txt2img.unet.config.in_channels == 9
    ours, theirs = loaded.txt2img.unet.state_dict(), pipe.unet.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_an_inpainting_folder_is_usable_and_gets_the_inpaint_pipeline(inpaint_sd, inpaint_sdxl):
    for folder, family, name in (
        (inpaint_sd, "sd1-inpaint", "StableDiffusionInpaintPipeline"),
        (inpaint_sdxl, "sdxl-inpaint", "StableDiffusionXLInpaintPipeline"),
    ):
        info = inspect_folder(folder)
        assert (info.family, info.usable) == (family, True), info.problem
        loaded = load_pipeline(info, "cpu", torch.float32)
        assert type(loaded.txt2img).__name__ == name
        assert loaded.img2img.unet is loaded.txt2img.unet


@pytest.mark.parametrize("model", ["inpaint_sd", "inpaint_sdxl"])
def test_a_masked_job_on_an_inpainting_model_keeps_the_outside_exact(
    engine, model, request, tmp_path
):
    folder = request.getfixturevalue(model)
    init = _noise(tmp_path / "init.png", (96, 72))
    mask = _mask(tmp_path / "mask.png", (96, 72), (30, 20, 61, 51))
    job = GenerationRequest(
        prompt="a blue square",
        model=str(folder),
        steps=3,
        width=64,
        height=64,
        seed=2,
        init_image=str(init),
        strength=1.0,
        mask=MaskSpec(image=str(mask), blur=2, only_masked=False),
    )
    out = np.asarray(engine.generate(job).images[0].image)
    original = np.asarray(Image.open(init))
    assert out.shape == original.shape
    soft = np.asarray(prepare_inpaint(job.mask, init, 64, 64).soft_mask)
    assert np.array_equal(out[soft == 0], original[soft == 0])
    assert np.abs(out[soft == 255].astype(int) - original[soft == 255]).mean() > 10


def test_an_inpainting_model_also_makes_pictures_without_a_mask(engine, inpaint_sd, tmp_path):
    base = GenerationRequest(
        prompt="a cat", model=str(inpaint_sd), steps=2, width=64, height=64, seed=1
    )
    txt2img = np.asarray(engine.generate(base).images[0].image)
    assert txt2img.shape == (64, 64, 3) and txt2img.std() > 1
    init = _noise(tmp_path / "init.png")
    img2img = engine.generate(replace(base, init_image=str(init), strength=0.6))
    assert img2img.images[0].image.size == (64, 64)
