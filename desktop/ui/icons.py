"""The window's small SVG icons (resources/icons/ui); a missing file gives an empty icon."""

from __future__ import annotations

from PySide6.QtGui import QIcon

from desktop.engine import paths

ICONS = paths.RESOURCES / "icons" / "ui"


def icon(name: str) -> QIcon:
    path = ICONS / f"{name}.svg"
    return QIcon(str(path)) if path.is_file() else QIcon()
