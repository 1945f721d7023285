"""Drag and drop, paste and clear on the img2img panel (no engine needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PySide6.QtCore import QEvent, QMimeData, QPoint, QRectF, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent, QGuiApplication, QImage, QMouseEvent
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication

from desktop.engine import paths
from desktop.engine.inpaint import prepare_inpaint
from desktop.engine.parts import MASK_MODES, MaskSpec
from desktop.engine.schema import fields_of
from desktop.ui.form import build_request
from desktop.ui.img2img_panel import Img2ImgPanel


@pytest.fixture
def panel(qtbot) -> Img2ImgPanel:
    widget = Img2ImgPanel()
    qtbot.addWidget(widget)
    widget.show()
    return widget


@pytest.fixture
def png(tmp_path: Path) -> Path:
    path = tmp_path / "photo.png"
    Image.new("RGB", (100, 60), (10, 200, 30)).save(path)
    return path


def drop(zone, mime: QMimeData) -> bool:
    """Send a drag-enter then a drop to ``zone``, as a real drag would."""
    enter = QDragEnterEvent(
        QPoint(10, 10),
        Qt.DropAction.CopyAction,
        mime,
        Qt.MouseButton.LeftButton,
        Qt.KeyboardModifier.NoModifier,
    )
    zone.dragEnterEvent(enter)
    event = QDropEvent(
        QPoint(10, 10),
        Qt.DropAction.CopyAction,
        mime,
        Qt.MouseButton.LeftButton,
        Qt.KeyboardModifier.NoModifier,
    )
    zone.dropEvent(event)
    return enter.isAccepted()


def request_from(panel: Img2ImgPanel):
    return build_request({"prompt": "x", "model": "m", "width": 64, "height": 64, **panel.values()})


def test_file_url_drop_switches_to_img2img_with_strength(qtbot, panel, png):
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(png))])
    with qtbot.waitSignal(panel.image_changed) as changed:
        assert drop(panel.drop_zone, mime)
    assert changed.args == [str(png)]
    assert panel.image_size() == (100, 60)
    assert not panel.drop_zone.label.pixmap().isNull()
    panel.set_strength(0.35)
    request = request_from(panel)
    assert request.is_img2img and request.init_image == str(png)
    assert request.strength == pytest.approx(0.35)

    with qtbot.waitSignal(panel.use_size_requested) as size:
        panel.use_size_button.click()
    assert size.args == [100, 60]

    with qtbot.waitSignal(panel.image_changed) as cleared:
        panel.clear_button.click()
    assert cleared.args == [None]
    assert not request_from(panel).is_img2img


def test_image_data_drop_is_cached_as_png(qtbot, panel):
    image = QImage(48, 32, QImage.Format.Format_RGB32)
    image.fill(Qt.GlobalColor.magenta)
    mime = QMimeData()
    mime.setImageData(image)
    drop(panel.drop_zone, mime)
    path = Path(panel.init_image())
    assert path.parent == paths.cache_dir() / "inputs"
    assert path.suffix == ".png" and path.is_file()
    with Image.open(path) as stored:
        assert stored.size == (48, 32)
    # The same data maps to the same file (named by content).
    drop(panel.drop_zone, mime)
    assert Path(panel.init_image()) == path
    assert len(list(path.parent.glob("*.png"))) == 1


def test_browser_html_with_a_local_image(qtbot, panel, png):
    mime = QMimeData()
    mime.setHtml(f'<meta charset="utf-8"><img src="{QUrl.fromLocalFile(str(png)).toString()}">')
    drop(panel.drop_zone, mime)
    assert panel.init_image() == str(png)


@pytest.mark.parametrize("kind", ["text-file", "plain-text", "remote-url", "broken-png"])
def test_non_image_drop_gives_a_message(qtbot, panel, tmp_path, kind):
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
        drop(panel.drop_zone, mime)
    text = message.args[0]
    assert text.endswith(".") and len(text) > 20
    assert panel.init_image() is None


def test_paste_with_ctrl_v_and_the_paste_button(qtbot, panel, png):
    image = QImage(16, 16, QImage.Format.Format_RGB32)
    image.fill(Qt.GlobalColor.cyan)
    QGuiApplication.clipboard().setImage(image)
    panel.drop_zone.setFocus()
    QTest.keyClick(panel.drop_zone, Qt.Key.Key_V, Qt.KeyboardModifier.ControlModifier)
    assert panel.init_image() is not None
    assert panel.image_size() == (16, 16)
    panel.clear()

    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(png))])
    QGuiApplication.clipboard().setMimeData(mime)
    panel.paste_button.click()
    assert panel.init_image() == str(png)


# -- the inpainting mask -----------------------------------------------------------------------


def paint(panel: Img2ImgPanel, points: list[tuple[float, float]], size: int = 8) -> None:
    """Turn on "Paint mask" and drag through ``points`` (image pixels) in the editor."""
    if not panel.is_painting():
        panel.paint_button.click()
    editor = panel.mask_editor
    editor.set_brush_size(size)
    view = editor.view
    spots = [editor.image_to_view(QRectF(x, y, 0, 0)).topLeft() for x, y in points]
    for kind, spot in (
        [(QEvent.Type.MouseButtonPress, spots[0])]
        + [(QEvent.Type.MouseMove, s) for s in spots[1:]]
        + [(QEvent.Type.MouseButtonRelease, spots[-1])]
    ):
        button = (
            Qt.MouseButton.NoButton if kind == QEvent.Type.MouseMove else Qt.MouseButton.LeftButton
        )
        held = (
            Qt.MouseButton.NoButton
            if kind == QEvent.Type.MouseButtonRelease
            else Qt.MouseButton.LeftButton
        )
        event = QMouseEvent(
            kind, spot, view.mapToGlobal(spot), button, held, Qt.KeyboardModifier.NoModifier
        )
        QApplication.sendEvent(view, event)


def test_paint_mask_shows_the_editor_over_the_init_image(qtbot, panel, png):
    assert not panel.paint_button.isEnabled()
    assert not panel.mask_settings.isVisible()
    panel.set_image(png)
    assert panel.paint_button.isEnabled() and panel.load_mask_button.isEnabled()
    panel.paint_button.click()
    assert panel.is_painting()
    assert panel.drop_zone.stack.currentWidget() is panel.mask_editor
    assert panel.mask_editor.image_size() == (100, 60)
    assert panel.mask_editor.isVisible() and panel.mask_editor.view.width() > 100
    # The mask settings are there before the first stroke: painting does not move the view.
    assert panel.mask_settings.isVisible()
    panel.paint_button.click()
    assert panel.drop_zone.stack.currentWidget() is panel.drop_zone.label


def test_a_painted_mask_becomes_the_request_mask(qtbot, panel, png):
    panel.set_image(png)
    assert panel.values()["mask"] is None
    with qtbot.waitSignal(panel.values_changed):
        paint(panel, [(10, 10), (30, 10)])
    assert panel.mask_settings.isVisible()
    assert panel.mode_label.text() == "Mode: inpainting"
    spec = panel.values()["mask"]
    assert isinstance(spec, MaskSpec)
    path = Path(spec.image)
    assert path.parent == paths.data_dir() / "masks" and path.is_file()
    with Image.open(path) as stored:
        assert stored.size == (100, 60)
        values = np.asarray(stored.convert("L"))
    assert (values[10, 10:31] == 255).all()
    assert values[40, 50] == 0 and values[10, 60] == 0
    request = request_from(panel)
    assert request.mask == spec and request.init_image == str(png)
    # The engine reads it at the init image's size (no "scaled" note), around the stroke.
    plan = prepare_inpaint(spec, png, 64, 64)
    assert plan.notes == [] and plan.soft_mask.size == (100, 60)

    # The same pixels reuse the file; a change writes another.
    assert panel.values()["mask"].image == spec.image
    panel.mask_editor.invert()
    panel.mask_editor.invert()
    assert panel.values()["mask"].image == spec.image
    paint(panel, [(80, 50)])
    assert panel.values()["mask"].image != spec.image
    assert len(list(path.parent.glob("*.png"))) == 2
    assert not list(path.parent.glob("*.tmp"))


def test_the_mask_settings_come_from_the_declarations_and_flow_into_the_mask(qtbot, panel, png):
    panel.set_image(png)
    paint(panel, [(50, 30)])
    form = panel.mask_settings.layout()
    declared = {info.name: info for info in fields_of(MaskSpec) if info.name != "image"}
    assert set(panel.mask_editors) == set(declared)
    for name, info in declared.items():
        editor = panel.mask_editors[name]
        assert form.labelForField(editor).text() == info.label
        assert editor.value_() == info.default or name == "only_masked"
        assert editor.toolTip() == info.spec.help
    blur = panel.mask_editors["blur"]
    assert (blur.minimum(), blur.maximum()) == (0, 64)
    assert panel.mask_editors["mode"].count() == len(MASK_MODES)

    with qtbot.waitSignal(panel.values_changed):
        panel.mask_editors["blur"].set_value(12)
    panel.mask_editors["mode"].set_value("latent noise")
    panel.mask_editors["padding"].set_value(96)
    panel.mask_editors["only_masked"].set_value(False)
    spec = panel.values()["mask"]
    assert (spec.blur, spec.mode, spec.padding, spec.only_masked) == (
        12,
        "latent noise",
        96,
        False,
    )


def test_only_masked_is_on_for_a_small_mask_off_for_a_large_one(qtbot, panel, png):
    panel.set_image(png)
    only = panel.mask_editors["only_masked"]
    paint(panel, [(20, 20), (30, 20)])
    assert only.isChecked()
    panel.mask_editor.fill()
    assert not only.isChecked()
    panel.mask_editor.undo()
    assert only.isChecked()
    # Once the user sets it, the mask no longer decides.
    only.click()
    assert not only.isChecked()
    paint(panel, [(70, 40)])
    assert not panel.values()["mask"].only_masked
    # A new image starts over.
    panel.set_image(png)
    paint(panel, [(70, 40)])
    assert only.isChecked()


def test_set_values_restores_a_mask(qtbot, panel, png):
    panel.set_image(png)
    paint(panel, [(10, 10), (40, 40)])
    panel.mask_editors["blur"].set_value(9)
    panel.mask_editors["mode"].set_value("fill")
    values = panel.values()
    painted = panel.mask_editor.mask_array()

    other = Img2ImgPanel()
    qtbot.addWidget(other)
    with qtbot.waitSignal(other.mask_changed):
        other.set_values({"init_image": values["init_image"], "mask": values["mask"]})
    assert other.init_image() == str(png) and other.has_mask()
    assert np.array_equal(other.mask_editor.mask_array(), painted)
    assert other.values()["mask"] == values["mask"]
    assert not other.mask_settings.isHidden()

    # Values without an init image leave the image and its mask alone (as the window does
    # when reusing a text-to-image request); a request with its image and no mask removes it.
    other.set_values({"mask": None, "seed": 5})
    assert other.has_mask()
    other.set_values({"init_image": str(png), "mask": None})
    assert not other.has_mask() and other.values()["mask"] is None


def test_a_missing_mask_file_is_not_restored(qtbot, panel, png, tmp_path):
    spec = MaskSpec(image=str(tmp_path / "gone.png"))
    with qtbot.waitSignal(panel.message) as message:
        panel.set_values({"init_image": str(png), "mask": spec})
    assert "gone.png" in message.args[0] and "not restored" in message.args[0]
    assert panel.init_image() == str(png)
    assert not panel.has_mask() and panel.values()["mask"] is None


def test_a_mask_never_outlives_its_image(qtbot, panel, png, tmp_path):
    panel.set_image(png)
    paint(panel, [(10, 10), (40, 40)])
    assert panel.has_mask()
    with qtbot.waitSignal(panel.mask_changed):
        panel.clear()
    assert not panel.has_mask() and not panel.is_painting()
    assert panel.values()["mask"] is None and not panel.mask_settings.isVisible()
    assert not panel.paint_button.isEnabled()
    with qtbot.waitSignal(panel.message):
        assert not panel.load_mask_file(png)
    assert not panel.has_mask()
    # Without an init image a mask in the values is refused, with a message.
    mask_file = tmp_path / "mask.png"
    Image.new("L", (100, 60), 255).save(mask_file)
    with qtbot.waitSignal(panel.message):
        panel.set_values({"mask": MaskSpec(image=str(mask_file))})
    assert panel.values()["mask"] is None

    # A new image (even the same size) starts without a mask.
    panel.set_image(png)
    paint(panel, [(10, 10)])
    second = tmp_path / "second.png"
    Image.new("RGB", (100, 60), (0, 0, 0)).save(second)
    panel.set_image(second)
    assert not panel.has_mask() and panel.values()["mask"] is None
    assert panel.is_painting() and panel.mask_editor.image_size() == (100, 60)


def test_load_mask_and_from_alpha_buttons(qtbot, panel, png, tmp_path, monkeypatch):
    panel.set_image(png)
    mask_file = tmp_path / "small-mask.png"
    small = Image.new("L", (50, 30), 0)
    small.paste(255, (0, 0, 10, 10))
    small.save(mask_file)
    monkeypatch.setattr(
        "desktop.ui.img2img_panel.QFileDialog.getOpenFileName",
        lambda *a, **k: (str(mask_file), ""),
    )
    with qtbot.waitSignal(panel.message) as note:
        panel.load_mask_button.click()
    assert "scaled" in note.args[0]
    assert panel.has_mask() and panel.mask_editor.image_size() == (100, 60)
    # Shown on the thumbnail while not painting.
    assert not panel.is_painting() and not panel.drop_zone.label.pixmap().isNull()

    with qtbot.waitSignal(panel.message) as refused:
        panel.alpha_button.click()
    assert "transparency" in refused.args[0]

    cutout = tmp_path / "cutout.png"
    rgba = Image.new("RGBA", (100, 60), (10, 200, 30, 255))
    rgba.paste((0, 0, 0, 0), (0, 0, 100, 20))
    rgba.save(cutout)
    panel.set_image(cutout)
    panel.alpha_button.click()
    spec = panel.values()["mask"]
    with Image.open(spec.image) as stored:
        values = np.asarray(stored.convert("L"))
    assert (values[:20] == 255).all() and (values[20:] == 0).all()


def test_paste_over_the_mask_editor_replaces_the_image(qtbot, panel, png):
    panel.set_image(png)
    paint(panel, [(20, 20)])
    image = QImage(40, 30, QImage.Format.Format_RGB32)
    image.fill(Qt.GlobalColor.yellow)
    QGuiApplication.clipboard().setImage(image)
    # The editor leaves Ctrl+V to the drop zone around it.
    QTest.keyClick(panel.mask_editor.view, Qt.Key.Key_V, Qt.KeyboardModifier.ControlModifier)
    assert panel.image_size() == (40, 30)
    assert not panel.has_mask() and panel.mask_editor.image_size() == (40, 30)


# -- outpainting -------------------------------------------------------------------------------
def test_outpaint_presets_and_sides_become_the_request_expand(qtbot, panel, png):
    from desktop.engine.parts import ExpandSpec
    from desktop.ui.img2img_panel import EXPAND_PRESETS

    assert not panel.expand_settings.isEnabled()  # no init image yet
    panel.set_image(png)  # 100×60
    assert panel.values()["expand"] is None and panel.canvas_size() == (100, 60)
    assert not panel.expand_body.isVisible()  # folded away while off: room for the mask
    names = [name for name, _ in EXPAND_PRESETS]
    with qtbot.waitSignal(panel.values_changed):
        panel.expand_preset.activated.emit(names.index("Right +50%") + 1)
    assert panel.expand_settings.isChecked() and panel.expand_body.isVisible()
    assert panel.expand_spec() == ExpandSpec(right=48)
    assert panel.canvas_size() == (148, 60)
    assert "Mode: outpainting" in panel.mode_label.text()
    assert "100×60 → 148×60" in panel.path_label.text()
    thumb = panel.drop_zone.label.pixmap()
    assert abs(thumb.width() / thumb.height() - 148 / 60) < 0.05  # the grown canvas

    panel.expand_preset.activated.emit(names.index("Wide 16:9") + 1)
    spec = panel.expand_spec()
    assert spec is not None and (spec.top, spec.bottom) == (0, 0)
    assert abs((100 + spec.left + spec.right) / 60 - 16 / 9) < 0.1
    panel.expand_editors["top"].set_value(32)
    panel.expand_editors["fill"].set_value("mirror")
    request = request_from(panel)
    assert request.expand is not None and request.expand.top == 32
    assert request.expand.fill == "mirror"

    panel.expand_settings.setChecked(False)
    assert panel.values()["expand"] is None and "image-to-image" in panel.mode_label.text()


def test_set_values_restores_and_clears_the_outpainting(qtbot, panel, png):
    from desktop.engine.parts import ExpandSpec

    spec = ExpandSpec(left=16, bottom=24, fill="edge", feather=12)
    panel.set_values({"init_image": str(png), "expand": spec})
    assert panel.expand_spec() == spec
    panel.set_values({"expand": {"left": 16, "fill": "sideways"}})
    assert panel.expand_spec() is None
    panel.set_values({"expand": spec.__dict__})
    assert panel.expand_spec() == spec
    panel.set_values({"expand": None})
    assert not panel.expand_settings.isChecked()
