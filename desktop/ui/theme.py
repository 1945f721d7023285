"""The dark theme: Fusion style, a dark palette (for what QSS does not reach) and style.qss."""

from __future__ import annotations

import contextlib

from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QApplication

from desktop.engine import paths

STYLE_SHEET = paths.RESOURCES / "style.qss"
ICONS = paths.RESOURCES / "icons" / "ui"


def dark_palette() -> QPalette:
    palette = QPalette()
    colors = {
        QPalette.ColorRole.Window: "#1e1f24",
        QPalette.ColorRole.WindowText: "#e4e4e8",
        QPalette.ColorRole.Base: "#1a1b20",
        QPalette.ColorRole.AlternateBase: "#25262c",
        QPalette.ColorRole.ToolTipBase: "#2e3038",
        QPalette.ColorRole.ToolTipText: "#e4e4e8",
        QPalette.ColorRole.PlaceholderText: "#7a7c88",
        QPalette.ColorRole.Text: "#e4e4e8",
        QPalette.ColorRole.Button: "#2e3038",
        QPalette.ColorRole.ButtonText: "#e4e4e8",
        QPalette.ColorRole.BrightText: "#ffffff",
        QPalette.ColorRole.Highlight: "#e0a458",
        QPalette.ColorRole.HighlightedText: "#1a1b20",
        QPalette.ColorRole.Link: "#e0a458",
    }
    for role, value in colors.items():
        palette.setColor(role, QColor(value))
    for role in (
        QPalette.ColorRole.WindowText,
        QPalette.ColorRole.Text,
        QPalette.ColorRole.ButtonText,
    ):
        palette.setColor(QPalette.ColorGroup.Disabled, role, QColor("#6a6c78"))
    return palette


def apply_theme(app: QApplication) -> None:
    """Fusion + dark palette + the project style sheet (missing sheet: palette only)."""
    app.setStyle("Fusion")
    app.setPalette(dark_palette())
    with contextlib.suppress(OSError):
        app.setStyleSheet(load_style_sheet())


def load_style_sheet() -> str:
    """The style sheet with ``@ICONS@`` pointing at the icon folder (QSS urls are not
    relative to the sheet, so the absolute path is filled in here)."""
    sheet = STYLE_SHEET.read_text(encoding="utf-8")
    return sheet.replace("@ICONS@", ICONS.as_posix())
