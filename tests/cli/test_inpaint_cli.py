"""``sandstorm generate --init-image FILE --mask FILE``: inpainting on the command line."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from desktop.app import main


def _files(tmp_path):
    init = tmp_path / "init.png"
    pixels = np.random.default_rng(1).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    Image.fromarray(pixels, "RGB").save(init)
    mask = tmp_path / "mask.png"
    image = Image.new("L", (96, 64), 0)
    ImageDraw.Draw(image).rectangle((40, 20, 59, 39), fill=255)
    image.save(mask)
    return init, mask


def _args(tiny_sd, tmp_path, *extra: str) -> list[str]:
    return [
        "generate",
        "--prompt",
        "a blue square",
        "--model",
        str(tiny_sd),
        "--steps",
        "2",
        "--width",
        "64",
        "--height",
        "64",
        "--seed",
        "2",
        "--out",
        str(tmp_path / "out"),
        "--device",
        "cpu",
        *extra,
    ]


def test_inpainting_keeps_the_image_size_and_records_the_mask_settings(tiny_sd, tmp_path, capsys):
    init, mask = _files(tmp_path)
    code = main(
        _args(
            tiny_sd,
            tmp_path,
            *("--init-image", str(init), "--mask", str(mask), "--mask-blur", "2"),
            *("--mask-mode", "fill", "--no-only-masked"),
        )
    )
    assert code == 0, capsys.readouterr().err
    path = capsys.readouterr().out.strip()
    with Image.open(path) as image:
        assert image.size == (96, 64)
        parameters = image.info["parameters"]
        corner = np.asarray(image.convert("RGB"))[:5, :5]
    assert "Mask blur: 2" in parameters and "Masked content: fill" in parameters
    assert "Inpaint area: Whole picture" in parameters
    assert np.array_equal(corner, np.asarray(Image.open(init))[:5, :5])


def test_inpainting_mistakes_are_one_clear_line(tiny_sd, tmp_path, capsys):
    init, mask = _files(tmp_path)
    black = tmp_path / "black.png"
    Image.new("L", (96, 64), 0).save(black)
    text = tmp_path / "mask.txt"
    text.write_text("white = repaint")
    cases = [
        (["--mask", str(mask)], "--mask needs --init-image"),
        (["--init-image", str(init), "--mask-blur", "3"], "--mask-blur need --mask FILE"),
        (["--init-image", str(init), "--mask", str(black)], "The mask is all black"),
        (["--init-image", str(init), "--mask", str(text)], "mask.txt is not an image file"),
    ]
    for extra, expected in cases:
        assert main(_args(tiny_sd, tmp_path, *extra)) == 1, extra
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("sandstorm: error:"), err
        assert expected in err[0]
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").rglob("*.png"))


def test_outpainting_grows_the_picture_by_the_sides_given(tiny_sd, tmp_path, capsys):
    init, _ = _files(tmp_path)
    extra = ("--init-image", str(init), "--strength", "1", "--expand", "right=32,top=16")
    code = main(_args(tiny_sd, tmp_path, *extra, "--expand-fill", "mirror", "--expand-seam", "8"))
    assert code == 0, capsys.readouterr().err
    path = capsys.readouterr().out.strip()
    with Image.open(path) as image:
        assert image.size == (128, 80)
        parameters = image.info["parameters"]
        kept = np.asarray(image.convert("RGB"))[24:80, 0:88]
    assert 'Outpaint: "left 0, right 32, top 16, bottom 0"' in parameters
    assert "Outpaint fill: mirror, Outpaint seam: 8" in parameters
    assert np.array_equal(kept, np.asarray(Image.open(init))[8:64, 0:88])


def test_outpainting_mistakes_are_one_clear_line(tiny_sd, tmp_path, capsys):
    init, _ = _files(tmp_path)
    cases = [
        (["--expand", "64"], "--expand needs --init-image"),
        (["--init-image", str(init), "--expand-seam", "8"], "--expand-seam need --expand"),
        (["--init-image", str(init), "--expand", "1,2"], "has 2 numbers"),
        (["--init-image", str(init), "--expand", "0"], "at least one side"),
        (["--init-image", str(init), "--expand", "9000"], "Expand left"),
    ]
    for extra, expected in cases:
        assert main(_args(tiny_sd, tmp_path, *extra)) == 1, extra
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("sandstorm: error:"), err
        assert expected in err[0]
