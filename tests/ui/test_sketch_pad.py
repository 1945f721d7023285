"""The sketch pad: strokes at its own resolution however it is shown, tools, undo, saving."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PySide6.QtCore import QEvent, QPointF, QSize, Qt
from PySide6.QtGui import QImage, QMouseEvent
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication

from desktop.engine.errors import ImageError
from desktop.ui.sketch_pad import DEFAULT_PEN, ERASER, PEN, SketchPad, image_digest

PAGE_W, PAGE_H = 100, 50


@pytest.fixture
def pad(qtbot) -> SketchPad:
    widget = SketchPad((PAGE_W, PAGE_H))
    qtbot.addWidget(widget)
    widget.set_antialiased(False)
    widget.canvas.setFixedSize(200, 100)
    widget.show()
    qtbot.waitExposed(widget)
    return widget


def gray(image: QImage) -> np.ndarray:
    """A QImage's pixels as a (height, width) uint8 array (row padding dropped)."""
    g = image.convertToFormat(QImage.Format.Format_Grayscale8)
    data = np.frombuffer(g.constBits(), dtype=np.uint8, count=g.bytesPerLine() * g.height())
    return data.reshape(g.height(), g.bytesPerLine())[:, : g.width()].copy()


def mouse(view, kind: QEvent.Type, pos: tuple[float, float], button=Qt.MouseButton.LeftButton):
    held = Qt.MouseButton.NoButton if kind == QEvent.Type.MouseButtonRelease else button
    if kind == QEvent.Type.MouseMove:
        button = Qt.MouseButton.NoButton
    point = QPointF(*pos)
    event = QMouseEvent(
        kind, point, view.mapToGlobal(point), button, held, Qt.KeyboardModifier.NoModifier
    )
    QApplication.sendEvent(view, event)


def to_view(pad: SketchPad, x: float, y: float) -> tuple[float, float]:
    """Image coordinates as view coordinates, worked out independently of the pad: the page
    is fitted into the canvas with its aspect kept and centred."""
    width, height = pad.image_size()
    view_w, view_h = pad.canvas.width(), pad.canvas.height()
    scale = min(view_w / width, view_h / height)
    return (view_w - width * scale) / 2 + x * scale, (view_h - height * scale) / 2 + y * scale


def draw(pad: SketchPad, points: list[tuple[float, float]], button=Qt.MouseButton.LeftButton):
    """One stroke through ``points`` given in image pixels."""
    view = [to_view(pad, x, y) for x, y in points]
    mouse(pad.canvas, QEvent.Type.MouseButtonPress, view[0], button)
    for point in view[1:]:
        mouse(pad.canvas, QEvent.Type.MouseMove, point, button)
    mouse(pad.canvas, QEvent.Type.MouseButtonRelease, view[-1], button)


def dark(values: np.ndarray) -> tuple[int, int, int, int]:
    """The bounds (x0, y0, x1, y1) of the pixels darker than mid-grey."""
    ys, xs = np.nonzero(values < 128)
    return int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())


def test_a_new_pad_is_a_white_page_of_its_own_size(qtbot):
    default = SketchPad()
    qtbot.addWidget(default)
    assert default.image_size() == (512, 512)
    assert default.is_blank() and (gray(default.image()) == 255).all()
    assert default.tool() == PEN and default.pen_size() == DEFAULT_PEN
    sized = SketchPad(QSize(300, 200))
    qtbot.addWidget(sized)
    assert sized.image_size() == (300, 200) and sized.image().size() == QSize(300, 200)
    with pytest.raises(ValueError):
        sized.new_page(0, 10)


@pytest.mark.parametrize("view_size", [(200, 100), (400, 400), (57, 91)])
def test_a_stroke_lands_on_the_same_page_pixels_however_the_pad_is_scaled(qtbot, pad, view_size):
    pad.canvas.setFixedSize(*view_size)
    qtbot.wait_until(lambda: (pad.canvas.width(), pad.canvas.height()) == view_size)
    pad.set_pen_size(6)
    with qtbot.waitSignal(pad.changed):
        draw(pad, [(20, 25), (50, 25), (80, 25)])
    values = gray(pad.image())
    assert values.shape == (PAGE_H, PAGE_W)  # the page keeps its resolution
    x0, y0, x1, y1 = dark(values)
    # A 6 px round-capped line from x 20 to 80 on row 25: 3 px either side of the path.
    assert abs(x0 - 17) <= 1 and abs(x1 - 82) <= 1
    assert abs(y0 - 22) <= 1 and abs(y1 - 27) <= 1
    assert values[25, 50] == 0 and values[5, 50] == 255 and values[25, 5] == 255


def test_strokes_undo_and_redo_one_at_a_time_with_the_keys(qtbot, pad):
    draw(pad, [(10, 10), (40, 10)])
    after_first = gray(pad.image())
    draw(pad, [(10, 40), (90, 40)])
    after_second = gray(pad.image())
    assert after_second[40, 60] == 0 and after_first[40, 60] == 255
    assert pad.can_undo() and not pad.can_redo()

    pad.canvas.setFocus()
    with qtbot.waitSignal(pad.changed):
        QTest.keyClick(pad.canvas, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert (gray(pad.image()) == after_first).all()  # only the second stroke went
    with qtbot.waitSignal(pad.changed):
        QTest.keyClick(pad.canvas, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert pad.is_blank() and not pad.can_undo()
    shift_ctrl = Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier
    with qtbot.waitSignal(pad.changed):
        QTest.keyClick(pad.canvas, Qt.Key.Key_Z, shift_ctrl)
    assert (gray(pad.image()) == after_first).all()
    QTest.keyClick(pad.canvas, Qt.Key.Key_Z, shift_ctrl)
    assert (gray(pad.image()) == after_second).all() and not pad.can_redo()

    # A new stroke after an undo drops the redo history.
    pad.undo()
    draw(pad, [(70, 5), (70, 45)])
    assert not pad.can_redo()
    values = gray(pad.image())
    assert values[40, 85] == 255 and values[25, 70] == 0


def test_pen_size_keys_eraser_and_clear(qtbot, pad):
    pad.canvas.setFocus()
    start = pad.pen_size()
    with qtbot.waitSignal(pad.pen_size_changed) as bigger:
        QTest.keyClick(pad.canvas, Qt.Key.Key_BracketRight)
    assert bigger.args[0] > start and pad.size_spin.value() == pad.pen_size()
    QTest.keyClick(pad.canvas, Qt.Key.Key_BracketLeft)
    QTest.keyClick(pad.canvas, Qt.Key.Key_BracketLeft)
    assert pad.pen_size() < start
    for _ in range(30):
        QTest.keyClick(pad.canvas, Qt.Key.Key_BracketLeft)
    assert pad.pen_size() == 1  # never below one pixel

    pad.set_pen_size(10)
    draw(pad, [(10, 25), (90, 25)])
    assert gray(pad.image())[25, 50] == 0
    QTest.keyClick(pad.canvas, Qt.Key.Key_E)
    assert pad.tool() == ERASER and pad.eraser_action.isChecked()
    draw(pad, [(50, 10), (50, 40)])
    values = gray(pad.image())
    assert values[25, 50] == 255 and values[25, 30] == 0  # erased where the eraser went
    QTest.keyClick(pad.canvas, Qt.Key.Key_P)
    assert pad.tool() == PEN
    # The right button erases whatever the tool.
    draw(pad, [(30, 10), (30, 40)], button=Qt.MouseButton.RightButton)
    assert gray(pad.image())[25, 30] == 255 and pad.tool() == PEN

    assert not pad.is_blank()
    with qtbot.waitSignal(pad.changed):
        pad.clear_action.trigger()
    assert pad.is_blank()
    pad.undo()  # the clear is one undo step
    assert not pad.is_blank() and gray(pad.image())[25, 70] == 0


def test_the_drawing_saves_as_a_png_at_its_own_resolution(qtbot, pad, tmp_path):
    draw(pad, [(10, 10), (90, 40)])
    target = tmp_path / "sketch.png"
    pad.save_png(target)
    with Image.open(target) as saved:
        assert saved.format == "PNG" and saved.size == (PAGE_W, PAGE_H)
        assert (np.asarray(saved.convert("L")) == gray(pad.image())).all()
    # The digest names the pixels, whatever format the image is held in.
    assert image_digest(QImage(str(target))) == image_digest(pad.image())
    assert image_digest(pad.image().convertToFormat(QImage.Format.Format_ARGB32)) == (
        image_digest(pad.image())
    )


def test_go_on_drawing_on_an_existing_image(qtbot, pad, tmp_path):
    image = QImage(40, 30, QImage.Format.Format_ARGB32)
    image.fill(Qt.GlobalColor.transparent)  # transparency becomes paper
    pad.set_image(image)
    assert pad.image_size() == (40, 30) and pad.is_blank() and not pad.can_undo()
    draw(pad, [(5, 15), (35, 15)])
    assert gray(pad.image())[15, 20] == 0


def test_the_pad_claims_undo_before_a_window_shortcut(qtbot, pad):
    from PySide6.QtGui import QKeyEvent

    event = QKeyEvent(
        QEvent.Type.ShortcutOverride, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier
    )
    QApplication.sendEvent(pad.canvas, event)
    assert event.isAccepted()
    other = QKeyEvent(
        QEvent.Type.ShortcutOverride, Qt.Key.Key_S, Qt.KeyboardModifier.ControlModifier
    )
    other.ignore()
    QApplication.sendEvent(pad.canvas, other)
    assert not other.isAccepted()


def test_saving_is_refused_into_a_folder_that_does_not_exist(pad, tmp_path: Path):
    with pytest.raises(ImageError) as caught:
        pad.save_png(tmp_path / "nope" / "x.png")
    assert "x.png" in str(caught.value)
