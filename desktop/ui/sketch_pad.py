"""A sketch pad for control images: black strokes on a white page, undo per stroke.

The drawing lives at its own resolution (512×512 unless told otherwise) as a ``QImage``,
whatever the size of the view: mouse positions are mapped from the view's coordinates to the
image's before anything is painted, as the mask editor does. A stroke (press to release) is
one undo step that keeps only the pixels of the rectangle it touched; "Clear" is one step too.

What it makes is what the ``scribble`` preprocessor reads as a drawing (dark strokes on a
light page), so a sketch can be a control layer's image as it is (``SketchDialog``).
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PySide6.QtCore import QByteArray, QEvent, QPointF, QRect, QRectF, QSize, Qt, Signal
from PySide6.QtGui import (
    QAction,
    QActionGroup,
    QColor,
    QImage,
    QImageWriter,
    QKeyEvent,
    QMouseEvent,
    QPainter,
    QPaintEvent,
    QPen,
)
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QSizePolicy,
    QSpinBox,
    QToolBar,
    QVBoxLayout,
    QWidget,
)

from desktop.engine.errors import ImageError

#: The page's size when none is given.
DEFAULT_SIZE = (512, 512)
#: Pen diameters in image pixels.
MIN_PEN, MAX_PEN, DEFAULT_PEN = 1, 256, 6
#: Undo steps kept.
UNDO_LIMIT = 50
INK = QColor(0, 0, 0)
PAPER = QColor(255, 255, 255)

PEN, ERASER = "pen", "eraser"


def image_digest(image: QImage) -> str:
    """A sha256 of an image's RGB pixels and size (row padding and alpha left out): equal
    drawings give equal digests, whatever format the ``QImage`` holds them in."""
    rgb = image.convertToFormat(QImage.Format.Format_RGB888)
    width, height, stride = rgb.width(), rgb.height(), rgb.bytesPerLine()
    data = np.frombuffer(rgb.constBits(), dtype=np.uint8, count=stride * height)
    pixels = data.reshape(height, stride)[:, : width * 3]
    return hashlib.sha256(f"{width}x{height}:".encode() + pixels.tobytes()).hexdigest()


@dataclass
class _Step:
    """One undo step: the pixels of ``rect`` as they were on the other side of the change."""

    rect: QRect
    pixels: QImage


class SketchCanvas(QWidget):
    """The drawing surface: the page fitted to the widget (aspect kept, centred).

    Input and painting go to the ``SketchPad`` that owns it; keys it does not use go on to
    the parent widgets.
    """

    def __init__(self, pad: SketchPad) -> None:
        super().__init__(pad)
        self.setObjectName("SketchCanvas")
        self._pad = pad
        self.setMouseTracking(True)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setMinimumSize(160, 160)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setCursor(Qt.CursorShape.CrossCursor)
        self.setToolTip(
            "Draw with the left button; the right button erases. [ and ] change the pen "
            "size, P and E pick the pen or the eraser, Ctrl+Z undoes, Ctrl+Shift+Z redoes."
        )

    def sizeHint(self) -> QSize:
        return QSize(512, 512)

    def event(self, event: QEvent) -> bool:
        # Claim the pad's keys before a window-wide shortcut (Undo, ...) takes them.
        if (
            event.type() == QEvent.Type.ShortcutOverride
            and isinstance(event, QKeyEvent)
            and self._pad._key_action(event) is not None
        ):
            event.accept()
            return True
        return super().event(event)

    def paintEvent(self, event: QPaintEvent) -> None:
        painter = QPainter(self)
        self._pad._paint_view(painter, event.rect())
        painter.end()

    def mousePressEvent(self, event: QMouseEvent) -> None:
        self.setFocus(Qt.FocusReason.MouseFocusReason)
        if not self._pad._press(event.position(), event.button()):
            super().mousePressEvent(event)

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        self._pad._move(event.position())

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        if not self._pad._release(event.position(), event.button()):
            super().mouseReleaseEvent(event)

    def leaveEvent(self, event: QEvent) -> None:
        self._pad._hover(None)
        super().leaveEvent(event)

    def keyPressEvent(self, event: QKeyEvent) -> None:
        action = self._pad._key_action(event)
        if action is None:
            event.ignore()
            return
        action()
        event.accept()


class SketchPad(QWidget):
    """Draw black strokes on a white page; ``image()`` / ``save_png()`` give the drawing.

    Signals:
        changed(): after every stroke, clear, undo, redo and new page (not per mouse move).
        pen_size_changed(int): the pen diameter in image pixels.
    """

    changed = Signal()
    pen_size_changed = Signal(int)

    def __init__(
        self, size: QSize | tuple[int, int] = DEFAULT_SIZE, parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self.setObjectName("SketchPad")
        self._image = QImage()
        self._pen_size = DEFAULT_PEN
        self._tool = PEN
        self._antialiased = True
        self._undo: deque[_Step] = deque(maxlen=UNDO_LIMIT)
        self._redo: deque[_Step] = deque(maxlen=UNDO_LIMIT)
        # The stroke under way: the page before it, what it touched, its tool, last point.
        self._stroke_before: QImage | None = None
        self._stroke_rect = QRect()
        self._stroke_tool = PEN
        self._stroke_button = Qt.MouseButton.NoButton
        self._last_point: QPointF | None = None
        self._hover_pos: QPointF | None = None

        self.canvas = SketchCanvas(self)
        self._build_toolbar()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addWidget(self.toolbar)
        layout.addWidget(self.canvas, 1)
        width, height = (size.width(), size.height()) if isinstance(size, QSize) else size
        self.new_page(width, height)

    def _build_toolbar(self) -> None:
        def action(
            text: str, tip: str, slot: Callable[..., object], checkable: bool = False
        ) -> QAction:
            act = QAction(text, self)
            act.setToolTip(tip)
            act.setCheckable(checkable)
            (act.toggled if checkable else act.triggered).connect(slot)
            return act

        self.toolbar = QToolBar("Sketch tools", self)
        self.toolbar.setObjectName("SketchTools")
        self.toolbar.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
        self.toolbar.setMovable(False)
        self.toolbar.setFloatable(False)
        self.pen_action = action("Pen", "Draw black strokes (P)", self._tool_toggled, True)
        self.eraser_action = action(
            "Eraser", "Paint white (E; or draw with the right button)", self._tool_toggled, True
        )
        group = QActionGroup(self)
        group.setExclusive(True)
        group.addAction(self.pen_action)
        group.addAction(self.eraser_action)
        self.pen_action.setChecked(True)

        self.size_spin = QSpinBox(self)
        self.size_spin.setObjectName("SketchPenSize")
        self.size_spin.setRange(MIN_PEN, MAX_PEN)
        self.size_spin.setSuffix(" px")
        self.size_spin.setValue(self._pen_size)
        self.size_spin.setToolTip("Pen size in drawing pixels ([ and ])")
        self.size_spin.valueChanged.connect(self.set_pen_size)

        self.undo_action = action("Undo", "Undo the last stroke (Ctrl+Z)", self.undo)
        self.redo_action = action("Redo", "Redo (Ctrl+Shift+Z or Ctrl+Y)", self.redo)
        self.clear_action = action("Clear", "Start again on a white page", self.clear)
        self.toolbar.addAction(self.pen_action)
        self.toolbar.addAction(self.eraser_action)
        self.toolbar.addWidget(self.size_spin)
        for act in (self.undo_action, self.redo_action, self.clear_action):
            self.toolbar.addAction(act)

    def _tool_toggled(self, on: bool) -> None:
        if on:
            self.set_tool(PEN if self.pen_action.isChecked() else ERASER)

    # -- the page --------------------------------------------------------------------------
    def new_page(self, width: int, height: int) -> None:
        """Start again on a white page of ``width`` × ``height``; clears the undo history."""
        if width < 1 or height < 1:
            raise ValueError(f"a sketch needs a positive size, not {width}×{height}")
        self._end_stroke_silently()
        self._image = QImage(int(width), int(height), QImage.Format.Format_RGB32)
        self._image.fill(PAPER)
        self._reset_history()

    def set_image(self, image: QImage) -> None:
        """Go on drawing on ``image`` (transparency becomes white); clears the undo history."""
        if image.isNull():
            raise ValueError("a sketch cannot start from a null image")
        self._end_stroke_silently()
        page = QImage(image.size(), QImage.Format.Format_RGB32)
        page.fill(PAPER)
        painter = QPainter(page)
        painter.drawImage(0, 0, image)
        painter.end()
        self._image = page
        self._reset_history()

    def _reset_history(self) -> None:
        self._undo.clear()
        self._redo.clear()
        self._update_actions()
        self.canvas.update()
        self.changed.emit()

    def image(self) -> QImage:
        """The drawing at its own resolution (a ``Format_RGB32`` copy)."""
        return self._image.copy()

    def image_size(self) -> tuple[int, int]:
        return self._image.width(), self._image.height()

    def is_blank(self) -> bool:
        """Whether the page is all white (nothing drawn, or everything erased)."""
        gray = self._image.convertToFormat(QImage.Format.Format_Grayscale8)
        width, height, stride = gray.width(), gray.height(), gray.bytesPerLine()
        data = np.frombuffer(gray.constBits(), dtype=np.uint8, count=stride * height)
        return bool((data.reshape(height, stride)[:, :width] == 255).all())

    def save_png(self, path: str | Path) -> None:
        """Write the drawing as a PNG at its own resolution.

        Raises:
            ImageError: the file cannot be written.
        """
        writer = QImageWriter(str(path), QByteArray(b"PNG"))
        if not writer.write(self._image):
            raise ImageError(
                f"The drawing could not be written to {Path(path).name} ({writer.errorString()})."
            )

    def clear(self) -> None:
        """Make the page white again, as one undo step."""
        self._end_stroke_silently()
        if self.is_blank():
            return
        self._undo.append(_Step(self._image.rect(), self._image.copy()))
        self._redo.clear()
        self._image.fill(PAPER)
        self.canvas.update()
        self._changed()

    # -- tools -----------------------------------------------------------------------------
    def tool(self) -> str:
        return self._tool

    def set_tool(self, tool: str) -> None:
        """``"pen"`` (black) or ``"eraser"`` (white)."""
        if tool not in (PEN, ERASER):
            raise ValueError(f"unknown sketch tool {tool!r}")
        self._tool = tool
        (self.pen_action if tool == PEN else self.eraser_action).setChecked(True)

    def pen_size(self) -> int:
        """The pen diameter in image pixels."""
        return self._pen_size

    def set_pen_size(self, size: int) -> None:
        size = max(MIN_PEN, min(MAX_PEN, int(size)))
        if size == self._pen_size:
            return
        old = self.cursor_rect()
        self._pen_size = size
        self.size_spin.setValue(size)
        self._update_cursor(old)
        self.pen_size_changed.emit(size)

    def step_pen_size(self, direction: int) -> None:
        """One step bigger (``direction`` > 0) or smaller: about 15 %, at least 1 px."""
        step = max(1, round(self._pen_size * 0.15))
        self.set_pen_size(self._pen_size + (step if direction > 0 else -step))

    def antialiased(self) -> bool:
        return self._antialiased

    def set_antialiased(self, on: bool) -> None:
        """Soft (antialiased) stroke edges, or hard ones."""
        self._antialiased = bool(on)

    # -- undo ------------------------------------------------------------------------------
    def can_undo(self) -> bool:
        return bool(self._undo)

    def can_redo(self) -> bool:
        return bool(self._redo)

    def undo(self) -> None:
        if self._stroke_before is None and self._undo:
            self._redo.append(self._swap(self._undo.pop()))
            self._changed()

    def redo(self) -> None:
        if self._stroke_before is None and self._redo:
            self._undo.append(self._swap(self._redo.pop()))
            self._changed()

    def _swap(self, step: _Step) -> _Step:
        """Put ``step``'s pixels back; return the step that goes the other way."""
        current = self._image.copy(step.rect)
        painter = QPainter(self._image)
        painter.setCompositionMode(QPainter.CompositionMode.CompositionMode_Source)
        painter.drawImage(step.rect.topLeft(), step.pixels)
        painter.end()
        self._update_image_rect(step.rect)
        return _Step(step.rect, current)

    def _changed(self) -> None:
        self._update_actions()
        self.changed.emit()

    def _update_actions(self) -> None:
        self.undo_action.setEnabled(bool(self._undo))
        self.redo_action.setEnabled(bool(self._redo))

    # -- geometry --------------------------------------------------------------------------
    def view_scale(self) -> float:
        """View pixels per image pixel."""
        return min(
            self.canvas.width() / self._image.width(), self.canvas.height() / self._image.height()
        )

    def image_rect(self) -> QRectF:
        """Where the page is drawn in the view: fitted, aspect kept, centred."""
        scale = self.view_scale()
        shown_w, shown_h = self._image.width() * scale, self._image.height() * scale
        return QRectF(
            (self.canvas.width() - shown_w) / 2,
            (self.canvas.height() - shown_h) / 2,
            shown_w,
            shown_h,
        )

    def view_to_image(self, point: QPointF) -> QPointF:
        """A point of the view in image coordinates (pixel (x, y) covers [x, x+1))."""
        rect = self.image_rect()
        scale = self.view_scale() or 1.0
        return QPointF((point.x() - rect.x()) / scale, (point.y() - rect.y()) / scale)

    def image_to_view(self, rect: QRectF) -> QRectF:
        """A rectangle of the image in view coordinates."""
        origin, scale = self.image_rect().topLeft(), self.view_scale()
        return QRectF(
            origin.x() + rect.x() * scale,
            origin.y() + rect.y() * scale,
            rect.width() * scale,
            rect.height() * scale,
        )

    def cursor_rect(self) -> QRectF:
        """The pen outline's bounds in the view (empty when the mouse is not over it)."""
        if self._hover_pos is None:
            return QRectF()
        radius = self._pen_size * self.view_scale() / 2
        return QRectF(
            self._hover_pos.x() - radius, self._hover_pos.y() - radius, 2 * radius, 2 * radius
        )

    # -- drawing ---------------------------------------------------------------------------
    def _press(self, pos: QPointF, button: Qt.MouseButton) -> bool:
        if self._stroke_before is not None:
            return False
        if button == Qt.MouseButton.LeftButton:
            self._stroke_tool = self._tool
        elif button == Qt.MouseButton.RightButton:
            self._stroke_tool = ERASER
        else:
            return False
        self._stroke_before = self._image.copy()
        self._stroke_button = button
        self._stroke_rect = QRect()
        point = self.view_to_image(pos)
        self._last_point = point
        self._paint_segment(point, point)
        self._hover(pos)
        return True

    def _move(self, pos: QPointF) -> None:
        self._hover(pos)
        if self._stroke_before is None or self._last_point is None:
            return
        point = self.view_to_image(pos)
        self._paint_segment(self._last_point, point)
        self._last_point = point

    def _release(self, pos: QPointF, button: Qt.MouseButton) -> bool:
        if self._stroke_before is None or button != self._stroke_button:
            return False
        self._move(pos)
        self._finish_stroke()
        self._changed()
        return True

    def _finish_stroke(self) -> None:
        before = self._stroke_before
        self._stroke_before = None
        self._last_point = None
        if before is None:
            return
        rect = self._stroke_rect.intersected(before.rect())
        if not rect.isEmpty():
            self._undo.append(_Step(rect, before.copy(rect)))
            self._redo.clear()

    def _end_stroke_silently(self) -> None:
        """Finish a stroke under way (a new page or a clear arrived mid-stroke)."""
        if self._stroke_before is not None:
            self._finish_stroke()

    def _paint_segment(self, start: QPointF, end: QPointF) -> None:
        """A round-capped line of the pen's width from ``start`` to ``end`` (image px)."""
        pen = QPen(INK if self._stroke_tool == PEN else PAPER)
        pen.setWidthF(float(self._pen_size))
        pen.setCapStyle(Qt.PenCapStyle.RoundCap)
        pen.setJoinStyle(Qt.PenJoinStyle.RoundJoin)
        painter = QPainter(self._image)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, self._antialiased)
        painter.setPen(pen)
        if start == end:
            painter.drawPoint(start)
        else:
            painter.drawLine(start, end)
        painter.end()
        half = self._pen_size / 2 + 2
        touched = (
            QRectF(start, end)
            .normalized()
            .adjusted(-half, -half, half, half)
            .toAlignedRect()
            .intersected(self._image.rect())
        )
        if touched.isEmpty():
            return
        self._stroke_rect = self._stroke_rect.united(touched)
        self._update_image_rect(touched)

    def _update_image_rect(self, rect: QRect) -> None:
        self.canvas.update(self.image_to_view(QRectF(rect)).toAlignedRect().adjusted(-2, -2, 2, 2))

    def _hover(self, pos: QPointF | None) -> None:
        old = self.cursor_rect()
        self._hover_pos = pos
        self._update_cursor(old)

    def _update_cursor(self, old: QRectF) -> None:
        for rect in (old, self.cursor_rect()):
            if not rect.isEmpty():
                self.canvas.update(rect.toAlignedRect().adjusted(-3, -3, 3, 3))

    def _paint_view(self, painter: QPainter, clip: QRect) -> None:
        painter.fillRect(clip, self.palette().window())
        target = self.image_rect()
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, self.view_scale() < 1)
        painter.drawImage(target, self._image)
        outline = self.cursor_rect()
        if not outline.isEmpty():
            painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
            painter.setBrush(Qt.BrushStyle.NoBrush)
            painter.setPen(QPen(QColor(255, 255, 255, 200), 3))
            painter.drawEllipse(outline)
            painter.setPen(QPen(QColor(0, 0, 0, 230), 1))
            painter.drawEllipse(outline)

    # -- keys ------------------------------------------------------------------------------
    def _key_action(self, event: QKeyEvent) -> Callable[[], object] | None:
        """What a key press does on the canvas, or None when it is not the pad's key."""
        key = event.key()
        mods = event.modifiers() & ~Qt.KeyboardModifier.KeypadModifier
        ctrl = Qt.KeyboardModifier.ControlModifier
        shift = Qt.KeyboardModifier.ShiftModifier
        if mods == ctrl and key == Qt.Key.Key_Z:
            return self.undo
        if (mods == ctrl | shift and key == Qt.Key.Key_Z) or (mods == ctrl and key == Qt.Key.Key_Y):
            return self.redo
        if mods != Qt.KeyboardModifier.NoModifier:
            return None
        plain: dict[int, Callable[[], object]] = {
            int(Qt.Key.Key_BracketLeft): lambda: self.step_pen_size(-1),
            int(Qt.Key.Key_BracketRight): lambda: self.step_pen_size(1),
            int(Qt.Key.Key_P): lambda: self.set_tool(PEN),
            int(Qt.Key.Key_B): lambda: self.set_tool(PEN),
            int(Qt.Key.Key_E): lambda: self.set_tool(ERASER),
        }
        return plain.get(int(key))


class SketchDialog(QDialog):
    """A ``SketchPad`` in a dialog: "Use drawing" accepts it, "Cancel" drops it."""

    def __init__(
        self,
        size: QSize | tuple[int, int] = DEFAULT_SIZE,
        image: QImage | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setObjectName("SketchDialog")
        self.setWindowTitle("Draw a control image")
        self.pad = SketchPad(size, self)
        if image is not None and not image.isNull():
            self.pad.set_image(image)
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        ok = buttons.button(QDialogButtonBox.StandardButton.Ok)
        ok.setText("Use drawing")
        ok.setDefault(False)  # Enter on the canvas must not close the dialog mid-drawing
        ok.setAutoDefault(False)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(self.pad, 1)
        layout.addWidget(buttons)
        self.resize(620, 680)
        self.pad.canvas.setFocus(Qt.FocusReason.OtherFocusReason)

    def image(self) -> QImage:
        """The drawing (at the pad's resolution)."""
        return self.pad.image()
