"""The shipped built-in model: its folder, and that it follows prompts through the engine."""

from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from desktop.engine import paths
from desktop.engine.generate import Engine
from desktop.engine.request import GenerationRequest
from desktop.engine.samplers import SAMPLERS, is_available
from desktop.training import common, data, evaluate, score

MODEL = paths.BUILTIN_MODEL
# Floors a little below the targets in evaluate.TARGETS (the shipped model meets all of
# them; models/README.md has its table), so that a broken model or pipeline fails.
FLOORS = {"background": 0.90, "colour": 0.85, "position": 0.80, "size": 0.80, "shape": 0.65}


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine(device="cpu")


@pytest.fixture(scope="module")
def defaults() -> dict:
    return evaluate.model_defaults(MODEL)


def _generate(engine: Engine, defaults: dict, prompt: str, **overrides) -> np.ndarray:
    settings = {
        "sampler": defaults["sampler"],
        "steps": defaults["steps"],
        "cfg_scale": defaults["cfg_scale"],
        "width": defaults["size"],
        "height": defaults["size"],
        "seed": 7,
        **overrides,
    }
    request = GenerationRequest(prompt=prompt, model=str(MODEL), **settings)
    return engine.generate(request).images[0].image


def test_folder_is_a_small_offline_stable_diffusion_pipeline() -> None:
    from diffusers import StableDiffusionPipeline

    index = json.loads((MODEL / "model_index.json").read_text(encoding="utf-8"))
    assert index["_class_name"] == "StableDiffusionPipeline"
    assert index["safety_checker"] == [None, None]
    assert index["feature_extractor"] == [None, None]
    assert index["requires_safety_checker"] is False
    weights = list(MODEL.rglob("*.safetensors"))
    assert {w.parent.name for w in weights} == {"unet", "vae", "text_encoder"}
    assert not list(MODEL.rglob("*.bin"))
    assert sum(p.stat().st_size for p in MODEL.rglob("*") if p.is_file()) <= 30_000_000
    pipe = StableDiffusionPipeline.from_pretrained(
        MODEL, local_files_only=True, dtype=torch.float32
    )
    assert pipe.unet.dtype == torch.float32
    for word in data.VOCABULARY:
        assert len(pipe.tokenizer(word, add_special_tokens=False).input_ids) == 1


def test_sandstorm_json_describes_the_model() -> None:
    info = json.loads((MODEL / "sandstorm.json").read_text(encoding="utf-8"))
    assert info["family"] == "builtin"
    assert info["native_size"] == data.IMAGE_SIZE
    assert len(info["latent_rgb_factors"]) == 4
    assert all(len(row) == 3 for row in info["latent_rgb_factors"])
    assert len(info["latent_rgb_bias"]) == 3
    assert info["default_sampler"] in SAMPLERS and info["default_steps"] == 20
    assert info["example_prompts"]


def test_preview_factors_explain_the_pictures_colours() -> None:
    """The linear preview is rough (this VAE's latents are far from linear in colour), but it
    must beat a flat grey guess and get light and dark the right way round."""
    from diffusers import AutoencoderKL

    info = json.loads((MODEL / "sandstorm.json").read_text(encoding="utf-8"))
    vae = AutoencoderKL.from_pretrained(MODEL / "vae", torch_dtype=torch.float32)
    factors = torch.tensor(info["latent_rgb_factors"])
    bias = torch.tensor(info["latent_rgb_bias"])
    images = common.image_batch(random.Random(99), 32)
    with torch.no_grad():
        latents = vae.encode(images).latent_dist.mean * vae.config.scaling_factor
    preview = latents.permute(0, 2, 3, 1) @ factors + bias
    target = torch.nn.functional.avg_pool2d(images, 8).permute(0, 2, 3, 1)
    explained = 1 - ((preview - target) ** 2).mean() / target.var(dim=(0, 1, 2)).mean()
    assert explained > 0.2
    brightness = {}
    for colour in ("white", "black"):
        x = common.to_tensor([data.render(data.Scene(colour, ()))])
        with torch.no_grad():
            lat = vae.encode(x).latent_dist.mean * vae.config.scaling_factor
        brightness[colour] = float((lat.permute(0, 2, 3, 1) @ factors + bias).mean())
    assert brightness["white"] > brightness["black"] + 0.5


def test_follows_held_out_prompts(engine: Engine, defaults: dict) -> None:
    cases = data.evaluation_cases(16, seed=4321)
    result = evaluate.evaluate(evaluate.engine_generator(MODEL, engine=engine), cases)
    accuracy = result["accuracy"]
    failing = {k: v for k, v in accuracy.items() if v < FLOORS[k]}
    assert not failing, evaluate.format_table(accuracy, len(cases))


def test_one_picture_is_fast(engine: Engine, defaults: dict) -> None:
    _generate(engine, defaults, "a big red circle on the left, blue background")  # warm up
    started = time.perf_counter()
    _generate(engine, defaults, "a small yellow triangle at the top, black background")
    # The target is 2 s on two CPU cores; the margin keeps a busy CI machine from failing.
    assert time.perf_counter() - started < 6.0


@pytest.mark.parametrize("sampler", [name for name in SAMPLERS if is_available(name)])
def test_every_sampler_follows_the_prompt(engine: Engine, defaults: dict, sampler: str) -> None:
    image = _generate(
        engine, defaults, "a big white square in the center, blue background",
        sampler=sampler, steps=SAMPLERS[sampler].default_steps,
    )  # fmt: skip
    pixels = np.asarray(image, dtype=np.float32)
    assert not np.isnan(pixels).any() and pixels.max() > 30, "picture is black or broken"
    reading = score.read_image(image)
    assert (reading.background, reading.colour, reading.position) == ("blue", "white", "center")


def test_img2img_recolours_a_circle(engine: Engine, defaults: dict, tmp_path: Path) -> None:
    scene = data.Scene("white", (data.ShapeSpec("circle", "red", "big", "center"),))
    init = tmp_path / "red-circle.png"
    data.render(scene).save(init)
    image = _generate(engine, defaults, "a blue circle", init_image=str(init), strength=0.7, seed=3)
    reading = score.read_image(image)
    assert reading.colour == "blue", reading
    assert reading.shape == "circle", reading
    assert reading.centroid is not None
    assert math.dist(reading.centroid, (32, 32)) < 12


def test_bf16_keeps_the_pictures_of_fp32() -> None:
    """The faster CPU format must not change what the model draws (PSNR against fp32)."""
    from desktop.engine.devices import ComputeOptions

    cases = data.evaluation_cases(4, seed=99)
    results = {
        precision: evaluate.evaluate(
            evaluate.engine_generator(
                MODEL, engine=Engine(device="cpu", options=ComputeOptions(precision=precision))
            ),
            cases,
        )
        for precision in ("fp32", "bf16")
    }
    comparison = evaluate.compare(results)["bf16"]
    assert comparison["psnr_min_db"] >= 30.0, comparison
    assert comparison["psnr_mean_db"] >= 35.0, comparison
