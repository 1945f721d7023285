"""The mask editor: strokes at the image's resolution, tools, operations, undo, loading."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PySide6.QtCore import QEvent, QPoint, QPointF, QRect, Qt
from PySide6.QtGui import QColor, QImage, QMouseEvent, QWheelEvent
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication

from desktop.ui.mask_editor import MaskEditor, array_to_qimage

IMAGE_W, IMAGE_H = 100, 50
GREEN = QColor(0, 200, 0)


def green_image(width: int = IMAGE_W, height: int = IMAGE_H) -> QImage:
    image = QImage(width, height, QImage.Format.Format_RGB32)
    image.fill(GREEN)
    return image


@pytest.fixture
def editor(qtbot) -> MaskEditor:
    widget = MaskEditor()
    qtbot.addWidget(widget)
    widget.set_image(green_image())
    widget.view.setFixedSize(200, 100)
    widget.show()
    qtbot.waitExposed(widget)
    return widget


def mouse(view, kind: QEvent.Type, pos: tuple[float, float], button=Qt.MouseButton.LeftButton):
    held = Qt.MouseButton.NoButton if kind == QEvent.Type.MouseButtonRelease else button
    if kind == QEvent.Type.MouseMove:
        button = Qt.MouseButton.NoButton
    point = QPointF(*pos)
    event = QMouseEvent(
        kind, point, view.mapToGlobal(point), button, held, Qt.KeyboardModifier.NoModifier
    )
    QApplication.sendEvent(view, event)


def stroke(view, points: list[tuple[float, float]], button=Qt.MouseButton.LeftButton) -> None:
    """Press at the first view point, move through the others, release at the last."""
    mouse(view, QEvent.Type.MouseButtonPress, points[0], button)
    for point in points[1:]:
        mouse(view, QEvent.Type.MouseMove, point, button)
    mouse(view, QEvent.Type.MouseButtonRelease, points[-1], button)


def fit(view_w: int, view_h: int) -> tuple[float, float, float]:
    """Scale and offset of a 100×50 image fitted (aspect kept, centred) in a view."""
    scale = min(view_w / IMAGE_W, view_h / IMAGE_H)
    return scale, (view_w - IMAGE_W * scale) / 2, (view_h - IMAGE_H * scale) / 2


def to_view(editor: MaskEditor, x: float, y: float) -> tuple[float, float]:
    scale, left, top = fit(editor.view.width(), editor.view.height())
    return left + x * scale, top + y * scale


def paint_image_points(editor: MaskEditor, points: list[tuple[float, float]], **kw) -> None:
    stroke(editor.view, [to_view(editor, x, y) for x, y in points], **kw)


def bounds(values: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(values > 127)
    return int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())


def test_a_stroke_lands_on_the_same_image_pixels_at_two_view_sizes(qtbot, editor):
    editor.set_antialiased(False)
    editor.set_brush_size(6)
    masks = []
    for size in ((200, 100), (300, 300)):
        editor.set_image(green_image())
        editor.view.setFixedSize(*size)
        assert (editor.view.width(), editor.view.height()) == size
        scale, left, top = fit(*size)
        # Image (20, 20) → (60, 20) in one move: the segment between the events is painted.
        start = (left + 20 * scale, top + 20 * scale)
        end = (left + 60 * scale, top + 20 * scale)
        with qtbot.waitSignal(editor.mask_changed):
            stroke(editor.view, [start, end])
        mask = editor.mask_image()
        assert mask.format() == QImage.Format.Format_Grayscale8
        assert (mask.width(), mask.height()) == (IMAGE_W, IMAGE_H)
        values = editor.mask_array()
        assert values is not None
        assert (values[20, 20:61] == 255).all()
        assert (values[18:23, 40] == 255).all()
        # A 6 px brush centred on y = 20: nothing from 3.5 px away.
        assert (values[:16, :] == 0).all() and (values[25:, :] == 0).all()
        assert (values[:, :16] == 0).all() and (values[:, 65:] == 0).all()
        left_x, top_y, right_x, bottom_y = bounds(values)
        assert 16 <= left_x <= 18 and 62 <= right_x <= 63
        assert 16 <= top_y <= 18 and 21 <= bottom_y <= 23
        masks.append(values)
    assert np.array_equal(masks[0], masks[1])


def test_a_stroke_off_the_image_paints_only_inside_it(qtbot, editor):
    editor.set_brush_size(10)
    # In a 300×300 view the 100×50 image is drawn from y = 75 to 225; start above it.
    editor.view.setFixedSize(300, 300)
    stroke(editor.view, [(150, 10), (150, 90)])
    values = editor.mask_array()
    assert values is not None
    # View y 90 is image y 5: the stroke covers the top rows of column 50 only.
    assert values[0:5, 50].min() == 255
    assert values[12:, :].max() == 0


def test_brush_size_with_keys_and_the_wheel(qtbot, editor):
    editor.set_brush_size(20)
    QTest.keyClick(editor.view, Qt.Key.Key_BracketRight)
    bigger = editor.brush_size()
    assert bigger > 20
    QTest.keyClick(editor.view, Qt.Key.Key_BracketLeft)
    QTest.keyClick(editor.view, Qt.Key.Key_BracketLeft)
    assert editor.brush_size() < 20
    assert editor.size_spin.value() == editor.brush_size()

    def wheel(delta: int, modifiers=Qt.KeyboardModifier.NoModifier) -> None:
        pos = QPointF(50, 50)
        event = QWheelEvent(
            pos,
            editor.view.mapToGlobal(pos),
            QPoint(0, 0),
            QPoint(0, delta),
            Qt.MouseButton.NoButton,
            modifiers,
            Qt.ScrollPhase.NoScrollPhase,
            False,
        )
        QApplication.sendEvent(editor.view, event)

    editor.set_brush_size(10)
    with qtbot.waitSignal(editor.brush_size_changed) as changed:
        wheel(120)
    assert changed.args[0] > 10
    size = editor.brush_size()
    wheel(-120)
    assert editor.brush_size() < size
    size = editor.brush_size()
    wheel(120, Qt.KeyboardModifier.ControlModifier)
    assert editor.brush_size() == size
    # A touchpad's small deltas add up to one step per notch.
    wheel(40)
    wheel(40)
    assert editor.brush_size() == size
    wheel(40)
    assert editor.brush_size() > size
    editor.set_brush_size(1)
    QTest.keyClick(editor.view, Qt.Key.Key_BracketLeft)
    assert editor.brush_size() == 1


def test_the_brush_outline_follows_the_mouse_at_the_brush_size(qtbot, editor):
    editor.set_brush_size(10)
    assert editor.cursor_rect().isEmpty()
    mouse(editor.view, QEvent.Type.MouseMove, (60, 40))
    outline = editor.cursor_rect()
    # 10 image px at 2 view px per image px.
    assert outline.width() == pytest.approx(20) and outline.center() == QPointF(60, 40)
    editor.view.grab()  # the outline paints without error
    QTest.keyClick(editor.view, Qt.Key.Key_BracketRight)
    assert editor.cursor_rect().width() == pytest.approx(editor.brush_size() * 2)


def test_eraser_and_right_button_erase(qtbot, editor):
    editor.set_brush_size(8)
    editor.fill()
    editor.set_tool("eraser")
    paint_image_points(editor, [(10, 25), (40, 25)])
    values = editor.mask_array()
    assert values is not None
    assert (values[25, 10:41] == 0).all()
    assert (values[5, :] == 255).all() and (values[45, :] == 255).all()

    editor.set_tool("brush")
    assert editor.brush_action.isChecked()
    paint_image_points(editor, [(70, 25), (90, 25)], button=Qt.MouseButton.RightButton)
    values = editor.mask_array()
    assert values is not None
    assert (values[25, 70:91] == 0).all()
    # Keys pick the tools too.
    QTest.keyClick(editor.view, Qt.Key.Key_E)
    assert editor.tool() == "eraser" and editor.eraser_action.isChecked()
    QTest.keyClick(editor.view, Qt.Key.Key_B)
    assert editor.tool() == "brush"


def test_one_stroke_is_one_undo_step_and_redo(qtbot, editor):
    editor.set_brush_size(6)
    changes: list[None] = []
    editor.mask_changed.connect(lambda: changes.append(None))
    # Many moves, one stroke.
    paint_image_points(editor, [(10, 10), (20, 10), (30, 10), (40, 10), (50, 10)])
    assert len(changes) == 1
    first = editor.mask_array()
    paint_image_points(editor, [(10, 40), (50, 40)])
    second = editor.mask_array()
    assert first is not None and second is not None
    assert second[40, 30] == 255 and first[40, 30] == 0

    QTest.keyClick(editor.view, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert np.array_equal(editor.mask_array(), first)
    QTest.keyClick(editor.view, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert not editor.has_mask() and not editor.can_undo()
    QTest.keyClick(
        editor.view,
        Qt.Key.Key_Z,
        Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier,
    )
    assert np.array_equal(editor.mask_array(), first)
    QTest.keyClick(editor.view, Qt.Key.Key_Y, Qt.KeyboardModifier.ControlModifier)
    assert np.array_equal(editor.mask_array(), second)
    assert not editor.can_redo()
    assert len(changes) == 6  # two strokes, two undos, two redos

    # A new stroke after an undo drops the redo history.
    editor.undo()
    paint_image_points(editor, [(80, 25)])
    assert not editor.can_redo() and not editor.redo_action.isEnabled()


def test_operations_are_undoable_steps(qtbot, editor):
    editor.fill()
    values = editor.mask_array()
    assert values is not None and (values == 255).all()
    editor.invert()
    assert not editor.has_mask()
    editor.invert()
    assert editor.has_mask()
    editor.clear()
    assert not editor.has_mask()
    editor.undo()
    assert (editor.mask_array() == 255).all()
    editor.undo()
    assert not editor.has_mask()
    editor.redo()
    assert (editor.mask_array() == 255).all()


def test_undo_history_is_bounded(qtbot, editor):
    for _ in range(60):
        editor.invert()
    undone = 0
    while editor.can_undo():
        editor.undo()
        undone += 1
    assert undone == 50


def single_pixel(x: int, y: int) -> QImage:
    values = np.zeros((IMAGE_H, IMAGE_W), np.uint8)
    values[y, x] = 255
    return array_to_qimage(values)


def test_grow_dilates_by_a_round_reach_and_negative_shrinks(qtbot, editor):
    editor.set_mask(single_pixel(50, 25))
    editor.grow(3)
    values = editor.mask_array()
    assert values is not None
    assert values[25, 53] == 255 and values[25, 54] == 0
    assert values[27, 52] == 255  # √8 ≈ 2.8 px away
    assert values[28, 53] == 0  # √18 ≈ 4.2 px away: a disk, not a square
    assert int((values == 255).sum()) == 29  # pixels within 3 px of a point

    block = np.zeros((IMAGE_H, IMAGE_W), np.uint8)
    block[10:40, 20:80] = 255
    editor.set_mask(array_to_qimage(block))
    editor.grow(-2)
    values = editor.mask_array()
    assert values is not None
    assert bounds(values) == (22, 12, 77, 37)
    editor.undo()
    assert np.array_equal(editor.mask_array(), block)

    # A mask along the image's edge is taken to go on past it: it shrinks from inside only.
    edge = np.zeros((IMAGE_H, IMAGE_W), np.uint8)
    edge[:, :30] = 255
    editor.set_mask(array_to_qimage(edge))
    editor.grow(-5)
    values = editor.mask_array()
    assert values is not None
    assert bounds(values) == (0, 0, 24, IMAGE_H - 1)
    editor.fill()
    editor.grow(-5)
    assert (editor.mask_array() == 255).all()


def test_feather_blurs_the_mask_into_soft_values(qtbot, editor):
    half = np.zeros((IMAGE_H, IMAGE_W), np.uint8)
    half[:, 50:] = 255
    editor.set_mask(array_to_qimage(half))
    editor.feather(4)
    values = editor.mask_array()
    assert values is not None
    row = values[25]
    assert 0 < row[48] < row[50] < row[52] < 255
    assert row[5] == 0 and row[95] == 255
    assert len(np.unique(values)) > 10


def test_mask_from_the_image_alpha(qtbot, editor):
    rgba = QImage(IMAGE_W, IMAGE_H, QImage.Format.Format_ARGB32)
    rgba.fill(QColor(0, 0, 255, 255))
    for y in range(10, 20):
        for x in range(30, 60):
            rgba.setPixelColor(x, y, QColor(0, 0, 0, 0))
    rgba.setPixelColor(5, 5, QColor(0, 0, 0, 128))
    editor.set_image(rgba)
    assert editor.mask_from_alpha()
    values = editor.mask_array()
    assert values is not None
    assert (values[10:20, 30:60] == 255).all()
    assert values[5, 5] == 127  # half transparent: half repainted
    assert values[30, 30] == 0 and int((values == 255).sum()) == 300

    editor.set_image(green_image())
    with qtbot.waitSignal(editor.message) as message:
        assert not editor.mask_from_alpha()
    assert "transparency" in message.args[0]
    assert not editor.has_mask()


def test_load_a_mask_of_another_size_scales_it_with_a_note(qtbot, editor, tmp_path: Path):
    small = Image.new("L", (50, 25), 0)
    small.paste(255, (0, 0, 25, 25))
    path = tmp_path / "half.png"
    small.save(path)
    with qtbot.waitSignal(editor.message) as message:
        assert editor.load_mask_file(path)
    assert "50×25" in message.args[0] and "scaled" in message.args[0]
    values = editor.mask_array()
    assert values is not None and values.shape == (IMAGE_H, IMAGE_W)
    assert (values[:, :45] == 255).all() and (values[:, 55:] == 0).all()


def test_load_a_mask_with_transparency_uses_its_inverted_alpha(qtbot, editor, tmp_path: Path):
    cutout = Image.new("RGBA", (IMAGE_W, IMAGE_H), (200, 10, 10, 255))
    cutout.paste((0, 0, 0, 0), (60, 0, 100, 50))
    path = tmp_path / "cutout.png"
    cutout.save(path)
    messages: list[str] = []
    editor.message.connect(messages.append)
    assert editor.load_mask_file(path)
    assert messages == []  # same size: nothing to say
    values = editor.mask_array()
    assert values is not None
    assert (values[:, 60:] == 255).all() and (values[:, :60] == 0).all()


@pytest.mark.parametrize("kind", ["text", "missing"])
def test_a_bad_mask_file_gives_a_message_and_keeps_the_mask(qtbot, editor, tmp_path, kind):
    editor.set_brush_size(6)
    paint_image_points(editor, [(20, 20), (40, 20)])
    before = editor.mask_array()
    path = tmp_path / "notes.txt"
    if kind == "text":
        path.write_text("not an image")
    with qtbot.waitSignal(editor.message) as message:
        assert not editor.load_mask_file(path)
    text = message.args[0]
    assert "notes.txt" in text and text.endswith(".")
    assert ("not an image" in text) if kind == "text" else ("does not exist" in text)
    assert np.array_equal(editor.mask_array(), before)
    editor.undo()
    assert not editor.has_mask()  # the failed load added no undo step


def view_pixel(editor: MaskEditor, x: int, y: int) -> QColor:
    return QColor(editor.view.grab().toImage().pixel(*to_view_int(editor, x, y)))


def to_view_int(editor: MaskEditor, x: int, y: int) -> tuple[int, int]:
    vx, vy = to_view(editor, x + 0.5, y + 0.5)
    return int(vx), int(vy)


def test_the_overlay_tints_the_mask_and_can_be_hidden(qtbot, editor):
    editor.set_brush_size(10)
    paint_image_points(editor, [(20, 25), (30, 25)])
    mouse(editor.view, QEvent.Type.MouseMove, (190, 90))  # the outline away from the samples
    tinted = view_pixel(editor, 25, 25)
    assert tinted.red() > 90 and tinted.green() < 170
    assert view_pixel(editor, 70, 25) == GREEN

    with qtbot.waitSignal(editor.overlay_toggled) as toggled:
        QTest.keyClick(editor.view, Qt.Key.Key_H)
    assert toggled.args == [False] and not editor.overlay_visible()
    assert not editor.overlay_action.isChecked()
    assert view_pixel(editor, 25, 25) == GREEN
    editor.overlay_action.trigger()
    assert editor.overlay_visible()
    assert view_pixel(editor, 25, 25) == tinted
    editor.set_overlay_visible(False)
    assert view_pixel(editor, 25, 25) == GREEN


def test_set_save_and_clear_the_image(qtbot, editor, tmp_path: Path):
    quarter = np.zeros((25, 50), np.uint8)
    quarter[:, :25] = 255
    with qtbot.waitSignal(editor.mask_changed):
        editor.set_mask(array_to_qimage(quarter))  # another size: scaled to the image
    values = editor.mask_array()
    assert values is not None and values.shape == (IMAGE_H, IMAGE_W)
    assert values[25, 10] == 255 and values[25, 90] == 0
    assert editor.mask_bounds(128) == QRect(0, 0, 50, 50)

    target = tmp_path / "mask.png"
    editor.save_mask(target)
    with Image.open(target) as saved:
        assert saved.size == (IMAGE_W, IMAGE_H) and saved.mode == "L"
        assert np.array_equal(np.asarray(saved), values)

    editor.set_mask(None)
    assert not editor.has_mask() and editor.mask_bounds() is None
    editor.set_image(None)
    assert not editor.has_image() and editor.mask_image().isNull()
    assert not editor.has_mask() and not editor.can_undo()
    stroke(editor.view, [(10, 10), (50, 50)])  # nothing to paint on: ignored
    assert editor.mask_array() is None
