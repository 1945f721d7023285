"""Inpainting with ordinary checkpoints: the mask, the crop, the modes and the exact paste back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from desktop.engine import paths
from desktop.engine.errors import ImageError, RequestError
from desktop.engine.inpaint import (
    crop_region,
    fill_masked,
    load_mask,
    mask_box,
    prepare_inpaint,
)
from desktop.engine.parts import MaskSpec
from desktop.engine.request import GenerationRequest


@pytest.fixture(scope="module")
def engine():
    from desktop.engine.devices import ComputeOptions
    from desktop.engine.generate import Engine

    return Engine(device="cpu", options=ComputeOptions(precision="fp32"), extra_sources=[])


def _noise_image(path: Path, size: tuple[int, int], seed: int = 0) -> Path:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels, "RGB").save(path)
    return path


def _box_mask(path: Path, size: tuple[int, int], box: tuple[int, int, int, int]) -> Path:
    mask = Image.new("L", size, 0)
    ImageDraw.Draw(mask).rectangle(box, fill=255)
    mask.save(path)
    return path


# -- the mask ------------------------------------------------------------------------------------
def test_a_mask_is_white_to_repaint_or_transparent_in_a_file_with_alpha(tmp_path):
    white = _box_mask(tmp_path / "m.png", (32, 16), (4, 4, 9, 9))
    mask, note = load_mask(white, (32, 16))
    assert note == "" and mask.mode == "L" and mask_box(mask) == (4, 4, 10, 10)
    cut_out = Image.new("RGBA", (32, 16), (200, 30, 30, 255))
    ImageDraw.Draw(cut_out).rectangle((20, 2, 25, 7), fill=(0, 0, 0, 0))
    cut_out.save(tmp_path / "alpha.png")
    mask, _ = load_mask(tmp_path / "alpha.png")
    assert mask_box(mask) == (20, 2, 26, 8)


def test_a_mask_of_another_size_is_scaled_with_a_note(tmp_path):
    path = _box_mask(tmp_path / "m.png", (16, 16), (0, 0, 7, 15))
    mask, note = load_mask(path, (64, 32))
    assert mask.size == (64, 32)
    assert "16×16" in note and "64×32" in note and "scaled" in note
    assert mask_box(mask)[2] in range(30, 35)  # the left half


def test_a_mask_file_that_is_not_an_image_is_named(tmp_path):
    (tmp_path / "mask.txt").write_text("not a picture")
    with pytest.raises(ImageError, match=r"mask\.txt is not an image file"):
        load_mask(tmp_path / "mask.txt")
    with pytest.raises(ImageError, match="does not exist"):
        load_mask(tmp_path / "gone.png")


def test_an_all_black_mask_is_refused_before_any_work(tmp_path):
    init = _noise_image(tmp_path / "i.png", (32, 32))
    black = _box_mask(tmp_path / "m.png", (32, 32), (0, 0, 0, 0))
    Image.new("L", (32, 32), 0).save(black)
    with pytest.raises(RequestError, match="all black"):
        prepare_inpaint(MaskSpec(image=str(black)), init, 64, 64)


def test_the_crop_holds_the_mask_and_padding_at_the_work_aspect_ratio():
    assert crop_region((40, 40, 60, 50), 8, (200, 100), 1.0) == (32, 27, 68, 63)
    # Near a border the box shifts inside the image instead of shrinking.
    assert crop_region((0, 0, 10, 10), 4, (200, 100), 2.0) == (0, 0, 28, 14)
    # Wider than the image allows: clamped to the image.
    left, top, right, bottom = crop_region((0, 40, 200, 50), 0, (200, 100), 1.0)
    assert (left, right) == (0, 200) and bottom - top == 100


def test_fill_replaces_the_masked_part_with_the_colours_around_it():
    image = Image.new("RGB", (32, 32), (0, 0, 255))
    ImageDraw.Draw(image).rectangle((10, 10, 21, 21), fill=(255, 0, 0))
    mask = Image.new("L", (32, 32), 0)
    ImageDraw.Draw(mask).rectangle((8, 8, 23, 23), fill=255)
    filled = np.asarray(fill_masked(image, mask)).astype(int)
    assert np.abs(filled[16, 16] - [0, 0, 255]).max() <= 2  # red gone: the blue around it
    assert np.array_equal(filled[:8], np.asarray(image)[:8])


# -- through the engine --------------------------------------------------------------------------
def _inpaint_request(model: Path, init: Path, mask: Path, **mask_options) -> GenerationRequest:
    return GenerationRequest(
        prompt="a blue square",
        model=str(model),
        steps=3,
        width=64,
        height=64,
        seed=4,
        init_image=str(init),
        strength=0.9,
        mask=MaskSpec(image=str(mask), **mask_options),
    )


@pytest.mark.parametrize("only_masked", [True, False])
@pytest.mark.parametrize("mode", ["original", "fill", "latent noise", "latent nothing"])
def test_pixels_outside_the_mask_and_its_feather_are_the_inputs_bit_for_bit(
    engine, tiny_sd, tmp_path, only_masked, mode
):
    size = (120, 88)  # not the work size, not a multiple of 8
    init = _noise_image(tmp_path / "init.png", size)
    mask = _box_mask(tmp_path / "mask.png", size, (50, 30, 69, 49))
    request = _inpaint_request(tiny_sd, init, mask, blur=3, mode=mode, only_masked=only_masked)
    result = engine.generate(request)
    out = np.asarray(result.images[0].image)
    original = np.asarray(Image.open(init).convert("RGB"))
    assert out.shape == original.shape  # the result has the init image's size
    plan = prepare_inpaint(request.mask, init, 64, 64)
    feather = np.asarray(plan.soft_mask)
    outside = feather == 0
    assert outside.sum() > 0.5 * outside.size
    assert np.array_equal(out[outside], original[outside])
    painted = feather == 255
    assert np.abs(out[painted].astype(int) - original[painted]).mean() > 10


def test_only_masked_works_on_the_crop_and_the_whole_image_otherwise(tmp_path):
    init = _noise_image(tmp_path / "init.png", (256, 256))
    mask = _box_mask(tmp_path / "mask.png", (256, 256), (100, 100, 119, 119))
    small = prepare_inpaint(MaskSpec(image=str(mask), blur=2, padding=16), init, 64, 64)
    left, top, right, bottom = small.box
    assert right - left == bottom - top < 80 and left <= 100 - 16 and right >= 120 + 16
    assert small.work_image.size == (64, 64) and not small.whole_image
    whole = prepare_inpaint(MaskSpec(image=str(mask), blur=2, only_masked=False), init, 64, 64)
    assert whole.whole_image and whole.box == (0, 0, 256, 256)


def test_an_all_white_mask_works_as_img2img(engine, tiny_sd, tmp_path):
    init = _noise_image(tmp_path / "init.png", (64, 64))
    white = tmp_path / "white.png"
    Image.new("L", (64, 64), 255).save(white)
    result = engine.generate(_inpaint_request(tiny_sd, init, white, blur=0))
    out = np.asarray(result.images[0].image).astype(int)
    assert np.abs(out - np.asarray(Image.open(init))).mean() > 10


def test_the_previews_show_the_whole_picture(engine, tiny_sd, tmp_path):
    from desktop.engine.progress import Progress

    init = _noise_image(tmp_path / "init.png", (160, 80))
    mask = _box_mask(tmp_path / "mask.png", (160, 80), (10, 10, 30, 30))
    previews = []

    class Collect(Progress):
        def set_progress(self, update) -> None:
            previews.append(update.preview)

    engine.generate(_inpaint_request(tiny_sd, init, mask), Collect(job_id="p", previews=True))
    assert previews and all(p is not None and p.size == (160, 80) for p in previews)


def test_a_mask_of_another_size_runs_with_the_note(engine, tiny_sd, tmp_path):
    init = _noise_image(tmp_path / "init.png", (64, 64))
    mask = _box_mask(tmp_path / "mask.png", (32, 32), (8, 8, 23, 23))
    result = engine.generate(_inpaint_request(tiny_sd, init, mask))
    assert any("scaled to the image" in w for w in result.warnings)


def test_the_built_in_model_paints_a_blue_square_over_a_red_circle(engine, tmp_path):
    if not (paths.BUILTIN_MODEL / "model_index.json").is_file():
        pytest.skip("no built-in model")
    model = str(paths.BUILTIN_MODEL)
    base = engine.generate(
        GenerationRequest(
            prompt="a big red circle in the center, white background",
            model=model,
            seed=3,
            width=64,
            height=64,
        )
    )
    init = tmp_path / "circle.png"
    base.images[0].image.save(init)
    mask = _box_mask(tmp_path / "mask.png", (64, 64), (12, 12, 52, 52))
    request = GenerationRequest(
        prompt="a big blue square in the center, white background",
        model=model,
        seed=5,
        width=64,
        height=64,
        init_image=str(init),
        strength=0.75,
        mask=MaskSpec(image=str(mask), blur=4, only_masked=False),
    )
    out = np.asarray(engine.generate(request).images[0].image).astype(int)
    red, green, blue = out[20:44, 20:44].reshape(-1, 3).mean(axis=0)
    assert blue > 180 and blue > red + 80 and blue > green + 60
    before = np.asarray(Image.open(init)).astype(int)[20:44, 20:44].reshape(-1, 3).mean(axis=0)
    assert before[0] > before[2] + 80  # it was red there


# -- outpainting ---------------------------------------------------------------------------------
def test_the_canvas_grows_by_each_side_with_the_seam_fading_into_the_picture():
    from desktop.engine.inpaint import expand_canvas
    from desktop.engine.parts import ExpandSpec

    picture = Image.fromarray(
        np.random.default_rng(1).integers(0, 256, (40, 50, 3), dtype=np.uint8), "RGB"
    )
    spec = ExpandSpec(left=16, right=0, top=0, bottom=24, feather=8)
    canvas, hard, soft = expand_canvas(picture, spec)
    assert canvas.size == hard.size == soft.size == (66, 64)
    pixels, hard_px, soft_px = np.asarray(canvas), np.asarray(hard), np.asarray(soft)
    assert np.array_equal(pixels[0:40, 16:66], np.asarray(picture))  # the picture, in place
    assert (hard_px[:, :16] == 255).all() and (hard_px[40:] == 255).all()
    assert (hard_px[0:40, 16:] == 0).all()
    assert (soft_px[:, :16] == 255).all() and (soft_px[40:] == 255).all()
    # The seam: 8 px into the picture from the grown sides (left, bottom), none elsewhere.
    assert (soft_px[0:32, 24:] == 0).all()
    assert soft_px[10, 16] > soft_px[10, 19] > soft_px[10, 22] > 0 == soft_px[10, 24]
    assert soft_px[39, 40] > soft_px[35, 40] > 0 == soft_px[31, 40]


@pytest.mark.parametrize("fill", ["fill", "mirror", "edge"])
def test_each_fill_continues_the_picture(fill):
    from desktop.engine.inpaint import expand_canvas
    from desktop.engine.parts import ExpandSpec

    picture = Image.new("RGB", (32, 32), (20, 60, 200))
    ImageDraw.Draw(picture).rectangle((0, 0, 31, 3), fill=(250, 250, 0))  # a yellow top edge
    canvas, _, _ = expand_canvas(picture, ExpandSpec(top=16, right=8, fill=fill))
    pixels = np.asarray(canvas).astype(int)
    assert canvas.size == (40, 48)
    new_right = pixels[24:, 32:].reshape(-1, 3).mean(axis=0)
    assert np.abs(new_right - (20, 60, 200)).max() < 40  # blue continues to the right
    next_to_top = pixels[14:16, :32].reshape(-1, 3).mean(axis=0)
    assert next_to_top[0] > 150 and next_to_top[2] < 120  # yellow continues above
    if fill == "mirror":
        assert np.array_equal(pixels[12:16, :32], pixels[16:20, :32][::-1])


def test_the_expansion_is_read_from_the_command_line_forms():
    from desktop.engine.parts import ExpandSpec, parse_expand

    assert parse_expand("256") == dict(left=256, right=256, top=256, bottom=256)
    assert parse_expand("0, 256, 0, 64") == dict(left=0, right=256, top=0, bottom=64)
    assert parse_expand("right=256,bottom=128") == dict(left=0, right=256, top=0, bottom=128)
    for bad in ("wide", "1,2", "right=abc", "middle=3"):
        with pytest.raises(RequestError, match="expansion"):
            parse_expand(bad)
    with pytest.raises(RequestError, match="at least one side"):
        ExpandSpec()
    with pytest.raises(RequestError, match="Expand right"):
        ExpandSpec(right=5000)
    with pytest.raises(RequestError, match="Outpainting needs an init image"):
        GenerationRequest(prompt="x", expand=ExpandSpec(right=64))


def test_a_whole_picture_repaint_works_at_the_pictures_shape():
    from desktop.engine.inpaint import work_size

    assert work_size((512, 512), 512, 512) == (512, 512)
    assert work_size((1000, 500), 512, 512) == (728, 360)
    assert work_size((300, 900), 64, 64) == (64, 64)  # never below 64 px a side


@pytest.mark.parametrize("with_mask", [False, True])
def test_outpainting_grows_the_picture_and_keeps_it_past_the_seam(
    engine, tiny_sd, tmp_path, with_mask
):
    from desktop.engine.parts import ExpandSpec

    init = _noise_image(tmp_path / "init.png", (64, 48))
    mask = None
    if with_mask:
        mask = MaskSpec(image=str(_box_mask(tmp_path / "m.png", (64, 48), (4, 4, 11, 11))), blur=0)
    request = GenerationRequest(
        prompt="a wide landscape",
        model=str(tiny_sd),
        steps=3,
        width=64,
        height=64,
        seed=1,
        init_image=str(init),
        strength=1.0,
        mask=mask,
        expand=ExpandSpec(right=40, bottom=8, feather=8),
    )
    result = engine.generate(request)
    out = np.asarray(result.images[0].image).astype(int)
    original = np.asarray(Image.open(init)).astype(int)
    assert out.shape == (56, 104, 3)
    kept = out[:40, :56]  # farther than the seam (8 px) from the grown sides
    if with_mask:
        assert np.abs(kept[4:12, 4:12] - original[4:12, 4:12]).mean() > 10
        kept[4:12, 4:12] = original[4:12, 4:12]
    assert np.array_equal(kept, original[:40, :56])
    assert out[:, 64:].std() > 1  # the new part is painted, not left flat
    from desktop.engine.metadata import format_parameters

    text = format_parameters(result.images[0].request)
    assert 'Outpaint: "left 0, right 40, top 0, bottom 8", Outpaint fill: fill' in text


def test_the_built_in_model_continues_the_background_past_the_edge(engine, tmp_path):
    if not (paths.BUILTIN_MODEL / "model_index.json").is_file():
        pytest.skip("no built-in model")
    from desktop.engine.parts import ExpandSpec

    model = str(paths.BUILTIN_MODEL)
    prompt = "a big red circle on the left, blue background"
    base = engine.generate(
        GenerationRequest(prompt=prompt, model=model, seed=3, width=64, height=64)
    )
    init = tmp_path / "circle.png"
    base.images[0].image.save(init)
    width, height = base.images[0].image.size
    request = GenerationRequest(
        prompt="blue background",
        model=model,
        seed=5,
        width=width,
        height=height,
        init_image=str(init),
        strength=1.0,
        expand=ExpandSpec(right=width // 2, feather=8),
    )
    out = np.asarray(engine.generate(request).images[0].image).astype(int)
    assert out.shape == (height, width + width // 2, 3)
    red, green, blue = out[:, width + 4 :].reshape(-1, 3).mean(axis=0)
    assert blue > red + 60 and blue > green + 30  # the blue background goes on
