"""Render the app icon's PNG sizes and the Windows .ico from ``sandstorm.svg``.

Run after editing the SVG: ``python resources/icons/render_icons.py``. The rendered files are
committed, so installs need neither Qt's SVG module nor this script.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "sandstorm.svg"
PNG_SIZES = (48, 128, 256)
ICO_SIZES = (16, 24, 32, 48, 64, 128, 256)


def render_png(size: int, target: Path) -> None:
    """Rasterise the SVG at ``size`` x ``size`` pixels with a transparent background."""
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QImage, QPainter
    from PySide6.QtSvg import QSvgRenderer

    renderer = QSvgRenderer(str(SOURCE))
    if not renderer.isValid():
        raise SystemExit(f"{SOURCE} is not a valid SVG")
    image = QImage(size, size, QImage.Format.Format_ARGB32_Premultiplied)
    image.fill(Qt.GlobalColor.transparent)
    painter = QPainter(image)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
    renderer.render(painter)
    painter.end()
    if not image.save(str(target), "PNG"):
        raise SystemExit(f"could not write {target}")


def main() -> int:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtGui import QGuiApplication

    app = QGuiApplication.instance() or QGuiApplication(sys.argv[:1])
    for size in PNG_SIZES:
        render_png(size, HERE / f"sandstorm-{size}.png")
    # Windows shortcuts want an .ico; Pillow downsamples the largest render for small sizes.
    from PIL import Image

    with Image.open(HERE / "sandstorm-256.png") as largest:
        largest.save(HERE / "sandstorm.ico", sizes=[(s, s) for s in ICO_SIZES])
    del app
    return 0


if __name__ == "__main__":
    sys.exit(main())
