"""``sandstorm generate --control TYPE IMAGE ...``: control layers on the command line."""

from __future__ import annotations

import shutil

from PIL import Image, ImageDraw

from desktop.app import main
from desktop.engine import paths
from tests.helpers.tiny_models import build_tiny_controlnet


def _args(tiny_sd, tmp_path, *extra: str) -> list[str]:
    return [
        "generate",
        *("--prompt", "a circle", "--model", str(tiny_sd), "--steps", "2"),
        *("--width", "64", "--height", "64", "--seed", "1"),
        *("--out", str(tmp_path / "out"), "--device", "cpu"),
        *extra,
    ]


def _sketch(tmp_path):
    path = tmp_path / "sketch.png"
    image = Image.new("RGB", (96, 64), "white")
    ImageDraw.Draw(image).ellipse((8, 16, 40, 48), outline="black", width=3)
    image.save(path)
    return path


def test_control_layers_run_and_are_recorded(tiny_sd, tmp_path, capsys):
    folder = paths.user_models_dir() / "controlnet"
    build_tiny_controlnet(tiny_sd, folder / "tiny_scribble", fresh=False)
    try:
        sketch = _sketch(tmp_path)
        control = ("--control", "scribble", str(sketch), "strength=0.5", "end=0.8")
        code = main(_args(tiny_sd, tmp_path, *control, "--control", "canny", str(sketch)))
        err = capsys.readouterr().err
        assert code == 1 and "No canny ControlNet" in err  # the second layer has no model
        code = main(_args(tiny_sd, tmp_path, *control))
        captured = capsys.readouterr()
        assert code == 0, captured.err
        path = captured.out.strip()
        # The sketch is 96×64, the picture 64×64: fitted, with a note.
        assert "another shape than the 64×64 picture" in captured.err
        with Image.open(path) as image:
            parameters = image.info["parameters"]
        assert (
            'ControlNet 0: "Module: scribble, Model: tiny_scribble, Weight: 0.5, '
            "Resize Mode: Crop and Resize, Guidance Start: 0, Guidance End: 0.8"
        ) in parameters
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_control_mistakes_are_one_clear_line(tiny_sd, tmp_path, capsys):
    sketch = str(_sketch(tmp_path))
    cases = [
        (["--control", "scribble"], "needs a type and an image"),
        (["--control", "scribble", sketch, "weight=2"], "cannot read “weight=2”"),
        (["--control", "scribble", sketch, "strength=lots"], "Control strength"),
        (["--control", "depthmagic", sketch], "Unknown control type"),
        (["--control", "scribble", sketch, "start=0.9", "end=0.2"], "must be before its end"),
    ]
    for extra, expected in cases:
        assert main(_args(tiny_sd, tmp_path, *extra)) == 1, extra
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("sandstorm: error:"), err
        assert expected in err[0]
