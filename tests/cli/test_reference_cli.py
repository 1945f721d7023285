"""``sandstorm generate --reference IMAGE ...``: reference images on the command line."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from desktop.app import main
from desktop.engine import ip_adapter, paths
from tests.helpers.tiny_ip_adapter import tiny_adapter, tiny_encoder, write_encoder_config


@pytest.fixture
def installed(tiny_sd, tmp_path, monkeypatch):
    """The tiny encoder (with its config taken as a shipped one) and an adapter."""
    config = write_encoder_config(tmp_path / "configs" / "tiny")
    monkeypatch.setattr(ip_adapter, "encoder_configs", lambda: [config])
    models = paths.user_models_dir()
    tiny_encoder(models / "clip_vision" / "tiny_clip.safetensors")
    tiny_adapter(tiny_sd, models / "ipadapter" / "tiny_ip.safetensors")
    yield
    for kind in ("ipadapter", "clip_vision"):
        shutil.rmtree(models / kind, ignore_errors=True)


def _args(tiny_sd, tmp_path, *extra: str) -> list[str]:
    return [
        "generate",
        *("--prompt", "a circle", "--model", str(tiny_sd), "--steps", "2"),
        *("--width", "64", "--height", "64", "--seed", "1"),
        *("--out", str(tmp_path / "out"), "--device", "cpu", "--dtype", "fp32"),
        *extra,
    ]


def _photo(tmp_path):
    path = tmp_path / "photo.png"
    pixels = np.random.default_rng(4).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    Image.fromarray(pixels, "RGB").save(path)
    return path


def _pixels(path: str) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB")).astype(int)


def test_a_reference_steers_and_is_recorded(installed, tiny_sd, tmp_path, capsys):
    assert main(_args(tiny_sd, tmp_path)) == 0
    base = capsys.readouterr().out.strip()
    photo = str(_photo(tmp_path))
    assert main(_args(tiny_sd, tmp_path, "--reference", photo, "weight=0")) == 0
    unweighted = capsys.readouterr().out.strip()
    assert np.array_equal(_pixels(base), _pixels(unweighted))  # weight 0: the base image
    code = main(_args(tiny_sd, tmp_path, "--reference", photo, "weight=0.8"))
    captured = capsys.readouterr()
    assert code == 0, captured.err
    steered = captured.out.strip()
    assert np.abs(_pixels(steered) - _pixels(base)).mean() > 1
    with Image.open(steered) as image:
        parameters = image.info["parameters"]
    assert 'IP-Adapter 0: "Model: tiny_ip, Weight: 0.8"' in parameters


def test_reference_mistakes_are_one_clear_line(installed, tiny_sd, tmp_path, capsys):
    photo = str(_photo(tmp_path))
    cases = [
        (["--reference", "weight=0.5"], "needs an image first"),
        (["--reference", photo, "strength=2"], "cannot read “strength=2”"),
        (["--reference", photo, "weight=lots"], "Reference weight"),
        (["--reference", photo, "weight=3"], "Reference weight"),
        (["--reference", photo, "model=nowhere"], "The IP-Adapter 'nowhere' is not installed"),
        (["--reference", str(tmp_path / "gone.png")], "gone.png"),
    ]
    for extra, expected in cases:
        assert main(_args(tiny_sd, tmp_path, *extra)) == 1, extra
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("sandstorm: error:"), err
        assert expected in err[0], err


def test_a_reference_without_its_image_encoder_is_refused(tiny_sd, tmp_path, capsys):
    folder = paths.user_models_dir() / "ipadapter"
    tiny_adapter(tiny_sd, folder / "tiny_ip.safetensors")
    try:
        code = main(_args(tiny_sd, tmp_path, "--reference", str(_photo(tmp_path))))
        err = capsys.readouterr().err
        assert code == 1 and "tiny_ip.safetensors needs" in err and "clip_vision" in err
    finally:
        shutil.rmtree(folder, ignore_errors=True)
