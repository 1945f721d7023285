"""The control layers panel: layers, values as ControlUnits, suggested models, previews,
drawings and bad input (no engine or model weights needed)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw
from PySide6.QtCore import QEvent, QMimeData, QPoint, QPointF, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent, QImage, QMouseEvent, QStandardItemModel
from PySide6.QtWidgets import QApplication, QDialog
from safetensors.numpy import save_file

from desktop.engine import paths
from desktop.engine.control_images import preprocess
from desktop.engine.images import load_image
from desktop.engine.parts import CONTROL_TYPES, ControlUnit
from desktop.engine.schema import to_plain
from desktop.ui.control_panel import (
    ControlLayer,
    ControlPanel,
    controls_dir,
    save_drawing,
)
from desktop.ui.form import build_request
from desktop.ui.part_list import MODEL_ROLE
from desktop.ui.sketch_pad import SketchDialog

SD15 = {
    "control_model.input_hint_block.0.weight": (16, 3, 3, 3),
    "control_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (320, 768),
}
SDXL = {
    "controlnet_cond_embedding.conv_in.weight": (16, 3, 3, 3),
    "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight": (640, 2048),
}


def fake_controlnet(path: Path, keys: dict[str, tuple[int, ...]]) -> Path:
    """A .safetensors file with the header of a ControlNet (tiny zero tensors)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: np.zeros(s, dtype=np.float16) for k, s in keys.items()}, str(path))
    return path


@pytest.fixture
def extra_folder(tmp_path: Path) -> Path:
    """A ComfyUI install (an extra model source) holding SD1.5 and SDXL ControlNets and two
    files that cannot be used."""
    root = tmp_path / "ComfyUI"
    (root / "models" / "checkpoints").mkdir(parents=True)
    folder = root / "models" / "controlnet"
    fake_controlnet(folder / "zz_sd15_canny.safetensors", SD15)
    fake_controlnet(folder / "zz_sd15_scribble.safetensors", SD15)
    fake_controlnet(folder / "zz_xl_canny.safetensors", SDXL)
    (folder / "zz_sd15_depth.pth").write_bytes(b"\x80\x04")
    fake_controlnet(folder / "zz_ip-adapter_sd15.safetensors", {"image_proj.w": (4,)})
    return root


@pytest.fixture
def panel(qtbot, extra_folder: Path):
    widget = ControlPanel(extra_sources=[extra_folder], family="sd1")
    qtbot.addWidget(widget)
    widget.resize(420, 700)
    widget.show()
    yield widget
    assert widget.shutdown(30_000)


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    """A 96×64 picture with a bright square (edges for canny) on a mid-grey ground."""
    path = tmp_path / "photo.png"
    image = Image.new("RGB", (96, 64), (90, 90, 90))
    ImageDraw.Draw(image).rectangle((30, 16, 66, 48), fill=(240, 240, 240))
    image.save(path)
    return path


def drop(widget, mime: QMimeData) -> bool:
    """A drag-enter then a drop on ``widget``, as a real drag would send."""
    enter = QDragEnterEvent(
        QPoint(10, 10),
        Qt.DropAction.CopyAction,
        mime,
        Qt.MouseButton.LeftButton,
        Qt.KeyboardModifier.NoModifier,
    )
    widget.dragEnterEvent(enter)
    event = QDropEvent(
        QPoint(10, 10),
        Qt.DropAction.CopyAction,
        mime,
        Qt.MouseButton.LeftButton,
        Qt.KeyboardModifier.NoModifier,
    )
    widget.dropEvent(event)
    return enter.isAccepted()


def file_mime(path: Path) -> QMimeData:
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(path))])
    return mime


def wait_preview(qtbot, layer: ControlLayer) -> QImage:
    with qtbot.waitSignal(layer.preview_ready, timeout=20_000) as ready:
        pass
    return ready.args[0]


def qimage_rgb(image: QImage) -> np.ndarray:
    rgb = image.convertToFormat(QImage.Format.Format_RGB888)
    data = np.frombuffer(rgb.constBits(), dtype=np.uint8, count=rgb.bytesPerLine() * rgb.height())
    return data.reshape(rgb.height(), rgb.bytesPerLine())[:, : rgb.width() * 3].reshape(
        rgb.height(), rgb.width(), 3
    )


def model_entries(layer: ControlLayer) -> list[tuple[str, str, bool, str]]:
    """(text, name data, enabled, tooltip) of each entry of the layer's model picker."""
    combo = layer.model_combo
    model = combo.model()
    assert isinstance(model, QStandardItemModel)
    return [
        (
            combo.itemText(i),
            combo.itemData(i, MODEL_ROLE),
            model.item(i).isEnabled(),
            combo.itemData(i, Qt.ItemDataRole.ToolTipRole) or "",
        )
        for i in range(combo.count())
    ]


# -- layers ------------------------------------------------------------------------------------
def test_layers_are_added_and_removed_with_their_buttons(qtbot, panel):
    assert panel.layers() == [] and panel.values() == {"controls": ()}
    assert panel.hint_label.isVisible()
    with qtbot.waitSignal(panel.values_changed), qtbot.waitSignal(panel.layers_changed) as count:
        panel.add_button.click()
    assert count.args == [1]
    first = panel.layers()[0]
    assert first.control_type() == "scribble"
    assert [first.editors["type"].itemText(i) for i in range(len(CONTROL_TYPES))] == list(
        CONTROL_TYPES
    )
    second = panel.add_layer("canny")
    third = panel.add_layer("tile")
    assert panel.layers() == [first, second, third]
    assert [layer.title_label.text() for layer in panel.layers()] == [
        "Layer 1",
        "Layer 2",
        "Layer 3",
    ]
    assert not panel.hint_label.isVisible()

    with qtbot.waitSignal(panel.layers_changed) as count:
        second.remove_button.click()
    assert count.args == [2]
    assert panel.layers() == [first, third]
    assert [layer.title_label.text() for layer in panel.layers()] == ["Layer 1", "Layer 2"]
    assert second.parent() is None  # out of the panel (deleted later)
    panel.clear_layers()
    assert panel.layers() == [] and panel.hint_label.isVisible()


def test_values_are_control_units_with_the_editors_values(qtbot, panel, photo):
    empty = panel.add_layer("canny")  # no image: not part of the request
    layer = panel.add_layer("lineart", photo)
    assert layer.image_path() == photo and layer.image_size() == (96, 64)
    assert layer.slot.has_thumbnail()
    with qtbot.waitSignal(panel.values_changed):
        layer.editors["strength"].set_value(0.65)
    layer.editors["start"].set_value(0.1)
    layer.editors["end"].set_value(0.8)
    layer.editors["resize"].set_value("Resize and Fill")
    (unit,) = panel.values()["controls"]
    assert unit == ControlUnit(
        type="lineart",
        image=str(photo),
        model="",
        strength=0.65,
        start=0.1,
        end=0.8,
        resize="Resize and Fill",
    )
    assert set(panel.values()) == {"controls"}
    # The editors come from ControlUnit's declarations: labels, limits and choices.
    assert layer.editors["strength"].maximum() == 2.0
    assert layer.editors["resize"].count() == 3
    # The window's generic collection builds a request from them.
    request = build_request({"prompt": "x", "width": 64, "height": 64, **panel.values()})
    assert request.controls == (unit,)

    layer.set_active(False)
    assert panel.values() == {"controls": ()}
    layer.set_active(True)
    empty.set_image(photo)
    assert [u.type for u in panel.values()["controls"]] == ["canny", "lineart"]


def test_start_stays_before_end(panel, photo):
    layer = panel.add_layer("canny", photo)
    layer.editors["end"].set_value(0.3)
    layer.editors["start"].set_value(0.5)  # past the end: the end moves along
    assert layer.editors["start"].value_() == pytest.approx(0.5)
    assert layer.editors["end"].value_() == pytest.approx(0.55)
    layer.editors["start"].set_value(1.0)  # nothing after it: the start gives way
    assert layer.editors["end"].value_() == pytest.approx(1.0)
    assert layer.editors["start"].value_() == pytest.approx(0.95)
    layer.editors["end"].set_value(0.0)
    assert layer.editors["start"].value_() == pytest.approx(0.0)
    assert layer.editors["end"].value_() == pytest.approx(0.05)
    (unit,) = panel.values()["controls"]
    assert unit.start < unit.end


def test_set_values_round_trip_from_units_and_dicts(qtbot, panel, photo, tmp_path):
    other = tmp_path / "other.png"
    Image.new("RGB", (32, 48), "white").save(other)
    a = panel.add_layer("canny", photo)
    a.editors["strength"].set_value(1.4)
    a.set_model_name("zz_sd15_canny")
    b = panel.add_layer("tile", other)
    b.editors["start"].set_value(0.25)
    b.editors["resize"].set_value("Just Resize")
    saved = panel.values()
    assert [u.model for u in saved["controls"]] == ["zz_sd15_canny", ""]

    fresh = ControlPanel(extra_sources=panel.extra_sources, family="sd1")
    qtbot.addWidget(fresh)
    try:
        with qtbot.waitSignal(fresh.values_changed):
            fresh.set_values(saved)
        assert fresh.values() == saved
        assert [layer.control_type() for layer in fresh.layers()] == ["canny", "tile"]
        assert fresh.layers()[0].model_combo.currentText() == "zz_sd15_canny"

        # Plain dicts (a request's JSON) restore the same; an empty list clears the layers.
        plain = [to_plain(unit) for unit in saved["controls"]]
        fresh.set_values({"controls": ()})
        assert fresh.layers() == []
        fresh.set_values({"controls": plain})
        assert fresh.values() == saved
        # Values the panel does not edit are ignored, and no "controls" leaves it alone.
        fresh.set_values({"prompt": "a cat", "steps": 20})
        assert fresh.values() == saved
    finally:
        assert fresh.shutdown()


def test_a_layer_whose_image_is_gone_is_not_restored(qtbot, panel, photo, tmp_path):
    gone = tmp_path / "gone.png"
    units = (
        ControlUnit(type="canny", image=str(gone)),
        ControlUnit(type="scribble", image=str(photo), strength=0.5),
    )
    with qtbot.waitSignal(panel.message) as message:
        panel.set_values({"controls": units})
    assert "Control layer 1 was not restored" in message.args[0]
    assert "gone.png" in message.args[0]
    assert panel.values()["controls"] == (units[1],)

    with qtbot.waitSignal(panel.message) as message:
        panel.set_values({"controls": [{"type": "canny"}, {"type": "nope", "image": "x"}]})
    assert "was not restored" in message.args[0]
    assert panel.layers() == []


def test_a_model_not_installed_is_kept_and_named(panel, photo):
    unit = ControlUnit(type="canny", image=str(photo), model="someone_elses_canny")
    panel.set_values({"controls": (unit,)})
    layer = panel.layers()[0]
    assert layer.model_combo.currentText() == "someone_elses_canny (not installed)"
    assert "not installed" in layer.note_label.text()
    assert panel.values()["controls"] == (unit,)
    panel.refresh_models()  # a refresh keeps the choice
    assert panel.values()["controls"] == (unit,)


# -- models ------------------------------------------------------------------------------------
def test_the_suggested_model_follows_the_type_and_family(qtbot, panel, extra_folder):
    layer = panel.add_layer("canny")
    assert layer.model_combo.currentText() == "Suggested: zz_sd15_canny"
    assert layer.model_name() == ""  # automatic: the request leaves it to the engine
    assert layer.suggested().name == "zz_sd15_canny"

    layer.set_control_type("scribble")
    assert layer.model_combo.currentText() == "Suggested: zz_sd15_scribble"
    panel.set_family("sdxl")
    assert layer.model_combo.currentText().startswith("Automatic")
    assert "No scribble ControlNet for SDXL" in layer.note_label.text()
    layer.set_control_type("canny")
    assert layer.model_combo.currentText() == "Suggested: zz_xl_canny"
    panel.set_family("sd1-inpaint")  # an inpainting model counts as its base
    assert layer.model_combo.currentText() == "Suggested: zz_sd15_canny"

    entries = {text: (name, enabled, tip) for text, name, enabled, tip in model_entries(layer)}
    assert entries["zz_sd15_scribble"][:2] == ("zz_sd15_scribble", True)
    assert entries["zz_xl_canny"][1]  # another family: listed, its note says why not
    _, depth_on, depth_tip = entries["zz_sd15_depth"]
    assert not depth_on and "pickles" in depth_tip
    assert not entries["zz_ip-adapter_sd15"][1] and "IP-Adapter" in entries["zz_ip-adapter_sd15"][2]

    # An explicit choice is the request's model, and a family change keeps it (with a note).
    layer.model_combo.setCurrentIndex(layer.model_combo.findText("zz_sd15_scribble"))
    assert layer.model_name() == "zz_sd15_scribble"
    panel.set_family("sdxl")
    assert layer.model_name() == "zz_sd15_scribble"
    assert "SDXL" in layer.note_label.text()


def test_models_come_from_the_user_folder_and_the_extra_sources(qtbot, panel, tmp_path):
    own = paths.user_models_dir() / "controlnet"
    fake_controlnet(own / "zz_own_sd15_tile.safetensors", SD15)
    layer = panel.add_layer("tile")
    assert layer.model_combo.currentText().startswith("Automatic")
    with qtbot.waitSignal(panel.models_changed):
        panel.refresh_button.click()
    assert layer.model_combo.currentText() == "Suggested: zz_own_sd15_tile"

    a1111 = tmp_path / "stable-diffusion-webui"
    (a1111 / "models" / "Stable-diffusion").mkdir(parents=True)
    fake_controlnet(a1111 / "models" / "ControlNet" / "zz_sd15_lineart.safetensors", SD15)
    panel.set_extra_sources([a1111])
    names = {m.name for m in panel.models()}
    assert "zz_sd15_lineart" in names and "zz_sd15_canny" not in names
    layer.set_control_type("lineart")
    assert layer.model_combo.currentText() == "Suggested: zz_sd15_lineart"


def test_no_controlnet_installed_says_where_to_put_one(qtbot, tmp_path):
    empty = ControlPanel(extra_sources=[tmp_path / "nothing"], family="sd1")
    qtbot.addWidget(empty)
    try:
        empty.show()
        if not any(not m.problem for m in empty.models()):
            assert "No ControlNet models found" in empty.hint_label.text()
            assert "Searched:" in empty.hint_label.toolTip()
        layer = empty.add_layer("canny")
        assert layer.model_name() == "" and layer.model_combo.count() >= 1
    finally:
        assert empty.shutdown()


# -- previews ----------------------------------------------------------------------------------
def test_the_preview_is_the_preprocessed_image_made_off_the_gui_thread(qtbot, panel, photo):
    layer = panel.add_layer("canny")
    with qtbot.waitSignal(layer.preview_ready, timeout=20_000) as ready:
        layer.set_image(photo)
    expected = preprocess("canny", load_image(photo))
    image = ready.args[0]
    assert (image.width(), image.height()) == expected.size == (96, 64)
    assert (qimage_rgb(image) == np.asarray(expected)).all()
    assert layer.has_preview() and layer.preview_size() == (96, 64)
    assert layer.preview_label.pixmap().width() <= 112

    # Another type makes a new preview (the panel reports it too).
    with (
        qtbot.waitSignal(layer.preview_ready, timeout=20_000) as ready,
        qtbot.waitSignal(panel.preview_ready, timeout=20_000) as from_panel,
    ):
        layer.set_control_type("tile")
    expected = preprocess("tile", load_image(photo))
    assert (qimage_rgb(ready.args[0]) == np.asarray(expected)).all()
    assert from_panel.args[0] is layer

    layer.clear_image()
    assert not layer.has_preview() and layer.preview_size() is None


def test_a_preview_that_fails_is_shown_as_text(qtbot, panel, photo, tmp_path):
    victim = tmp_path / "victim.png"
    victim.write_bytes(photo.read_bytes())
    layer = panel.add_layer("canny", victim)
    wait_preview(qtbot, layer)
    victim.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)  # broken after it was chosen
    with qtbot.waitSignal(layer.preview_failed, timeout=20_000) as failed:
        layer.set_control_type("lineart")
    assert "victim.png" in failed.args[0]
    assert layer.preview_label.text() == failed.args[0]
    assert not layer.has_preview()
    # The panel keeps working: a good image previews again.
    with qtbot.waitSignal(layer.preview_ready, timeout=20_000):
        layer.set_image(photo)
    assert layer.has_preview() and layer.preview_error() == ""


# -- drawings ----------------------------------------------------------------------------------
def test_a_drawing_becomes_the_layer_image(qtbot, panel, monkeypatch):
    def sketch(dialog: SketchDialog) -> int:
        pad = dialog.pad
        pad.set_antialiased(False)
        pad.set_pen_size(12)
        pad.canvas.resize(256, 256)  # shown at half size: strokes still land on page pixels
        for kind, x in (
            (QEvent.Type.MouseButtonPress, 100),
            (QEvent.Type.MouseMove, 300),
            (QEvent.Type.MouseButtonRelease, 400),
        ):
            point = pad.image_rect().topLeft() + QPointF(x, 256) * pad.view_scale()
            button = Qt.MouseButton.LeftButton
            held = Qt.MouseButton.NoButton if kind == QEvent.Type.MouseButtonRelease else button
            if kind == QEvent.Type.MouseMove:
                button = Qt.MouseButton.NoButton
            event = QMouseEvent(
                kind, point, pad.canvas.mapToGlobal(point), button, held, Qt.KeyboardModifier(0)
            )
            QApplication.sendEvent(pad.canvas, event)
        return int(QDialog.DialogCode.Accepted)

    monkeypatch.setattr(SketchDialog, "exec", sketch)
    layer = panel.add_layer("scribble")
    with qtbot.waitSignal(layer.preview_ready, timeout=20_000) as ready:
        layer.draw_button.click()
    path = layer.image_path()
    assert path is not None and path.parent == controls_dir() == paths.data_dir() / "controls"
    with Image.open(path) as saved:
        assert saved.format == "PNG" and saved.size == (512, 512)
        pixels = np.asarray(saved.convert("RGB"))
    assert (pixels[256, 250] == 0).all() and (pixels[100, 250] == 255).all()
    assert (pixels[256, 60] == 255).all()  # the stroke began at x 100 (6 px pen radius)
    # Named by a sha256 of its pixels: the same drawing again is the same file.
    digest = hashlib.sha256(b"512x512:" + pixels.tobytes()).hexdigest()
    assert path.name == f"{digest[:32]}.png"
    assert save_drawing(QImage(str(path))) == path
    # The scribble preview is white strokes on black where the pen went.
    preview = qimage_rgb(ready.args[0])
    assert preview.shape == (512, 512, 3)
    assert preview[256, 250].min() > 200 and preview[100, 250].max() < 50
    (unit,) = panel.values()["controls"]
    assert unit.image == str(path) and unit.type == "scribble"


def test_a_cancelled_or_empty_drawing_leaves_the_image(qtbot, panel, photo, monkeypatch):
    layer = panel.add_layer("scribble", photo)
    monkeypatch.setattr(SketchDialog, "exec", lambda dialog: int(QDialog.DialogCode.Rejected))
    assert not layer.draw()
    monkeypatch.setattr(SketchDialog, "exec", lambda dialog: int(QDialog.DialogCode.Accepted))
    with qtbot.waitSignal(panel.message) as message:
        assert not layer.draw()
    assert "empty" in message.args[0]
    assert layer.image_path() == photo


# -- bad input ---------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["text-file", "plain-text", "remote-url", "broken-png"])
def test_a_bad_drop_gives_a_message_and_the_layer_keeps_working(
    qtbot, panel, photo, tmp_path, kind
):
    layer = panel.add_layer("canny")
    mime = QMimeData()
    if kind == "text-file":
        note = tmp_path / "notes.txt"
        note.write_text("not an image")
        mime.setUrls([QUrl.fromLocalFile(str(note))])
    elif kind == "plain-text":
        mime.setText("hello there")
    elif kind == "remote-url":
        mime.setUrls([QUrl("https://example.com/cat.png")])
    else:
        broken = tmp_path / "broken.png"
        broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
        mime.setUrls([QUrl.fromLocalFile(str(broken))])
    with qtbot.waitSignal(panel.message) as message:
        drop(layer.slot, mime)
    text = message.args[0]
    assert text.endswith(".") and len(text) > 20
    assert layer.image_path() is None and panel.values() == {"controls": ()}

    with qtbot.waitSignal(layer.preview_ready, timeout=20_000):
        assert drop(layer.slot, file_mime(photo))
    assert layer.image_path() == photo


def test_pasted_image_data_is_stored_and_used(qtbot, panel):
    layer = panel.add_layer("tile")
    image = QImage(40, 24, QImage.Format.Format_RGB32)
    image.fill(Qt.GlobalColor.darkCyan)
    mime = QMimeData()
    mime.setImageData(image)
    with qtbot.waitSignal(layer.preview_ready, timeout=20_000) as ready:
        assert layer.accept_mime(mime)
    assert layer.image_size() == (40, 24)
    assert (ready.args[0].width(), ready.args[0].height()) == (40, 24)
    with qtbot.waitSignal(panel.message) as message:
        layer.accept_mime(None)
    assert "clipboard" in message.args[0]


def test_an_unreadable_file_for_add_layer_gives_a_message(qtbot, panel, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_text("nope")
    with qtbot.waitSignal(panel.message) as message:
        layer = panel.add_layer("canny", bad)
    assert "bad.png" in message.args[0]
    assert layer in panel.layers() and layer.image_path() is None
