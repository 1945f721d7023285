"""Zoom, pan and preview scaling of the canvas."""

from __future__ import annotations

import pytest
from PySide6.QtCore import QPoint, QPointF, QSize, Qt
from PySide6.QtGui import QImage
from PySide6.QtTest import QTest

from desktop.ui.canvas import ImageCanvas


@pytest.fixture
def canvas(qtbot) -> ImageCanvas:
    widget = ImageCanvas()
    qtbot.addWidget(widget)
    widget.resize(600, 400)
    widget.show()
    return widget


def _image(w: int, h: int) -> QImage:
    image = QImage(w, h, QImage.Format.Format_RGB32)
    image.fill(Qt.GlobalColor.darkYellow)
    return image


def test_preview_is_drawn_at_the_final_size(canvas):
    canvas.set_image(_image(8, 8), QSize(64, 64), preview=True)
    assert canvas.is_preview and canvas.frames_shown == 1
    # Fit: the 64 px logical image is enlarged (capped at 8x) into the view.
    assert canvas.effective_zoom() == pytest.approx(min((400 - 16) / 64, 8.0))
    grabbed = canvas.grab().toImage()
    center = grabbed.pixelColor(grabbed.width() // 2, grabbed.height() // 2)
    assert center.red() > 100 and center.green() > 100  # the image, not the background


def test_zoom_fit_actual_wheel_and_pan(qtbot, canvas):
    canvas.set_image(_image(512, 512))
    assert canvas.effective_zoom() == pytest.approx((400 - 16) / 512)
    canvas.zoom_actual()
    assert canvas.effective_zoom() == 1.0
    canvas.set_zoom(2.0, anchor=QPointF(300, 200))
    assert canvas.effective_zoom() == 2.0
    QTest.mousePress(canvas, Qt.MouseButton.LeftButton, pos=QPoint(100, 100))
    QTest.mouseMove(canvas, QPoint(150, 120))
    QTest.mouseRelease(canvas, Qt.MouseButton.LeftButton, pos=QPoint(150, 120))
    assert canvas._pan != QPointF(0, 0)
    QTest.mouseDClick(canvas, Qt.MouseButton.LeftButton, pos=QPoint(10, 10))
    assert canvas.effective_zoom() == pytest.approx((400 - 16) / 512)
    canvas.set_zoom(1000)
    assert canvas.effective_zoom() == 32.0
