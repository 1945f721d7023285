"""img2img panel: a drop zone for the init image, denoising strength and helpers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import QMimeData, QSize, Qt, Signal
from PySide6.QtGui import (
    QDragEnterEvent,
    QDropEvent,
    QGuiApplication,
    QImageReader,
    QKeyEvent,
    QKeySequence,
    QPixmap,
)
from PySide6.QtWidgets import (
    QFileDialog,
    QFormLayout,
    QFrame,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSlider,
    QVBoxLayout,
    QWidget,
)

from desktop.engine.errors import ImageError
from desktop.ui.fields import SettingsPanel
from desktop.ui.inputs import can_accept, check_image, image_from_mime

THUMB = 220
IMAGE_FILTER = "Images (*.png *.jpg *.jpeg *.webp *.bmp)"


class DropZone(QFrame):
    """Accepts an image by drag and drop or paste (Ctrl+V when focused); shows a thumbnail.

    Signals:
        image_dropped(object): the mime data of a drop or paste, for the panel to resolve.
    """

    image_dropped = Signal(object)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("DropZone")
        self.setAcceptDrops(True)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setMinimumSize(160, 140)
        self.setToolTip(
            "Drop an image here (from the file manager, a browser or the gallery), "
            "or click and press Ctrl+V to paste one."
        )
        layout = QVBoxLayout(self)
        self.label = QLabel("Drop an image here\nor paste (Ctrl+V)")
        self.label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.label.setObjectName("DropZoneLabel")
        layout.addWidget(self.label)
        self.setProperty("dragging", False)

    def show_thumbnail(self, pixmap: QPixmap | None) -> None:
        if pixmap is None or pixmap.isNull():
            self.label.setPixmap(QPixmap())
            self.label.setText("Drop an image here\nor paste (Ctrl+V)")
        else:
            self.label.setPixmap(pixmap)

    def _set_dragging(self, value: bool) -> None:
        self.setProperty("dragging", value)
        self.style().unpolish(self)
        self.style().polish(self)

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if can_accept(event.mimeData()):
            event.acceptProposedAction()
            self._set_dragging(True)
        else:
            event.ignore()

    def dragLeaveEvent(self, event) -> None:
        self._set_dragging(False)

    def dropEvent(self, event: QDropEvent) -> None:
        self._set_dragging(False)
        event.acceptProposedAction()
        self.image_dropped.emit(event.mimeData())

    def keyPressEvent(self, event: QKeyEvent) -> None:
        if event.matches(QKeySequence.StandardKey.Paste):
            self.paste()
            return
        super().keyPressEvent(event)

    def paste(self) -> None:
        self.image_dropped.emit(QGuiApplication.clipboard().mimeData())


class Img2ImgPanel(SettingsPanel):
    """The init image and denoising strength. No image means txt2img.

    Signals:
        image_changed(object): the new init image path, or None after Clear.
        use_size_requested(int, int): the user wants the image's size for generation.
        message(str): a problem to show the user (e.g. a non-image drop).
    """

    image_changed = Signal(object)
    use_size_requested = Signal(int, int)
    message = Signal(str)

    PANEL = "img2img"
    CUSTOM = frozenset({"init_image", "strength"})

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("Img2ImgPanel")
        self._path: Path | None = None
        self._size: tuple[int, int] | None = None
        layout = QVBoxLayout(self)
        layout.setContentsMargins(10, 10, 10, 10)
        layout.setSpacing(6)

        self.mode_label = QLabel()
        self.mode_label.setObjectName("ModeLabel")
        layout.addWidget(self.mode_label)
        self.drop_zone = DropZone()
        layout.addWidget(self.drop_zone, 1)
        self.path_label = QLabel()
        self.path_label.setObjectName("InitPathLabel")
        self.path_label.setWordWrap(True)
        layout.addWidget(self.path_label)

        strength_row = QHBoxLayout()
        strength_row.addWidget(QLabel("Strength"))
        self.strength_slider = QSlider(Qt.Orientation.Horizontal)
        self.strength_slider.setObjectName("StrengthSlider")
        self.strength_slider.setRange(1, 100)
        self.strength_slider.setValue(75)
        self.strength_slider.setToolTip(
            "Denoising strength: low keeps the image, high repaints it (1.0 ignores it)."
        )
        self.strength_value = QLabel("0.75")
        self.strength_value.setMinimumWidth(32)
        strength_row.addWidget(self.strength_slider, 1)
        strength_row.addWidget(self.strength_value)
        layout.addLayout(strength_row)

        buttons = QHBoxLayout()
        self.open_button = QPushButton("Open…")
        self.open_button.setToolTip("Choose an image file")
        self.paste_button = QPushButton("Paste")
        self.paste_button.setToolTip("Use the image on the clipboard")
        self.use_size_button = QPushButton("Use size")
        self.use_size_button.setToolTip("Generate at this image's size (rounded to 8 px)")
        self.clear_button = QPushButton("Clear")
        self.clear_button.setToolTip("Remove the image and go back to text-to-image")
        for button in (
            self.open_button,
            self.paste_button,
            self.use_size_button,
            self.clear_button,
        ):
            buttons.addWidget(button)
        layout.addLayout(buttons)
        # Settings added to this panel later get generic editors here.
        extra = QFormLayout()
        self.add_generic_editors(extra)
        layout.addLayout(extra)

        self.drop_zone.image_dropped.connect(self.accept_mime)
        self.paste_button.clicked.connect(self.drop_zone.paste)
        self.open_button.clicked.connect(self._open)
        self.clear_button.clicked.connect(self.clear)
        self.use_size_button.clicked.connect(self._use_size)
        self.strength_slider.valueChanged.connect(
            lambda v: self.strength_value.setText(f"{v / 100:.2f}")
        )
        self.strength_slider.valueChanged.connect(lambda *_: self.values_changed.emit())
        self.image_changed.connect(lambda *_: self.values_changed.emit())
        self._refresh()

    # -- values ----------------------------------------------------------------------------
    def _custom_values(self) -> dict[str, Any]:
        return {"init_image": self.init_image(), "strength": self.strength()}

    def _set_custom_values(self, values: dict[str, Any]) -> None:
        if values.get("strength") is not None:
            self.set_strength(float(values["strength"]))
        path = values.get("init_image")
        if path and Path(path).is_file():
            self.set_image(path)

    # -- state -----------------------------------------------------------------------------
    def init_image(self) -> str | None:
        return str(self._path) if self._path else None

    def strength(self) -> float:
        return self.strength_slider.value() / 100.0

    def set_strength(self, value: float) -> None:
        self.strength_slider.setValue(round(max(0.01, min(1.0, value)) * 100))

    def image_size(self) -> tuple[int, int] | None:
        return self._size

    # -- input -----------------------------------------------------------------------------
    def accept_mime(self, mime: QMimeData | None) -> bool:
        """Resolve dropped or pasted data; a non-image gives a message, never an exception."""
        if mime is None:
            self.message.emit("The clipboard is empty.")
            return False
        try:
            path = image_from_mime(mime)
        except ImageError as exc:
            self.message.emit(str(exc))
            return False
        return self.set_image(path)

    def set_image(self, path: Path | str) -> bool:
        path = Path(path)
        try:
            self._size = check_image(path)
        except ImageError as exc:
            self.message.emit(str(exc))
            return False
        self._path = path
        reader = QImageReader(str(path))
        reader.setAutoTransform(True)
        size = reader.size()
        if size.isValid():
            reader.setScaledSize(
                size.scaled(QSize(THUMB, THUMB), Qt.AspectRatioMode.KeepAspectRatio)
            )
        self.drop_zone.show_thumbnail(QPixmap.fromImage(reader.read()))
        self._refresh()
        self.image_changed.emit(str(path))
        return True

    def clear(self) -> None:
        had = self._path is not None
        self._path = None
        self._size = None
        self.drop_zone.show_thumbnail(None)
        self._refresh()
        if had:
            self.image_changed.emit(None)

    def _open(self) -> None:
        name, _ = QFileDialog.getOpenFileName(self, "Choose an init image", "", IMAGE_FILTER)
        if name:
            self.set_image(name)

    def _use_size(self) -> None:
        if self._size:
            self.use_size_requested.emit(*self._size)

    def _refresh(self) -> None:
        active = self._path is not None
        self.mode_label.setText(
            "Mode: image-to-image" if active else "Mode: text-to-image (drop an image to switch)"
        )
        self.path_label.setText(
            f"{self._path.name}  ·  {self._size[0]}×{self._size[1]}"
            if active and self._size
            else ""
        )
        self.path_label.setToolTip(str(self._path) if active else "")
        self.strength_slider.setEnabled(active)
        self.use_size_button.setEnabled(active)
        self.clear_button.setEnabled(active)
