"""Reference images through the window: a reference steers the job, the saved image records
it and keeps a copy, Reuse brings it back; an adapter without its image encoder refuses the
job with the file named, and the next job runs."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from desktop.engine import ip_adapter, paths
from desktop.engine.metadata import read_metadata
from tests.helpers.tiny_ip_adapter import tiny_adapter, tiny_encoder, write_encoder_config
from tests.ui.test_inpaint_window import _generate

LONG = 60_000


@pytest.fixture(scope="module")
def built(tiny_sd: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Built before any window starts (a pipeline load in the worker patches module
    construction process-wide, so nothing is built while one runs)."""
    root = tmp_path_factory.mktemp("references")
    return {
        "config": write_encoder_config(root / "configs" / "tiny"),
        "clip_vision": tiny_encoder(root / "clip_vision" / "tiny_clip.safetensors"),
        "ipadapter": tiny_adapter(tiny_sd, root / "ipadapter" / "tiny_ip.safetensors"),
    }


@pytest.fixture
def installed(built, sandstorm_home, monkeypatch):
    """The tiny adapter and encoder in the user's folders; the encoder's config is taken
    as a shipped one. Requested before ``window``, so the engine sees it."""
    monkeypatch.setattr(ip_adapter, "encoder_configs", lambda: [built["config"]])
    placed = {}
    for kind in ("clip_vision", "ipadapter"):
        folder = paths.user_models_dir() / kind
        folder.mkdir(parents=True, exist_ok=True)
        placed[kind] = Path(shutil.copy2(built[kind], folder / built[kind].name))
    yield placed
    for kind in placed:
        shutil.rmtree(paths.user_models_dir() / kind, ignore_errors=True)


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    path = tmp_path / "photo.png"
    pixels = np.random.default_rng(7).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    Image.fromarray(pixels, "RGB").save(path)
    return path


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB")).astype(int)


def test_a_reference_steers_the_job_and_reuse_restores_it(qtbot, installed, window, photo):
    win = window
    win.reference_panel.refresh_models()
    assert [a.name for a in win.reference_panel.adapters()] == ["tiny_ip"]
    base = _pixels(_generate(qtbot, win))
    win.reference_panel.add_card(photo, weight=1.0)
    assert win.build_request().references[0].image == str(photo)
    out_path = _generate(qtbot, win)
    assert np.abs(_pixels(out_path) - base).mean() > 1
    saved = read_metadata(out_path)
    assert 'IP-Adapter 0: "Model: tiny_ip, Weight: 1"' in saved.raw["parameters"]

    photo.unlink()  # the picked file is gone: Reuse reads the gallery's copy
    win.reference_panel.clear_cards()
    assert saved.request is not None
    win.apply_request(saved.request)
    (card,) = win.reference_panel.cards()
    assert card.image_path().parent.name == ".references"
    assert card.weight() == 1.0 and card.model_name() == "tiny_ip"
    assert np.array_equal(_pixels(_generate(qtbot, win)), _pixels(out_path))


def test_an_adapter_without_its_encoder_refuses_the_job(qtbot, installed, window, photo):
    win = window
    installed["clip_vision"].unlink()
    win.reference_panel.refresh_models()
    card = win.reference_panel.add_card(photo)
    card.set_model_name("tiny_ip")
    assert "needs" in card.note_label.text()  # said before any job is sent
    failed: list[str] = []
    win.worker.job_failed.connect(lambda _j, message: failed.append(message))
    assert win.generate() is not None
    qtbot.waitUntil(lambda: bool(failed), timeout=LONG)
    assert "tiny_ip.safetensors needs" in failed[0] and "models/clip_vision" in failed[0]
    assert "tiny_ip.safetensors needs" in win.message_bar.text()
    win.reference_panel.clear_cards()
    _generate(qtbot, win)  # the next job runs
    assert win.worker.isRunning()
