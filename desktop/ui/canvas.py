"""The central image view: live previews while a job runs, then the final image.

Previews arrive at latent resolution (an 8th of the image side); they are drawn into the
final image's rectangle with smooth scaling, so the picture sharpens in place as the job
finishes. Zoom with the wheel (around the cursor), pan by dragging, double-click to fit.
"""

from __future__ import annotations

from PySide6.QtCore import QPointF, QRectF, QSize, Qt, Signal
from PySide6.QtGui import QColor, QImage, QMouseEvent, QPainter, QPaintEvent, QWheelEvent
from PySide6.QtWidgets import QSizePolicy, QWidget

MIN_ZOOM, MAX_ZOOM = 0.05, 32.0


class ImageCanvas(QWidget):
    """Shows one image with zoom and pan. ``zoom`` None means "fit to the view"."""

    zoom_changed = Signal(float)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("ImageCanvas")
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setMinimumSize(200, 200)
        self.setMouseTracking(False)
        self.setFocusPolicy(Qt.FocusPolicy.ClickFocus)
        self.setToolTip("Wheel to zoom, drag to pan, double-click to fit.")
        self._image = QImage()
        self._scaled: QImage | None = None
        self._logical = QSize()
        self._zoom: float | None = None
        self._pan = QPointF(0.0, 0.0)
        self._drag_from: QPointF | None = None
        self._placeholder = "Type a prompt and press Generate (Ctrl+Enter)."
        self.frames_shown = 0
        self.is_preview = False

    # -- content ---------------------------------------------------------------------------
    def set_image(self, image: QImage, logical_size: QSize | None = None, preview: bool = False):
        """Show ``image``, drawn at ``logical_size`` (defaults to the image's own size)."""
        self._image = image
        self._scaled = None
        self._logical = QSize(logical_size) if logical_size else image.size()
        self.is_preview = preview
        self.frames_shown += 1
        self.update()

    def clear(self, placeholder: str | None = None) -> None:
        self._image = QImage()
        self._scaled = None
        self._logical = QSize()
        if placeholder is not None:
            self._placeholder = placeholder
        self.update()

    def image(self) -> QImage:
        return self._image

    def has_image(self) -> bool:
        return not self._image.isNull()

    # -- zoom ------------------------------------------------------------------------------
    def zoom_fit(self) -> None:
        self._zoom = None
        self._pan = QPointF(0.0, 0.0)
        self._scaled = None
        self.zoom_changed.emit(self.effective_zoom())
        self.update()

    def zoom_actual(self) -> None:
        self.set_zoom(1.0)

    def set_zoom(self, zoom: float, anchor: QPointF | None = None) -> None:
        """Zoom to ``zoom`` keeping the image point under ``anchor`` (widget coords) fixed."""
        zoom = max(MIN_ZOOM, min(MAX_ZOOM, zoom))
        if anchor is not None and not self._logical.isEmpty():
            old_rect = self._target_rect()
            rel = QPointF(
                (anchor.x() - old_rect.x()) / max(old_rect.width(), 1e-6),
                (anchor.y() - old_rect.y()) / max(old_rect.height(), 1e-6),
            )
            self._zoom = zoom
            new_rect = self._target_rect()
            self._pan += QPointF(
                anchor.x() - (new_rect.x() + rel.x() * new_rect.width()),
                anchor.y() - (new_rect.y() + rel.y() * new_rect.height()),
            )
        else:
            self._zoom = zoom
        self._scaled = None
        self.zoom_changed.emit(zoom)
        self.update()

    def effective_zoom(self) -> float:
        if self._zoom is not None:
            return self._zoom
        if self._logical.isEmpty():
            return 1.0
        margin = 16
        return min(
            (self.width() - margin) / self._logical.width(),
            (self.height() - margin) / self._logical.height(),
            # Never blow a small image up past 8x by default; previews still fill it.
            8.0,
        )

    def _target_rect(self) -> QRectF:
        zoom = self.effective_zoom()
        w = self._logical.width() * zoom
        h = self._logical.height() * zoom
        x = (self.width() - w) / 2 + self._pan.x()
        y = (self.height() - h) / 2 + self._pan.y()
        return QRectF(x, y, w, h)

    # -- events ----------------------------------------------------------------------------
    def paintEvent(self, event: QPaintEvent) -> None:
        painter = QPainter(self)
        painter.fillRect(self.rect(), self.palette().color(self.backgroundRole()).darker(135))
        if self._image.isNull():
            painter.setPen(QColor(150, 150, 160))
            painter.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, self._placeholder)
            return
        target = self._target_rect()
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, True)
        source = self._display_image(target)
        painter.drawImage(target, source)
        if self.is_preview:
            painter.setPen(QColor(255, 255, 255, 160))
            painter.drawText(
                target.adjusted(6, 4, -6, -4),
                Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft,
                "preview",
            )

    def _display_image(self, target: QRectF) -> QImage:
        """A smoothly scaled copy for tiny previews (bilinear drawImage alone looks blocky)."""
        ratio = self.devicePixelRatioF()
        needed = QSize(int(target.width() * ratio), int(target.height() * ratio))
        if self._image.width() * 2 >= needed.width() or needed.isEmpty():
            return self._image
        if needed.width() * needed.height() > 16_000_000:
            return self._image
        if self._scaled is None or self._scaled.size() != needed:
            self._scaled = self._image.scaled(
                needed,
                Qt.AspectRatioMode.IgnoreAspectRatio,
                Qt.TransformationMode.SmoothTransformation,
            )
        return self._scaled

    def resizeEvent(self, event) -> None:
        self._scaled = None
        super().resizeEvent(event)

    def wheelEvent(self, event: QWheelEvent) -> None:
        if self._image.isNull():
            return
        steps = event.angleDelta().y() / 120.0
        if not steps:
            return
        self.set_zoom(self.effective_zoom() * (1.25**steps), event.position())
        event.accept()

    def mousePressEvent(self, event: QMouseEvent) -> None:
        if event.button() in (Qt.MouseButton.LeftButton, Qt.MouseButton.MiddleButton):
            self._drag_from = event.position()
            self.setCursor(Qt.CursorShape.ClosedHandCursor)

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        if self._drag_from is not None:
            if self._zoom is None:
                self._zoom = self.effective_zoom()
            self._pan += event.position() - self._drag_from
            self._drag_from = event.position()
            self.update()

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        self._drag_from = None
        self.unsetCursor()

    def mouseDoubleClickEvent(self, event: QMouseEvent) -> None:
        self.zoom_fit()
