"""Upscale on a gallery image: the dialog, the worker that runs it, and the main window's
wiring (a new gallery image pointing at its source; clear messages for bad input)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from desktop.engine.gallery import Gallery
from desktop.engine.metadata import read_metadata
from desktop.engine.request import GenerationRequest
from desktop.engine.settings import Settings, save_settings
from desktop.engine.upscalers import read_upscale_record
from desktop.ui.upscale_dialog import ImageUpscaler, UpscaleDialog

WAIT = 30_000


def _source(folder: Path, size: tuple[int, int] = (40, 24)) -> Path:
    """A gallery image with generation settings, as the app saves them."""
    with Gallery(root=folder) as gallery:
        request = GenerationRequest(prompt="a red fox", seed=7, width=64, height=64)
        return gallery.save(Image.new("RGB", size, (200, 80, 20)), request).path


def test_dialog_shows_the_result_size_and_remembers_the_choice(qtbot):
    dialog = UpscaleDialog("fox.png", (640, 480), ["Lanczos", "4x-Ultra"], "4x-Ultra", 3.0)
    qtbot.addWidget(dialog)
    assert dialog.windowTitle() == "Upscale fox.png"
    assert (dialog.upscaler(), dialog.scale()) == ("4x-Ultra", 3.0)
    assert dialog.size_label.text() == "640 × 480 → 1920 × 1440"
    dialog.scale_spin.setValue(1.5)
    assert dialog.size_label.text() == "640 × 480 → 960 × 720"
    # A remembered upscaler that is gone falls back to the first; a scale out of range is
    # brought into range.
    other = UpscaleDialog("fox.png", (64, 64), ["Lanczos"], "removed", 50.0)
    qtbot.addWidget(other)
    assert (other.upscaler(), other.scale()) == ("Lanczos", 8.0)


def test_lanczos_upscale_saves_a_new_image_pointing_at_its_source(qtbot, tmp_path: Path):
    source = _source(tmp_path / "out")
    upscaler = ImageUpscaler()
    try:
        with qtbot.waitSignal(upscaler.finished, timeout=WAIT) as done:
            upscaler.upscale(source, "Lanczos", 2.0, tmp_path / "out")
        assert done.args[0] == str(source)
        saved = Path(done.args[1])
        assert saved != source and saved.parent == tmp_path / "out"
        with Image.open(saved) as image:
            assert image.size == (80, 48)
        meta = read_metadata(saved)
        record = read_upscale_record(meta.raw)
        assert record is not None
        assert (record.scale, record.upscaler, record.source) == (2.0, "Lanczos", source.name)
        assert meta.request is not None and meta.request.prompt == "a red fox"
        with Image.open(source) as image:
            assert image.size == (40, 24)  # the source is left as it was
        assert not upscaler.busy
    finally:
        assert upscaler.shutdown()


def test_a_deleted_source_and_an_unknown_upscaler_fail_with_a_sentence(qtbot, tmp_path: Path):
    source = _source(tmp_path / "out")
    odd = tmp_path / "upscale_models" / "mystery.safetensors"
    odd.parent.mkdir()
    save_file({"some.weight": torch.zeros(3, 3)}, str(odd))
    upscaler = ImageUpscaler()
    try:
        failures: list[tuple[str, str]] = []
        upscaler.failed.connect(lambda path, text: failures.append((path, text)))
        with qtbot.waitSignal(upscaler.failed, timeout=WAIT):
            upscaler.upscale(tmp_path / "gone.png", "Lanczos", 2.0, tmp_path / "out")
        with qtbot.waitSignal(upscaler.failed, timeout=WAIT):
            upscaler.upscale(source, str(odd), 2.0, tmp_path / "out")
        with qtbot.waitSignal(upscaler.failed, timeout=WAIT):
            upscaler.upscale(source, "no-such-model", 2.0, tmp_path / "out")
        assert failures[0] == (
            str(tmp_path / "gone.png"),
            "gone.png is gone (deleted or moved); nothing was upscaled.",
        )
        assert "mystery.safetensors is not an upscaler Sandstorm recognises" in failures[1][1]
        assert failures[2][1].startswith("There is no upscaler named no-such-model")
        assert sorted(p.name for p in (tmp_path / "out").rglob("*.png")) == [source.name]
    finally:
        assert upscaler.shutdown()


def test_cancel_drops_the_waiting_upscales(qtbot, tmp_path: Path):
    source = _source(tmp_path / "out")
    upscaler = ImageUpscaler()
    try:
        cancelled: list[str] = []
        upscaler.cancelled.connect(cancelled.append)
        upscaler.upscale(source, "Lanczos", 2.0, tmp_path / "out")
        upscaler.upscale(source, "Lanczos", 3.0, tmp_path / "out")
        upscaler.upscale(source, "Lanczos", 4.0, tmp_path / "out")
        assert upscaler.busy
        upscaler.cancel()
        assert cancelled == [str(source), str(source)]  # the two waiting ones, at once
        qtbot.waitUntil(lambda: not upscaler.busy, timeout=WAIT)
        # The running one finished (Lanczos is one step) or stopped; never the 3x or 4x.
        names = sorted(p.name for p in (tmp_path / "out").rglob("*.png"))
        assert len(names) <= 2 and not any("3x" in n or "4x" in n for n in names)
    finally:
        assert upscaler.shutdown()


@pytest.fixture
def window(qtbot, sandstorm_home: Path):
    """A main window (no engine started) whose gallery holds one generated image."""
    from desktop.ui.main_window import MainWindow

    out = sandstorm_home / "out"
    source = _source(out, (32, 32))
    save_settings(Settings(output_dir=str(out), device="cpu"))
    win = MainWindow()
    qtbot.addWidget(win)
    win.show()
    qtbot.waitExposed(win)
    qtbot.waitUntil(lambda: win.gallery_panel.model.rowCount() == 1, timeout=WAIT)
    win.source = source  # type: ignore[attr-defined]
    yield win
    win.shutdown()


def test_upscale_from_the_gallery_adds_the_copy_to_the_gallery(qtbot, window):
    source: Path = window.source
    panel = window.gallery_panel
    panel.view.setCurrentIndex(panel.model.index(0, 0))
    panel.gallery_actions.upscale.trigger()
    dialog = window.upscale_dialog
    assert dialog is not None and dialog.isVisible()
    assert dialog.upscaler_combo.itemText(0) == "Lanczos"
    assert dialog.size_label.text() == "32 × 32 → 64 × 64"
    dialog.scale_spin.setValue(1.5)
    with qtbot.waitSignal(window.results_saved, timeout=WAIT) as saved:
        dialog.accept()
    (item,) = saved.args[0]
    # Saved beside its source (in the same day's folder); Reuse gives the source's settings.
    assert item.path.parent == source.parent and item.prompt == "a red fox"
    with Image.open(item.path) as image:
        assert image.size == (48, 48)
    qtbot.waitUntil(lambda: panel.model.rowCount() == 2, timeout=WAIT)
    assert str(panel.model.item(0).path) == str(item.path)  # the newest sorts first
    assert "upscaled from " + source.name in window.statusBar().currentMessage()
    # The next dialog offers what was chosen last.
    again = window.ask_upscale(str(item.path))
    assert again is not None and again.scale() == 1.5
    again.reject()


def test_upscale_of_a_file_deleted_behind_the_gallerys_back_says_so(qtbot, window):
    source: Path = window.source
    messages: list[tuple[str, str]] = []
    window.message_bar.show_message = lambda text, level="error", action=None: messages.append(
        (text, level)
    )
    source.unlink()
    window.gallery_panel.upscale_requested.emit(str(source))
    assert window.upscale_dialog is None
    assert messages[-1][1] == "error" and "is gone" in messages[-1][0]
    # Gone between the dialog and the work: the worker says so too.
    with qtbot.waitSignal(window.image_upscaler.failed, timeout=WAIT):
        window.upscale_image(str(source), "Lanczos", 2.0)
    assert "gone" in messages[-1][0]
    assert window.isVisible()
