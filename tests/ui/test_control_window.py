"""Control layers through the window: a drawn layer steers the job, the saved image records
it, Reuse brings it back; a missing ControlNet refuses the job with the reason."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from desktop.engine import paths
from desktop.engine.metadata import read_metadata
from tests.helpers.tiny_models import build_tiny_controlnet
from tests.ui.test_inpaint_window import _generate

LONG = 60_000


@pytest.fixture
def sketch(tmp_path: Path) -> Path:
    path = tmp_path / "sketch.png"
    image = Image.new("RGB", (64, 64), "white")
    ImageDraw.Draw(image).ellipse((6, 18, 30, 42), outline="black", width=3)
    image.save(path)
    return path


@pytest.fixture(scope="module")
def built_controlnet(tiny_sd: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built before any window starts: building a model while the worker loads one would
    give it meta tensors (a pipeline load patches module construction process-wide)."""
    return build_tiny_controlnet(
        tiny_sd, tmp_path_factory.mktemp("controlnets") / "tiny_scribble", fresh=False
    )


@pytest.fixture
def controlnet(built_controlnet: Path):
    folder = paths.user_models_dir() / "controlnet"
    shutil.copytree(built_controlnet, folder / built_controlnet.name)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_a_control_layer_steers_the_job_and_reuse_restores_it(qtbot, controlnet, window, sketch):
    win = window
    win.control_panel.refresh_models()
    base = np.asarray(Image.open(_generate(qtbot, win)).convert("RGB")).astype(int)
    win.control_panel.add_layer("scribble", sketch)  # model "": the engine suggests one
    assert win.build_request().controls[0].type == "scribble"
    out_path = _generate(qtbot, win)
    steered = np.asarray(Image.open(out_path).convert("RGB")).astype(int)
    assert np.abs(steered - base).mean() > 1
    saved = read_metadata(out_path)
    assert (
        'ControlNet 0: "Module: scribble, Model: tiny_scribble, Weight: 1'
        in saved.raw["parameters"]
    )
    win.control_panel.clear_layers()
    assert saved.request is not None
    win.apply_request(saved.request)
    restored = win.control_panel.layers()
    assert len(restored) == 1 and restored[0].control_type() == "scribble"
    assert Path(restored[0].image_path()).parent.name == ".controls"  # the gallery's copy


def test_a_layer_without_an_installed_controlnet_refuses_the_job(qtbot, window, sketch):
    win = window
    win.control_panel.add_layer("canny", sketch)
    failed: list[str] = []
    win.worker.job_failed.connect(lambda _j, message: failed.append(message))
    assert win.generate() is not None
    qtbot.waitUntil(lambda: bool(failed), timeout=LONG)
    assert "No canny ControlNet" in failed[0] and "models/controlnet" in failed[0]
    assert "No canny ControlNet" in win.message_bar.text()
    win.control_panel.clear_layers()
    _generate(qtbot, win)  # the next job runs
    assert win.worker.isRunning()
