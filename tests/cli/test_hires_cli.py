"""``sandstorm generate --hires [key=value ...]``: the hires fix on the command line."""

from __future__ import annotations

from PIL import Image

from desktop.app import main


def _args(tiny_sd, tmp_path, *extra: str) -> list[str]:
    return [
        "generate",
        *("--prompt", "a circle", "--model", str(tiny_sd), "--steps", "2"),
        *("--width", "64", "--height", "64", "--seed", "1"),
        *("--out", str(tmp_path / "out"), "--device", "cpu", "--dtype", "fp32"),
        *extra,
    ]


def test_hires_makes_the_larger_image_and_records_its_pass(tiny_sd, tmp_path, capsys):
    code = main(_args(tiny_sd, tmp_path, "--hires", "scale=1.5", "steps=1", "denoise=0.4"))
    captured = capsys.readouterr()
    assert code == 0, captured.err
    with Image.open(captured.out.strip()) as image:
        assert image.size == (96, 96)
        parameters = image.info["parameters"]
    assert "Size: 64x64" in parameters
    assert "Hires upscale: 1.5, Hires steps: 1, Hires upscaler: Latent" in parameters
    assert "Denoising strength: 0.4" in parameters
    # A bare --hires takes the defaults: twice the size.
    assert main(_args(tiny_sd, tmp_path, "--hires", "upscaler=Lanczos")) == 0
    with Image.open(capsys.readouterr().out.strip()) as image:
        assert image.size == (128, 128)


def test_hires_mistakes_are_one_clear_line(tiny_sd, tmp_path, capsys):
    cases = [
        (["--hires", "size=2"], "cannot read “size=2”"),
        (["--hires", "scale=9"], "Hires upscale"),
        (["--hires", "denoise=much"], "Hires denoise"),
        (["--hires", "upscaler=4x-Nowhere"], "4x-Nowhere"),
        (["--hires", "--init-image", str(tmp_path / "x.png")], "works on text to image"),
    ]
    for extra, expected in cases:
        assert main(_args(tiny_sd, tmp_path, *extra)) == 1, extra
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("sandstorm: error:"), err
        assert expected in err[0], err
