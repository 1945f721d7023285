"""PIL → QImage conversion, safe to call on any thread (QImage is not a GUI resource)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtGui import QImage

if TYPE_CHECKING:
    from PIL import Image


def pil_to_qimage(image: Image.Image) -> QImage:
    """Convert a PIL image to a QImage that owns its pixels.

    ``copy()`` matters: the QImage constructor only wraps the bytes object, which Python
    frees once this function returns; the copy lets the image cross threads in a signal.
    """
    has_alpha = image.mode in ("RGBA", "LA") or "transparency" in image.info
    rgb = image.convert("RGBA" if has_alpha else "RGB")
    fmt = QImage.Format.Format_RGBA8888 if has_alpha else QImage.Format.Format_RGB888
    data = rgb.tobytes()
    width, height = rgb.size
    stride = width * (4 if has_alpha else 3)
    return QImage(data, width, height, stride, fmt).copy()
