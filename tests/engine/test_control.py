"""Control layers: the built-in preprocessors, finding ControlNets, and running them.

The tiny ControlNets are built from the tiny model's own UNet config. A fresh one has zero
output convolutions, so it must leave the image bit for bit as without it; a randomised one
steers, and runs only at the steps of its start/end range.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw
from safetensors.numpy import save_file

from desktop.engine import paths
from desktop.engine.control import ControlLibrary
from desktop.engine.control_images import (
    canny,
    fit_control,
    inpaint_condition,
    preprocess,
    scribble,
    tile,
)
from desktop.engine.controlnet import (
    classify_keys,
    control_type_of,
    describe_file,
    list_controlnets,
    suggest,
)
from desktop.engine.errors import ModelError, RequestError
from desktop.engine.parts import ControlUnit, MaskSpec
from desktop.engine.request import GenerationRequest
from tests.helpers.tiny_models import build_tiny_controlnet


def _controlnet_dir() -> Path:
    folder = paths.user_models_dir() / "controlnet"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(autouse=True)
def _no_controlnets_left():
    yield
    shutil.rmtree(paths.user_models_dir() / "controlnet", ignore_errors=True)


def _sketch(path: Path, size=(64, 64)) -> Path:
    """Black strokes on white: a circle on the left, as the sketch pad draws."""
    image = Image.new("RGB", size, "white")
    ImageDraw.Draw(image).ellipse((6, 18, 30, 42), outline="black", width=3)
    image.save(path)
    return path


# -- preprocessors ---------------------------------------------------------------------------
def test_canny_finds_thin_edges_where_the_picture_changes():
    image = Image.new("RGB", (64, 64), "black")
    ImageDraw.Draw(image).rectangle((16, 16, 47, 47), fill="white")
    edges = np.asarray(canny(image))[..., 0] > 0
    assert edges[16:48, 14:19].any() and edges[16:48, 45:50].any()  # left and right sides
    assert not edges[24:40, 24:40].any() and not edges[:8].any()  # flat parts stay black
    assert edges.mean() < 0.15  # thin lines, not filled areas
    assert not (np.asarray(canny(Image.new("RGB", (32, 32), "grey"))) > 0).any()


def test_scribble_makes_white_strokes_on_black_from_a_drawing(tmp_path):
    drawing = Image.open(_sketch(tmp_path / "s.png"))
    strokes = np.asarray(scribble(drawing))[..., 0] > 0
    assert strokes[30, 5:10].any()  # the circle's left side
    assert not strokes[30, 14:22].any() and not strokes[:, 40:].any()  # inside, the right
    assert strokes.mean() < 0.3


def test_tile_keeps_colours_and_drops_fine_detail():
    rng = np.random.default_rng(0)
    noisy = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), "RGB")
    smooth = np.asarray(tile(noisy)).astype(float)
    assert smooth.std() < np.asarray(noisy).astype(float).std() / 2
    assert abs(smooth.mean() - np.asarray(noisy).mean()) < 6


def test_inpaint_control_marks_the_masked_part_minus_one():
    image = Image.new("RGB", (16, 16), (255, 0, 0))
    mask = Image.new("L", (16, 16), 0)
    mask.paste(255, (0, 0, 8, 16))
    values = inpaint_condition(image, mask)
    assert (values[:, :8] == -1).all() and np.allclose(values[:, 8:], (1, 0, 0))
    preview = np.asarray(preprocess("inpaint", image, mask))
    assert tuple(preview[4, 2]) == (128, 128, 128) and tuple(preview[4, 12]) == (255, 0, 0)
    with pytest.raises(RequestError, match="Unknown control type"):
        preprocess("depthmagic", image)


@pytest.mark.parametrize(
    ("mode", "check"),
    [
        ("Just Resize", lambda a: (a[:, :, 0] > 128).mean() > 0.99),  # stretched: all red
        ("Crop and Resize", lambda a: (a[:, :, 0] > 128).mean() > 0.99),  # centre kept
        ("Resize and Fill", lambda a: (a[:, :, 0] > 128).mean() > 0.99),  # edge colours
    ],
)
def test_a_control_image_of_another_shape_is_fitted_by_each_mode(mode, check):
    wide = Image.new("RGB", (128, 32), (250, 10, 10))
    fitted = fit_control(wide, 64, 64, mode)
    assert fitted.size == (64, 64) and check(np.asarray(fitted))
    marked = Image.new("RGB", (128, 32), "black")
    ImageDraw.Draw(marked).rectangle((0, 0, 15, 31), fill="white")  # a white left end
    left = np.asarray(fit_control(marked, 64, 64, mode))[32, 2, 0]
    assert left == (0 if mode == "Crop and Resize" else 255)  # the crop loses the ends


# -- finding ControlNets ----------------------------------------------------------------------
def _fake_controlnet(path: Path, keys: dict[str, tuple[int, ...]]) -> Path:
    save_file({k: np.zeros(s, dtype=np.float16) for k, s in keys.items()}, str(path))
    return path


SD15_KEYS = {
    "control_model.input_hint_block.0.weight": (16, 3, 3, 3),
    "control_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (320, 768),
}


def test_controlnet_files_are_classified_from_their_header(tmp_path):
    sd15 = describe_file(
        _fake_controlnet(tmp_path / "control_v11p_sd15_canny.safetensors", SD15_KEYS)
    )
    assert (sd15.family, sd15.control_type, sd15.layout, sd15.problem) == (
        "sd1",
        "canny",
        "original",
        "",
    )
    v11 = {k.removeprefix("control_model."): s for k, s in SD15_KEYS.items()}
    assert classify_keys(v11)[:2] == ("original-unprefixed", 768)
    xl = {
        "controlnet_cond_embedding.conv_in.weight": (16, 3, 3, 3),
        "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight": (640, 2048),
    }
    item = describe_file(_fake_controlnet(tmp_path / "diffusers_xl_canny_full.safetensors", xl))
    assert (item.family, item.layout, item.context_width) == ("sdxl", "diffusers", 2048)
    adapter = _fake_controlnet(tmp_path / "ip-adapter_sd15.safetensors", {"image_proj.w": (4,)})
    assert "IP-Adapter" in describe_file(adapter).problem
    pickle = tmp_path / "control_sd15_depth.pth"
    pickle.write_bytes(b"\x80\x04")
    assert "pickles" in describe_file(pickle).problem
    broken = tmp_path / "cut.safetensors"
    broken.write_bytes(b"\x10\x00")
    assert "damaged" in describe_file(broken).problem
    for name, kind in [
        ("control_v11p_sd15_scribble", "scribble"),
        ("t2i-sketch", "scribble"),
        ("control_v11f1p_sd15_depth", "control map"),
        ("control_v11f1e_sd15_tile", "tile"),
        ("mystery", ""),
    ]:
        assert control_type_of(name) == kind


def test_the_controlnet_for_the_type_and_family_is_suggested():
    folder = _controlnet_dir()
    _fake_controlnet(folder / "control_v11p_sd15_canny.safetensors", SD15_KEYS)
    _fake_controlnet(folder / "control_v11p_sd15_scribble.safetensors", SD15_KEYS)
    items = list_controlnets([])
    sd15 = [i.name for i in items if i.family == "sd1"]
    assert sd15 == ["control_v11p_sd15_canny", "control_v11p_sd15_scribble"]
    assert suggest("scribble", "builtin", items).name == "builtin_scribble"  # shipped
    assert suggest("scribble", "sd1", items).name == "control_v11p_sd15_scribble"
    assert suggest("scribble", "sd1-inpaint", items).name == "control_v11p_sd15_scribble"
    assert suggest("scribble", "sdxl", items) is None
    assert suggest("tile", "sd1", items) is None


# -- running ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def engine():
    from desktop.engine.devices import ComputeOptions
    from desktop.engine.generate import Engine

    return Engine(device="cpu", options=ComputeOptions(precision="fp32"), extra_sources=[])


def _request(tiny_sd: Path, **changes) -> GenerationRequest:
    base = GenerationRequest(
        prompt="a circle", model=str(tiny_sd), steps=4, width=64, height=64, seed=3
    )
    return replace(base, **changes)


def _pixels(result) -> np.ndarray:
    return np.asarray(result.images[0].image).astype(int)


def test_a_fresh_controlnet_leaves_every_kind_of_job_bit_for_bit(engine, tiny_sd, tmp_path):
    build_tiny_controlnet(tiny_sd, _controlnet_dir() / "tiny_scribble")
    unit = ControlUnit("scribble", str(_sketch(tmp_path / "sketch.png")))
    init = tmp_path / "init.png"
    Image.fromarray(
        np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8), "RGB"
    ).save(init)
    mask = tmp_path / "mask.png"
    Image.new("L", (64, 64), 0).save(mask)
    with Image.open(mask) as m:
        painted = m.copy()
    painted.paste(255, (16, 16, 48, 48))
    painted.save(mask)
    jobs = [
        _request(tiny_sd),
        _request(tiny_sd, init_image=str(init), strength=0.6),
        _request(tiny_sd, init_image=str(init), mask=MaskSpec(image=str(mask))),
    ]
    for job in jobs:
        base = _pixels(engine.generate(job))
        controlled = _pixels(engine.generate(replace(job, controls=(unit,))))
        assert np.array_equal(base, controlled), job


def test_a_controlnet_steers_and_runs_only_in_its_range(engine, tiny_sd, tmp_path):
    build_tiny_controlnet(tiny_sd, _controlnet_dir() / "tiny_scribble", fresh=False)
    engine._controls.clear()
    loads = engine._controls.loads
    sketch = str(_sketch(tmp_path / "sketch.png"))
    base = _pixels(engine.generate(_request(tiny_sd)))
    steered = engine.generate(_request(tiny_sd, controls=(ControlUnit("scribble", sketch),)))
    assert np.abs(_pixels(steered) - base).mean() > 1
    # Strength 0 and a range after the last step change nothing.
    off = ControlUnit("scribble", sketch, strength=0.0)
    assert np.array_equal(_pixels(engine.generate(_request(tiny_sd, controls=(off,)))), base)
    # Outside its range the net is not run at all.
    net = next(iter(engine._controls._cache.values()))
    calls: list[int] = []
    handle = net.register_forward_hook(lambda *_: calls.append(1))
    try:
        half = ControlUnit("scribble", sketch, start=0.5, end=1.0)
        engine.generate(_request(tiny_sd, steps=8, controls=(half,)))
        assert len(calls) == 4  # steps 4..7 of 8 (one batched call per step)
        calls.clear()
        two = (ControlUnit("scribble", sketch), ControlUnit("scribble", sketch, end=0.5))
        engine.generate(_request(tiny_sd, steps=8, controls=two))
        assert len(calls) == 8 + 4  # several units at once, each in its own range
    finally:
        handle.remove()
    assert engine._controls.loads == loads + 1  # loaded once, reused by every job


def test_a_diffusers_layout_single_file_loads_with_its_config(engine, tiny_sd, tmp_path):
    folder = build_tiny_controlnet(tiny_sd, tmp_path / "tiny_config", fresh=False)
    build_tiny_controlnet(
        tiny_sd, _controlnet_dir() / "tiny_lineart.safetensors", fresh=False, single_file=True
    )
    library = ControlLibrary(configs={32: folder})
    item = library.resolve(ControlUnit("lineart", "x.png"), "sd1", [], context_width=32)
    assert item.layout == "diffusers"
    net = library.load(item, engine.dtype, "cpu")
    assert net.config.cross_attention_dim == 32


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        ("none", "No scribble ControlNet for SD1.5 models is installed"),
        ("named", "The ControlNet 'control_v11p_sd15_scribble' is not installed"),
        ("other family", "is made for SD1.5 models"),
        ("truncated", "could not be loaded: it is damaged"),
        ("ip-adapter", "it is an IP-Adapter, not a ControlNet"),
    ],
)
def test_each_controlnet_problem_names_the_file_before_any_sampling(
    engine, tiny_sd, tmp_path, setup, expected
):
    folder = _controlnet_dir()
    model = ""
    if setup == "named":
        model = "control_v11p_sd15_scribble"
    elif setup == "other family":
        _fake_controlnet(folder / "control_v11p_sd15_scribble.safetensors", SD15_KEYS)
        model = "control_v11p_sd15_scribble"
    elif setup == "truncated":
        path = build_tiny_controlnet(
            tiny_sd, folder / "tiny_scribble.safetensors", fresh=False, single_file=True
        )
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        engine._controls = ControlLibrary(
            configs={32: build_tiny_controlnet(tiny_sd, tmp_path / "config")}
        )
    elif setup == "ip-adapter":
        _fake_controlnet(folder / "ip-adapter_scribble.safetensors", {"image_proj.w": (4,)})
        model = "ip-adapter_scribble"
    unit = ControlUnit("scribble", str(_sketch(tmp_path / "s.png")), model=model)
    with pytest.raises(ModelError) as caught:
        engine.generate(_request(tiny_sd, controls=(unit,)))
    assert expected in str(caught.value)
    engine._controls = ControlLibrary()


@pytest.mark.parametrize("prefix", ["control_model.", ""])
def test_an_original_layout_file_loads_with_the_shipped_kind_of_config(
    engine, tiny_sd, tmp_path, prefix
):
    from diffusers import ControlNetModel
    from safetensors.torch import save_file

    from tests.helpers.ldm import controlnet_to_ldm

    folder = build_tiny_controlnet(tiny_sd, tmp_path / "tiny_config", fresh=False, seed=4)
    original = ControlNetModel.from_pretrained(str(folder))
    path = _controlnet_dir() / "control_tiny_scribble.safetensors"
    save_file(controlnet_to_ldm(original.state_dict(), prefix), str(path))
    item = describe_file(path)
    assert item.layout == ("original" if prefix else "original-unprefixed"), item
    library = ControlLibrary(configs={32: folder})
    net = library.load(item, engine.dtype, "cpu")
    ours, theirs = net.state_dict(), original.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(np.array_equal(ours[k].numpy(), theirs[k].numpy()) for k in ours)


def test_an_sdxl_controlnet_gets_the_added_conditioning_and_a_fresh_one_changes_nothing(
    engine, tiny_sdxl, tmp_path
):
    build_tiny_controlnet(tiny_sdxl, _controlnet_dir() / "tiny_xl_canny")
    request = replace(_request(tiny_sdxl), prompt="a square")
    base = _pixels(engine.generate(request))
    unit = ControlUnit("canny", str(_sketch(tmp_path / "edges.png")))
    assert np.array_equal(_pixels(engine.generate(replace(request, controls=(unit,)))), base)
    build_tiny_controlnet(tiny_sdxl, _controlnet_dir() / "tiny_xl_canny", fresh=False)
    engine._controls.clear()
    steered = _pixels(engine.generate(replace(request, controls=(unit,))))
    assert np.abs(steered - base).mean() > 1
