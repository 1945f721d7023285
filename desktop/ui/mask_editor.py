"""A mask painter for inpainting: brush and eraser strokes over the init image.

The mask lives at the image's own resolution as a ``Format_Grayscale8`` ``QImage`` (0 keeps,
255 repaints, values between feather), whatever the size of the view: mouse positions are
mapped from the view's coordinates to the image's before anything is painted. Strokes are
painted straight onto that image with ``QPainter`` (round-capped line segments between mouse
moves), and only the touched part of the tinted overlay and of the view is redrawn, so
painting stays fast on large images. Whole-mask operations (invert, grow, feather, ...) go
through numpy once per operation, never per mouse move.

Every stroke (press to release) and every operation is one undo step; the steps keep only
the pixels of the rectangle they changed.
"""

from __future__ import annotations

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
    QKeySequence,
    QMouseEvent,
    QPainter,
    QPaintEvent,
    QPen,
    QPixmap,
    QResizeEvent,
    QWheelEvent,
)
from PySide6.QtWidgets import QSizePolicy, QSpinBox, QToolBar, QVBoxLayout, QWidget

from desktop.engine.errors import ImageError

#: Tint and opacity of the painted area over the image.
OVERLAY_COLOR = QColor(255, 48, 48)
OVERLAY_OPACITY = 0.45
#: Brush diameters in image pixels.
MIN_BRUSH, MAX_BRUSH, DEFAULT_BRUSH = 1, 1000, 32
#: Undo steps kept.
UNDO_LIMIT = 50
#: What the toolbar's grow / shrink / feather buttons apply, in image pixels.
GROW_STEP = 4
FEATHER_STEP = 4
#: Mask values at or above this count as painted for ``grow`` (the middle of a soft edge).
GROW_THRESHOLD = 128

BRUSH, ERASER = "brush", "eraser"


def qimage_to_array(image: QImage) -> np.ndarray:
    """The pixels of a ``Format_Grayscale8`` image as a (height, width) uint8 array (a copy;
    row padding dropped)."""
    gray = image.convertToFormat(QImage.Format.Format_Grayscale8)
    width, height, stride = gray.width(), gray.height(), gray.bytesPerLine()
    data = np.frombuffer(gray.constBits(), dtype=np.uint8, count=stride * height)
    return data.reshape(height, stride)[:, :width].copy()


def array_to_qimage(values: np.ndarray) -> QImage:
    """A (height, width) uint8 array as a ``Format_Grayscale8`` image that owns its pixels."""
    values = np.ascontiguousarray(values, dtype=np.uint8)
    height, width = values.shape
    return QImage(values.data, width, height, width, QImage.Format.Format_Grayscale8).copy()


@dataclass
class _Step:
    """One undo step: the pixels of ``rect`` as they were on the other side of the change."""

    rect: QRect
    pixels: QImage


class MaskView(QWidget):
    """The painting surface: the image fitted to the widget, the mask tinted over it.

    Input and painting are forwarded to the ``MaskEditor`` that owns it; keys it does not use
    (Ctrl+V, ...) go on to the parent widgets.
    """

    def __init__(self, editor: MaskEditor) -> None:
        super().__init__(editor)
        self.setObjectName("MaskView")
        self._editor = editor
        self._wheel = 0
        self.setMouseTracking(True)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setMinimumSize(120, 90)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setCursor(Qt.CursorShape.CrossCursor)
        self.setToolTip(
            "Paint the part to repaint. The left button uses the brush or the eraser, the "
            "right button erases; "
            "[ and ] or the wheel change the brush size; H hides the overlay; "
            "Ctrl+Z undoes, Ctrl+Shift+Z redoes."
        )

    def sizeHint(self) -> QSize:
        return QSize(240, 200)

    def event(self, event: QEvent) -> bool:
        # Claim the editor's keys before a window-wide shortcut takes them.
        if (
            event.type() == QEvent.Type.ShortcutOverride
            and isinstance(event, QKeyEvent)
            and self._editor._key_action(event) is not None
        ):
            event.accept()
            return True
        return super().event(event)

    def paintEvent(self, event: QPaintEvent) -> None:
        painter = QPainter(self)
        self._editor._paint_view(painter, event.rect())
        painter.end()

    def mousePressEvent(self, event: QMouseEvent) -> None:
        self.setFocus(Qt.FocusReason.MouseFocusReason)
        if not self._editor._press(event.position(), event.button()):
            super().mousePressEvent(event)

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        self._editor._move(event.position())

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        if not self._editor._release(event.position(), event.button()):
            super().mouseReleaseEvent(event)

    def leaveEvent(self, event: QEvent) -> None:
        self._editor._hover(None)
        super().leaveEvent(event)

    def wheelEvent(self, event: QWheelEvent) -> None:
        if event.modifiers() != Qt.KeyboardModifier.NoModifier or not self._editor.has_image():
            event.ignore()
            return
        # Fine-grained wheels (touchpads) send small deltas: one step per notch's worth.
        self._wheel += event.angleDelta().y()
        while abs(self._wheel) >= 120:
            self._editor.step_brush_size(1 if self._wheel > 0 else -1)
            self._wheel -= 120 if self._wheel > 0 else -120
        event.accept()

    def keyPressEvent(self, event: QKeyEvent) -> None:
        action = self._editor._key_action(event)
        if action is None:
            event.ignore()
            return
        action()
        event.accept()

    def resizeEvent(self, event: QResizeEvent) -> None:
        self._editor._hover(None)
        super().resizeEvent(event)


class MaskEditor(QWidget):
    """Paints an inpainting mask over an image (white repaints, black keeps).

    Signals:
        mask_changed(): after every stroke, operation, undo and redo (not per mouse move).
        message(str): something the user should know: a load problem, a scaled mask, ...
        brush_size_changed(int): the brush diameter in image pixels.
        overlay_toggled(bool): the tinted overlay was shown or hidden.
    """

    mask_changed = Signal()
    message = Signal(str)
    brush_size_changed = Signal(int)
    overlay_toggled = Signal(bool)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("MaskEditor")
        self._image: QImage | None = None
        self._mask: QImage | None = None
        self._overlay: QImage | None = None
        self._brush_size = DEFAULT_BRUSH
        self._tool = BRUSH
        self._antialiased = True
        self._overlay_visible = True
        self._undo: deque[_Step] = deque(maxlen=UNDO_LIMIT)
        self._redo: deque[_Step] = deque(maxlen=UNDO_LIMIT)
        # The stroke under way: the mask before it, what it touched, its tool, last point.
        self._stroke_before: QImage | None = None
        self._stroke_rect = QRect()
        self._stroke_tool = BRUSH
        self._stroke_button = Qt.MouseButton.NoButton
        self._last_point: QPointF | None = None
        self._hover_pos: QPointF | None = None

        self.view = MaskView(self)
        self._build_toolbars()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addWidget(self.tools_bar)
        layout.addWidget(self.ops_bar)
        layout.addWidget(self.view, 1)
        self._update_actions()

    def _build_toolbars(self) -> None:
        def action(
            text: str, tip: str, slot: Callable[..., object], checkable: bool = False
        ) -> QAction:
            act = QAction(text, self)
            act.setToolTip(tip)
            act.setCheckable(checkable)
            (act.toggled if checkable else act.triggered).connect(slot)
            return act

        self.tools_bar = QToolBar("Mask tools", self)
        self.tools_bar.setObjectName("MaskTools")
        self.ops_bar = QToolBar("Mask operations", self)
        self.ops_bar.setObjectName("MaskOperations")
        for bar in (self.tools_bar, self.ops_bar):
            bar.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
            bar.setMovable(False)
            bar.setFloatable(False)

        self.brush_action = action(
            "Brush", "Paint the part to repaint (B)", self._tool_toggled, checkable=True
        )
        self.eraser_action = action(
            "Eraser",
            "Erase the mask (E; or drag with the right button)",
            self._tool_toggled,
            checkable=True,
        )
        group = QActionGroup(self)
        group.setExclusive(True)
        group.addAction(self.brush_action)
        group.addAction(self.eraser_action)
        self.brush_action.setChecked(True)

        self.size_spin = QSpinBox(self)
        self.size_spin.setObjectName("MaskBrushSize")
        self.size_spin.setRange(MIN_BRUSH, MAX_BRUSH)
        self.size_spin.setSuffix(" px")
        self.size_spin.setValue(self._brush_size)
        self.size_spin.setToolTip("Brush size in image pixels ([ and ] or the mouse wheel)")
        self.size_spin.valueChanged.connect(self.set_brush_size)

        self.undo_action = action("Undo", "Undo the last stroke or operation (Ctrl+Z)", self.undo)
        self.redo_action = action("Redo", "Redo (Ctrl+Shift+Z or Ctrl+Y)", self.redo)
        self.overlay_action = action(
            "Show", "Show the mask over the image (H)", self.set_overlay_visible, True
        )
        self.overlay_action.setChecked(True)
        # The most used first: a narrow dock moves the last ones into the "»" menu.
        for act in (
            self.brush_action,
            self.eraser_action,
            self.undo_action,
            self.redo_action,
            self.overlay_action,
        ):
            self.tools_bar.addAction(act)
        self.ops_bar.addWidget(self.size_spin)

        self.invert_action = action(
            "Invert", "Swap what is repainted and what is kept", self.invert
        )
        self.fill_action = action("Fill", "Repaint the whole image", self.fill)
        self.clear_action = action("Clear", "Remove the mask", self.clear)
        self.grow_action = action(
            "Grow", f"Grow the mask by {GROW_STEP} px", lambda: self.grow(GROW_STEP)
        )
        self.shrink_action = action(
            "Shrink", f"Shrink the mask by {GROW_STEP} px", lambda: self.grow(-GROW_STEP)
        )
        self.feather_action = action(
            "Feather",
            f"Soften the mask's edge by {FEATHER_STEP} px",
            lambda: self.feather(FEATHER_STEP),
        )
        for act in (
            self.invert_action,
            self.fill_action,
            self.clear_action,
            self.grow_action,
            self.shrink_action,
            self.feather_action,
        ):
            self.ops_bar.addAction(act)

    def sizeHint(self) -> QSize:
        # The toolbars' full width would widen the dock; they fold into "»" instead.
        return QSize(240, 280)

    def _tool_toggled(self, on: bool) -> None:
        if on:
            self.set_tool(BRUSH if self.brush_action.isChecked() else ERASER)

    # -- image and mask --------------------------------------------------------------------
    def set_image(self, image: QImage | None) -> None:
        """Show ``image`` with an empty mask of its size (None: nothing); clears the undo
        history."""
        self._end_stroke_silently()
        if image is None or image.isNull():
            self._image = self._mask = self._overlay = None
        else:
            # A format QPainter draws fast; the alpha stays for mask_from_alpha.
            self._image = image.convertToFormat(
                QImage.Format.Format_ARGB32_Premultiplied
                if image.hasAlphaChannel()
                else QImage.Format.Format_RGB32
            )
            self._mask = QImage(image.size(), QImage.Format.Format_Grayscale8)
            self._mask.fill(QColor(0, 0, 0))
            self._overlay = QImage(image.size(), QImage.Format.Format_ARGB32_Premultiplied)
            self._overlay.fill(Qt.GlobalColor.transparent)
        self._undo.clear()
        self._redo.clear()
        self._update_actions()
        self.view.update()

    def image(self) -> QImage | None:
        """The image painted on (a copy), or None."""
        return self._image.copy() if self._image is not None else None

    def has_image(self) -> bool:
        return self._image is not None

    def image_size(self) -> tuple[int, int] | None:
        return (self._image.width(), self._image.height()) if self._image is not None else None

    def has_mask(self) -> bool:
        """Whether any mask pixel is above 0."""
        if self._mask is None:
            return False
        return bool(qimage_to_array(self._mask).any())

    def mask_image(self) -> QImage:
        """The mask as a ``Format_Grayscale8`` copy at the image's size (a null image when no
        image is set)."""
        return self._mask.copy() if self._mask is not None else QImage()

    def mask_array(self) -> np.ndarray | None:
        """The mask as a (height, width) uint8 array (a copy), or None without an image."""
        return qimage_to_array(self._mask) if self._mask is not None else None

    def mask_bounds(self, threshold: int = 1) -> QRect | None:
        """The smallest rectangle holding every mask pixel >= ``threshold``, or None."""
        values = self.mask_array()
        if values is None:
            return None
        rows = np.flatnonzero((values >= threshold).any(axis=1))
        if rows.size == 0:
            return None
        cols = np.flatnonzero((values >= threshold).any(axis=0))
        return QRect(
            int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)
        )

    def set_mask(self, mask: QImage | None) -> None:
        """Replace the mask (scaled to the image when its size differs; None clears it).
        Undoable."""
        if self._mask is None:
            return
        if mask is None or mask.isNull():
            values = np.zeros((self._mask.height(), self._mask.width()), np.uint8)
        else:
            gray = mask.convertToFormat(QImage.Format.Format_Grayscale8)
            if gray.size() != self._mask.size():
                gray = gray.scaled(
                    self._mask.size(),
                    Qt.AspectRatioMode.IgnoreAspectRatio,
                    Qt.TransformationMode.SmoothTransformation,
                ).convertToFormat(QImage.Format.Format_Grayscale8)
            values = qimage_to_array(gray)
        self._apply_array(values)

    def save_mask(self, path: str | Path) -> None:
        """Write the mask as a greyscale PNG at the image's size.

        Raises:
            ImageError: no image is set, or the file cannot be written.
        """
        if self._mask is None:
            raise ImageError("There is no mask to save: set an image first.")
        writer = QImageWriter(str(path), QByteArray(b"PNG"))
        if not writer.write(self._mask):
            raise ImageError(
                f"The mask could not be written to {Path(path).name} ({writer.errorString()})."
            )

    # -- tools -----------------------------------------------------------------------------
    def tool(self) -> str:
        return self._tool

    def set_tool(self, tool: str) -> None:
        """``"brush"`` (paints 255) or ``"eraser"`` (paints 0)."""
        if tool not in (BRUSH, ERASER):
            raise ValueError(f"unknown mask tool {tool!r}")
        self._tool = tool
        (self.brush_action if tool == BRUSH else self.eraser_action).setChecked(True)

    def brush_size(self) -> int:
        """The brush diameter in image pixels."""
        return self._brush_size

    def set_brush_size(self, size: int) -> None:
        size = max(MIN_BRUSH, min(MAX_BRUSH, int(size)))
        if size == self._brush_size:
            return
        old = self.cursor_rect()
        self._brush_size = size
        self.size_spin.setValue(size)
        self._update_cursor(old)
        self.brush_size_changed.emit(size)

    def step_brush_size(self, direction: int) -> None:
        """One step bigger (``direction`` > 0) or smaller: about 15 %, at least 1 px."""
        step = max(1, round(self._brush_size * 0.15))
        self.set_brush_size(self._brush_size + (step if direction > 0 else -step))

    def antialiased(self) -> bool:
        return self._antialiased

    def set_antialiased(self, on: bool) -> None:
        """Soft (antialiased) brush edges, or hard ones."""
        self._antialiased = bool(on)

    def overlay_visible(self) -> bool:
        return self._overlay_visible

    def set_overlay_visible(self, visible: bool) -> None:
        visible = bool(visible)
        if visible == self._overlay_visible:
            return
        self._overlay_visible = visible
        self.overlay_action.setChecked(visible)
        self.view.update()
        self.overlay_toggled.emit(visible)

    # -- operations ------------------------------------------------------------------------
    def invert(self) -> None:
        values = self.mask_array()
        if values is not None:
            self._apply_array(255 - values)

    def clear(self) -> None:
        values = self.mask_array()
        if values is not None:
            self._apply_array(np.zeros_like(values))

    def fill(self) -> None:
        values = self.mask_array()
        if values is not None:
            self._apply_array(np.full_like(values, 255))

    def grow(self, pixels: int) -> None:
        """Dilate the mask by ``pixels`` (a round reach; negative shrinks it).

        Growing sets every pixel within ``pixels`` of a painted one (>= ``GROW_THRESHOLD``)
        to 255; shrinking sets every painted pixel within ``pixels`` of a kept one to 0, the
        mask being taken to go on past the image's border (a mask along an edge stays
        there). Pixels out of reach keep their values.
        """
        values = self.mask_array()
        if values is None or pixels == 0:
            return
        from scipy.ndimage import distance_transform_edt

        painted = values >= GROW_THRESHOLD
        rows = np.flatnonzero(painted.any(axis=1))
        if rows.size == 0:
            return
        cols = np.flatnonzero(painted.any(axis=0))
        # Only the painted box plus the reach can change: the distances are worked out there.
        margin = pixels if pixels > 0 else 1
        top, bottom = max(0, rows[0] - margin), min(values.shape[0], rows[-1] + 1 + margin)
        left, right = max(0, cols[0] - margin), min(values.shape[1], cols[-1] + 1 + margin)
        area = painted[top:bottom, left:right]
        result = values.copy()
        region = result[top:bottom, left:right]
        if pixels > 0:
            # The distance of each pixel to the nearest painted one.
            region[distance_transform_edt(~area) <= pixels] = 255
        else:
            if area.all():
                return  # nothing kept near the mask: no edge to shrink from
            # The distance of each painted pixel to the nearest kept one.
            region[(distance_transform_edt(area) <= -pixels) & area] = 0
        self._apply_array(result)

    def feather(self, pixels: float) -> None:
        """Blur the mask itself (Gaussian, radius ``pixels``), leaving soft values at its
        edges."""
        values = self.mask_array()
        if values is None or pixels <= 0:
            return
        from PIL import Image, ImageFilter

        blurred = Image.fromarray(values, "L").filter(ImageFilter.GaussianBlur(pixels))
        self._apply_array(np.asarray(blurred, dtype=np.uint8))

    def mask_from_alpha(self) -> bool:
        """Use the image's transparency as the mask (transparent = 255, as the engine reads
        a file with transparency). False, with a message, when the image has none."""
        if self._image is None:
            self.message.emit("Set an init image before taking a mask from its transparency.")
            return False
        if not self._image.hasAlphaChannel():
            self.message.emit(
                "The image has no transparency, so no mask can be taken from it: paint one "
                "or load a black-and-white mask file."
            )
            return False
        alpha = self._image.convertToFormat(QImage.Format.Format_Alpha8)
        alpha.reinterpretAsFormat(QImage.Format.Format_Grayscale8)
        values = qimage_to_array(alpha)
        if int(values.min()) == 255:
            self.message.emit(
                "The image is fully opaque, so no mask can be taken from its transparency: "
                "paint one or load a black-and-white mask file."
            )
            return False
        self._apply_array(255 - values)
        return True

    def load_mask_file(self, path: str | Path) -> bool:
        """Read a mask file with the engine's rules (white, or transparent, repaints).

        A mask of another size is scaled to the image, and the engine's note is sent on
        ``message``; a file that cannot be read sends its problem there and leaves the mask
        as it was. Returns whether the mask was replaced.
        """
        if self._image is None:
            self.message.emit("Set an init image before loading a mask for it.")
            return False
        from desktop.engine.inpaint import MASK_THRESHOLD, load_mask

        try:
            mask, note = load_mask(path, (self._image.width(), self._image.height()))
        except ImageError as exc:
            self.message.emit(str(exc))
            return False
        values = np.asarray(mask.convert("L"), dtype=np.uint8)
        if not (values >= MASK_THRESHOLD).any():
            self.message.emit(
                f"The mask {Path(path).name} is all black, so there is nothing to repaint "
                "(white repaints); the mask was left as it was."
            )
            return False
        self._apply_array(values)
        if note:
            self.message.emit(note)
        return True

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
        assert self._mask is not None
        current = self._mask.copy(step.rect)
        self._put(step.rect, step.pixels)
        return _Step(step.rect, current)

    def _put(self, rect: QRect, pixels: QImage) -> None:
        assert self._mask is not None
        painter = QPainter(self._mask)
        painter.setCompositionMode(QPainter.CompositionMode.CompositionMode_Source)
        painter.drawImage(rect.topLeft(), pixels)
        painter.end()
        self._refresh_overlay(rect)
        self._update_image_rect(rect)

    def _apply_array(self, values: np.ndarray) -> None:
        """Make ``values`` the mask as one undo step."""
        if self._mask is None:
            return
        self._end_stroke_silently()
        self._undo.append(_Step(self._mask.rect(), self._mask.copy()))
        self._redo.clear()
        self._mask = array_to_qimage(values)
        self._refresh_overlay(self._mask.rect())
        self.view.update()
        self._changed()

    def _changed(self) -> None:
        self._update_actions()
        self.mask_changed.emit()

    def _update_actions(self) -> None:
        has = self._image is not None
        self.undo_action.setEnabled(bool(self._undo))
        self.redo_action.setEnabled(bool(self._redo))
        for act in (
            self.invert_action,
            self.fill_action,
            self.clear_action,
            self.grow_action,
            self.shrink_action,
            self.feather_action,
        ):
            act.setEnabled(has)

    # -- geometry --------------------------------------------------------------------------
    def image_rect(self) -> QRectF:
        """Where the image is drawn in the view: fitted, aspect kept, centred."""
        if self._image is None:
            return QRectF()
        width, height = self._image.width(), self._image.height()
        scale = self.view_scale()
        shown_w, shown_h = width * scale, height * scale
        return QRectF(
            (self.view.width() - shown_w) / 2, (self.view.height() - shown_h) / 2, shown_w, shown_h
        )

    def view_scale(self) -> float:
        """View pixels per image pixel."""
        if self._image is None:
            return 1.0
        return min(
            self.view.width() / self._image.width(), self.view.height() / self._image.height()
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
        """The brush outline's bounds in the view (empty when the mouse is not over it)."""
        if self._hover_pos is None or self._image is None:
            return QRectF()
        radius = self._brush_size * self.view_scale() / 2
        return QRectF(
            self._hover_pos.x() - radius, self._hover_pos.y() - radius, 2 * radius, 2 * radius
        )

    # -- painting --------------------------------------------------------------------------
    def _press(self, pos: QPointF, button: Qt.MouseButton) -> bool:
        if self._mask is None or self._stroke_before is not None:
            return False
        if button == Qt.MouseButton.LeftButton:
            self._stroke_tool = self._tool
        elif button == Qt.MouseButton.RightButton:
            self._stroke_tool = ERASER
        else:
            return False
        self._stroke_before = self._mask.copy()
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
        if self._stroke_before is None:
            return False
        if button != self._stroke_button:
            return False
        self._move(pos)
        rect = self._stroke_rect.intersected(self._stroke_before.rect())
        before = self._stroke_before
        self._stroke_before = None
        self._last_point = None
        if not rect.isEmpty():
            self._undo.append(_Step(rect, before.copy(rect)))
            self._redo.clear()
        self._changed()
        return True

    def _end_stroke_silently(self) -> None:
        """Finish a stroke under way (an operation or a new image arrived mid-stroke)."""
        if self._stroke_before is not None and self._mask is not None:
            rect = self._stroke_rect.intersected(self._stroke_before.rect())
            if not rect.isEmpty():
                self._undo.append(_Step(rect, self._stroke_before.copy(rect)))
                self._redo.clear()
        self._stroke_before = None
        self._last_point = None

    def _paint_segment(self, start: QPointF, end: QPointF) -> None:
        """A round-capped line of the brush's width from ``start`` to ``end`` (image px)."""
        assert self._mask is not None
        value = 255 if self._stroke_tool == BRUSH else 0
        pen = QPen(QColor(value, value, value))
        pen.setWidthF(float(self._brush_size))
        pen.setCapStyle(Qt.PenCapStyle.RoundCap)
        pen.setJoinStyle(Qt.PenJoinStyle.RoundJoin)
        painter = QPainter(self._mask)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, self._antialiased)
        painter.setPen(pen)
        if start == end:
            painter.drawPoint(start)
        else:
            painter.drawLine(start, end)
        painter.end()
        half = self._brush_size / 2 + 2
        touched = (
            QRectF(start, end)
            .normalized()
            .adjusted(-half, -half, half, half)
            .toAlignedRect()
            .intersected(self._mask.rect())
        )
        if touched.isEmpty():
            return
        self._stroke_rect = self._stroke_rect.united(touched)
        self._refresh_overlay(touched)
        self._update_image_rect(touched)

    def _refresh_overlay(self, rect: QRect) -> None:
        """Redraw the tinted overlay in ``rect`` (image px) from the mask."""
        if self._mask is None or self._overlay is None:
            return
        rect = rect.intersected(self._mask.rect())
        if rect.isEmpty():
            return
        alpha = self._mask.copy(rect)
        alpha.reinterpretAsFormat(QImage.Format.Format_Alpha8)
        painter = QPainter(self._overlay)
        painter.setCompositionMode(QPainter.CompositionMode.CompositionMode_Source)
        painter.drawImage(rect.topLeft(), alpha)
        painter.setCompositionMode(QPainter.CompositionMode.CompositionMode_SourceIn)
        painter.fillRect(rect, OVERLAY_COLOR)
        painter.end()

    def _update_image_rect(self, rect: QRect) -> None:
        self.view.update(self.image_to_view(QRectF(rect)).toAlignedRect().adjusted(-2, -2, 2, 2))

    def _hover(self, pos: QPointF | None) -> None:
        old = self.cursor_rect()
        self._hover_pos = pos
        self._update_cursor(old)

    def _update_cursor(self, old: QRectF) -> None:
        for rect in (old, self.cursor_rect()):
            if not rect.isEmpty():
                self.view.update(rect.toAlignedRect().adjusted(-3, -3, 3, 3))

    def _paint_view(self, painter: QPainter, clip: QRect) -> None:
        painter.fillRect(clip, self.palette().window())
        if self._image is None:
            painter.setPen(self.palette().placeholderText().color())
            painter.drawText(self.view.rect(), Qt.AlignmentFlag.AlignCenter, "No image")
            return
        target = self.image_rect()
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, self.view_scale() < 1)
        painter.drawImage(target, self._image)
        if self._overlay_visible and self._overlay is not None:
            painter.setOpacity(OVERLAY_OPACITY)
            painter.drawImage(target, self._overlay)
            painter.setOpacity(1.0)
        outline = self.cursor_rect()
        if not outline.isEmpty():
            painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
            painter.setBrush(Qt.BrushStyle.NoBrush)
            painter.setPen(QPen(QColor(0, 0, 0, 200), 3))
            painter.drawEllipse(outline)
            painter.setPen(QPen(QColor(255, 255, 255, 230), 1))
            painter.drawEllipse(outline)

    def preview(self, size: QSize) -> QPixmap:
        """The image with the tinted mask over it, scaled to fit ``size`` (a thumbnail)."""
        if self._image is None:
            return QPixmap()
        shown = self._image.size().scaled(size, Qt.AspectRatioMode.KeepAspectRatio)
        pixmap = QPixmap(shown)
        painter = QPainter(pixmap)
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, True)
        target = QRectF(0, 0, shown.width(), shown.height())
        painter.drawImage(target, self._image)
        if self._overlay_visible and self._overlay is not None:
            painter.setOpacity(OVERLAY_OPACITY)
            painter.drawImage(target, self._overlay)
        painter.end()
        return pixmap

    # -- keys ------------------------------------------------------------------------------
    def _key_action(self, event: QKeyEvent) -> Callable[[], object] | None:
        """What a key press does in the view, or None when it is not the editor's key."""
        if self._image is None:
            return None
        key = event.key()
        mods = event.modifiers() & ~Qt.KeyboardModifier.KeypadModifier
        ctrl = Qt.KeyboardModifier.ControlModifier
        shift = Qt.KeyboardModifier.ShiftModifier
        if mods == ctrl and key == Qt.Key.Key_Z:
            return self.undo
        if (mods == ctrl | shift and key == Qt.Key.Key_Z) or (mods == ctrl and key == Qt.Key.Key_Y):
            return self.redo
        if event.matches(QKeySequence.StandardKey.Undo):
            return self.undo
        if event.matches(QKeySequence.StandardKey.Redo):
            return self.redo
        if mods != Qt.KeyboardModifier.NoModifier:
            return None
        plain: dict[int, Callable[[], object]] = {
            int(Qt.Key.Key_BracketLeft): lambda: self.step_brush_size(-1),
            int(Qt.Key.Key_BracketRight): lambda: self.step_brush_size(1),
            int(Qt.Key.Key_H): lambda: self.set_overlay_visible(not self._overlay_visible),
            int(Qt.Key.Key_B): lambda: self.set_tool(BRUSH),
            int(Qt.Key.Key_E): lambda: self.set_tool(ERASER),
        }
        return plain.get(int(key))
