"""Drag and drop, paste and clear on the img2img panel (no engine needed)."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image
from PySide6.QtCore import QMimeData, QPoint, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent, QGuiApplication, QImage
from PySide6.QtTest import QTest

from desktop.engine import paths
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
