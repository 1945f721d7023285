"""Inpainting and outpainting through the window: brush a mask, generate, reuse from the
gallery (the mask comes back), grow the canvas with a preset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PySide6.QtCore import QRectF

from desktop.engine.inpaint import prepare_inpaint
from desktop.engine.metadata import read_metadata
from desktop.ui.main_window import MainWindow
from tests.ui.test_mask_editor import stroke

LONG = 60_000


@pytest.fixture
def init_png(tmp_path: Path) -> Path:
    path = tmp_path / "photo.png"
    pixels = np.random.default_rng(3).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    Image.fromarray(pixels, "RGB").save(path)
    return path


def _generate(qtbot, win: MainWindow) -> Path:
    """Run the window's current settings; the saved image's path."""
    saved: list = []
    failed: list = []
    win.worker.job_failed.connect(lambda _j, message: failed.append(message))
    job = win.generate()
    assert job is not None, win.message_bar.text()
    win.worker.job_finished.connect(
        lambda j, items: saved.extend(items) if j == job.job_id else None
    )
    qtbot.waitUntil(lambda: bool(saved or failed), timeout=LONG)
    assert not failed, failed
    item = saved[0]
    return Path(getattr(item, "path", item))


def _brush(win: MainWindow, box: tuple[int, int, int, int]) -> None:
    """Paint across ``box`` (image pixels) with the mask editor's brush, as a user would."""
    panel = win.img2img_panel
    panel.set_painting(True)
    editor = panel.mask_editor
    editor.set_brush_size(12)
    left, top, right, bottom = box
    for y in range(top + 4, bottom - 3, 8):
        rect = editor.image_to_view(QRectF(left + 4, y, right - left - 8, 0))
        stroke(editor.view, [(rect.left(), rect.top()), (rect.right(), rect.top())])


def test_a_brushed_mask_repaints_only_there_and_reuse_brings_it_back(qtbot, window, init_png):
    win = window
    assert win.set_init_image(str(init_png))
    win.img2img_panel.set_strength(1.0)
    _brush(win, (32, 16, 64, 48))
    assert win.img2img_panel.has_mask() and "inpainting" in win.img2img_panel.mode_label.text()
    assert win.generate_button.text() == "Generate (inpaint)"
    request = win.build_request()
    assert request.mask is not None

    out_path = _generate(qtbot, win)
    out = np.asarray(Image.open(out_path).convert("RGB"))
    original = np.asarray(Image.open(init_png))
    assert out.shape == original.shape  # the init image's size, not the work size
    soft = np.asarray(prepare_inpaint(request.mask, init_png, 64, 64).soft_mask)
    assert np.array_equal(out[soft == 0], original[soft == 0])
    assert np.abs(out[soft == 255].astype(int) - original[soft == 255]).mean() > 10
    saved = read_metadata(out_path)
    parameters = saved.raw["parameters"]
    assert "Mask blur: 4" in parameters and "Masked content: original" in parameters

    # Reuse: a clean panel gets the image, the mask and its settings back from the gallery.
    win.img2img_panel.clear()
    assert not win.img2img_panel.has_mask()
    assert saved.request is not None
    win.apply_request(saved.request)
    assert win.img2img_panel.has_mask()
    restored = win.img2img_panel.mask_editor.mask_array()
    painted = np.asarray(Image.open(request.mask.image).convert("L"))
    assert restored is not None and np.array_equal(restored, painted)
    assert win.build_request().mask.blur == request.mask.blur


def test_an_outpaint_preset_grows_the_picture(qtbot, window, init_png):
    from desktop.ui.img2img_panel import EXPAND_PRESETS

    win = window
    assert win.set_init_image(str(init_png))
    win.img2img_panel.set_strength(1.0)
    names = [name for name, _ in EXPAND_PRESETS]
    win.img2img_panel.expand_preset.activated.emit(names.index("Bottom +50%") + 1)
    assert win.build_request().expand is not None
    assert win.generate_button.text() == "Generate (outpaint)"

    out = np.asarray(Image.open(_generate(qtbot, win)).convert("RGB"))
    assert out.shape == (96, 96, 3)
    seam = win.build_request().expand.feather
    original = np.asarray(Image.open(init_png))
    assert np.array_equal(out[: 64 - seam], original[: 64 - seam])
    assert out[64:].std() > 1
    assert win.worker.isRunning()


def test_each_bad_mask_says_why_in_the_window_and_the_next_job_runs(
    qtbot, window, init_png, tmp_path
):
    win = window
    panel = win.img2img_panel
    # No init image: the mask buttons are off, and loading says what is missing.
    assert not panel.paint_button.isEnabled() and not panel.load_mask_button.isEnabled()
    assert not panel.load_mask_file(tmp_path / "any.png")
    assert "Add an init image" in win.message_bar.text()

    assert win.set_init_image(str(init_png))  # 96×64
    text = tmp_path / "mask.txt"
    text.write_text("white = repaint")
    assert not panel.load_mask_file(text)
    assert "mask.txt is not an image file" in win.message_bar.text()
    black = tmp_path / "black.png"
    Image.new("L", (96, 64), 0).save(black)
    assert not panel.load_mask_file(black)
    assert "all black" in win.message_bar.text() and not panel.has_mask()

    small = tmp_path / "small.png"
    square = Image.new("L", (48, 32), 0)
    square.paste(255, (12, 8, 36, 24))
    square.save(small)
    assert panel.load_mask_file(small)
    assert "scaled" in win.message_bar.text() and panel.has_mask()
    _generate(qtbot, win)

    white = tmp_path / "white.png"
    Image.new("L", (96, 64), 255).save(white)
    assert panel.load_mask_file(white)
    out = np.asarray(Image.open(_generate(qtbot, win)).convert("RGB")).astype(int)
    assert np.abs(out - np.asarray(Image.open(init_png))).mean() > 10  # works as img2img
    assert win.worker.isRunning()
