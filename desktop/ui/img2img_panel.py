"""img2img panel: a drop zone for the init image, denoising strength, an inpainting mask.

"Paint mask" turns the drop zone's thumbnail into a ``MaskEditor`` over the init image; the
painted mask is saved (named by its pixels) under ``data_dir()/masks`` and reported as the
request's ``mask``, with the mask settings edited below it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from PySide6.QtCore import QMimeData, QSize, Qt, Signal
from PySide6.QtGui import (
    QDragEnterEvent,
    QDropEvent,
    QGuiApplication,
    QImage,
    QImageReader,
    QKeyEvent,
    QKeySequence,
    QPixmap,
)
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QFrame,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSlider,
    QStackedLayout,
    QVBoxLayout,
    QWidget,
)

from desktop.engine import paths
from desktop.engine.errors import ImageError, RequestError
from desktop.engine.parts import MaskSpec
from desktop.engine.schema import fields_of
from desktop.ui.fields import BoolEditor, Editor, SettingsPanel, changed_signal, make_editor
from desktop.ui.inputs import can_accept, check_image, image_from_mime
from desktop.ui.mask_editor import MaskEditor

THUMB = 220
IMAGE_FILTER = "Images (*.png *.jpg *.jpeg *.webp *.bmp)"
#: "Only masked" defaults to on while the painted box covers less than this share of the image.
ONLY_MASKED_AREA = 0.5
#: Mask values from this one up are the repaint region (the engine's ``MASK_THRESHOLD``).
MASK_VALUE_THRESHOLD = 8


def masks_dir() -> Path:
    """Where painted masks are kept, one PNG per distinct mask."""
    return paths.data_dir() / "masks"


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
        self.stack = QStackedLayout(self)
        self.stack.setContentsMargins(6, 6, 6, 6)
        self.label = QLabel("Drop an image here\nor paste (Ctrl+V)")
        self.label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.label.setObjectName("DropZoneLabel")
        self.stack.addWidget(self.label)
        self.setProperty("dragging", False)

    def set_editor(self, editor: QWidget) -> None:
        """Add the widget shown instead of the thumbnail by ``show_editor(True)``; drops and
        Ctrl+V over it still reach the zone."""
        self.stack.addWidget(editor)

    def show_editor(self, on: bool) -> None:
        self.stack.setCurrentIndex(1 if on and self.stack.count() > 1 else 0)

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
    """The init image, denoising strength and an inpainting mask. No image means txt2img.

    "Paint mask" shows a ``MaskEditor`` over the init image in place of the thumbnail; a
    mask can also come from a file ("Load mask…") or the image's transparency ("From
    alpha"). While a mask exists its settings (blur, masked content, padding, only masked)
    are shown and ``values()["mask"]`` is a ``MaskSpec``; a mask never outlives its image.

    Signals:
        image_changed(object): the new init image path, or None after Clear.
        use_size_requested(int, int): the user wants the image's size for generation.
        message(str): a problem to show the user (e.g. a non-image drop).
        mask_changed(): the mask was painted, changed, loaded or removed.
    """

    image_changed = Signal(object)
    use_size_requested = Signal(int, int)
    message = Signal(str)
    mask_changed = Signal()

    PANEL = "img2img"
    CUSTOM = frozenset({"init_image", "strength", "mask"})

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("Img2ImgPanel")
        self._path: Path | None = None
        self._size: tuple[int, int] | None = None
        self._thumbnail = QPixmap()
        # The init image loaded into the mask editor (loaded only when a mask is wanted).
        self._editor_path: Path | None = None
        # The saved PNG of the current mask; None once the mask changed.
        self._mask_file: Path | None = None
        # The user set "Only masked" themselves: the automatic default leaves it alone.
        self._only_masked_touched = False
        layout = QVBoxLayout(self)
        layout.setContentsMargins(10, 10, 10, 10)
        layout.setSpacing(6)

        self.mode_label = QLabel()
        self.mode_label.setObjectName("ModeLabel")
        layout.addWidget(self.mode_label)
        self.drop_zone = DropZone()
        self.mask_editor = MaskEditor()
        self.drop_zone.set_editor(self.mask_editor)
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

        mask_buttons = QHBoxLayout()
        self.paint_button = QPushButton("Paint mask")
        self.paint_button.setObjectName("PaintMaskButton")
        self.paint_button.setCheckable(True)
        self.paint_button.setToolTip(
            "Inpainting: paint over the part of the image to repaint (the rest is kept)"
        )
        self.load_mask_button = QPushButton("Load mask…")
        self.load_mask_button.setToolTip(
            "Use a black-and-white image as the mask (white repaints; transparent repaints)"
        )
        self.alpha_button = QPushButton("From alpha")
        self.alpha_button.setToolTip("Repaint where the init image is transparent")
        for button in (self.paint_button, self.load_mask_button, self.alpha_button):
            # Less side padding than the theme's, so the row is no wider than the one above.
            button.setStyleSheet("QPushButton { padding-left: 6px; padding-right: 6px; }")
            mask_buttons.addWidget(button)
        layout.addLayout(mask_buttons)

        self.mask_settings = QGroupBox("Mask")
        self.mask_settings.setObjectName("MaskSettings")
        mask_form = QFormLayout(self.mask_settings)
        mask_form.setContentsMargins(6, 6, 6, 6)
        self.mask_editors: dict[str, Editor] = {}
        for info in fields_of(MaskSpec):
            if info.name == "image":
                continue
            editor = make_editor(info, self.mask_settings)
            editor.setObjectName(f"mask_{info.name}_editor")
            if isinstance(editor, QComboBox):
                # Not as wide as its longest choice: the dock stays as narrow as before.
                editor.setSizeAdjustPolicy(
                    QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
                )
                editor.setMinimumContentsLength(6)
            changed_signal(editor).connect(lambda *_: self.values_changed.emit())
            self.mask_editors[info.name] = editor
            mask_form.addRow(info.label, editor)
        only_masked = self.mask_editors["only_masked"]
        assert isinstance(only_masked, BoolEditor)
        only_masked.clicked.connect(self._only_masked_clicked)
        layout.addWidget(self.mask_settings)

        # Settings added to this panel later get generic editors here.
        extra = QFormLayout()
        self.add_generic_editors(extra)
        layout.addLayout(extra)

        self.drop_zone.image_dropped.connect(self.accept_mime)
        self.paste_button.clicked.connect(self.drop_zone.paste)
        self.open_button.clicked.connect(self._open)
        self.clear_button.clicked.connect(self.clear)
        self.use_size_button.clicked.connect(self._use_size)
        self.paint_button.toggled.connect(self.set_painting)
        self.load_mask_button.clicked.connect(self._open_mask)
        self.alpha_button.clicked.connect(self.mask_from_alpha)
        self.mask_editor.mask_changed.connect(self._on_mask_edited)
        self.mask_editor.message.connect(self.message)
        self.strength_slider.valueChanged.connect(
            lambda v: self.strength_value.setText(f"{v / 100:.2f}")
        )
        self.strength_slider.valueChanged.connect(lambda *_: self.values_changed.emit())
        self.image_changed.connect(lambda *_: self.values_changed.emit())
        self._refresh()

    # -- values ----------------------------------------------------------------------------
    def _custom_values(self) -> dict[str, Any]:
        return {
            "init_image": self.init_image(),
            "strength": self.strength(),
            "mask": self.mask_spec(),
        }

    def _set_custom_values(self, values: dict[str, Any]) -> None:
        if values.get("strength") is not None:
            self.set_strength(float(values["strength"]))
        path = values.get("init_image")
        if path and Path(path).is_file():
            self.set_image(path)
        if "mask" in values:
            image_ok = path is not None and self._path is not None and self._path == Path(path)
            self._restore_mask(values["mask"], image_ok)

    def _restore_mask(self, spec: MaskSpec | Mapping[str, Any] | None, image_ok: bool) -> None:
        """Show the mask of a request (``image_ok``: its init image is the one shown).

        None leaves things as they are: with an init image in the values, ``set_image``
        already removed the old mask; without one (the window keeps the current image when
        reusing a text-to-image request) the current image keeps its mask too.
        """
        if spec is None:
            return
        if isinstance(spec, Mapping):
            try:
                spec = MaskSpec(**spec)
            except (RequestError, TypeError) as exc:
                self._reset_mask()
                self.message.emit(f"The mask settings could not be restored: {exc}")
                return
        if not image_ok:
            self._reset_mask()
            self.message.emit(
                "The inpainting mask was not restored because its init image is not available."
            )
            return
        mask_path = Path(spec.image)
        if not mask_path.is_file():
            self._reset_mask()
            self.message.emit(
                f"The mask {mask_path.name} no longer exists, so the inpainting mask was not "
                "restored; paint it again."
            )
            return
        self._reset_mask()
        if not self._ensure_editor_image() or not self.mask_editor.load_mask_file(mask_path):
            return
        for name, editor in self.mask_editors.items():
            editor.set_value(getattr(spec, name))
        self._only_masked_touched = True

    # -- state -----------------------------------------------------------------------------
    def init_image(self) -> str | None:
        return str(self._path) if self._path else None

    def strength(self) -> float:
        return self.strength_slider.value() / 100.0

    def set_strength(self, value: float) -> None:
        self.strength_slider.setValue(round(max(0.01, min(1.0, value)) * 100))

    def image_size(self) -> tuple[int, int] | None:
        return self._size

    # -- mask ------------------------------------------------------------------------------
    def has_mask(self) -> bool:
        """Whether a mask is painted (on the current init image)."""
        return self._path is not None and self.mask_editor.has_mask()

    def mask_settings_values(self) -> dict[str, Any]:
        """The mask settings (``MaskSpec``'s fields but ``image``) by name."""
        return {name: editor.value_() for name, editor in self.mask_editors.items()}

    def mask_spec(self) -> MaskSpec | None:
        """The painted mask as a request part (its PNG saved under ``masks_dir()``), or None.

        If the PNG cannot be written, ``message`` says so and the part still names the file,
        so a generation fails on the missing mask instead of silently repainting everything.
        """
        if not self.has_mask():
            return None
        return MaskSpec(image=str(self._saved_mask()), **self.mask_settings_values())

    def is_painting(self) -> bool:
        return self.paint_button.isChecked()

    def set_painting(self, on: bool) -> None:
        """Show the mask editor instead of the thumbnail (needs an init image)."""
        on = bool(on) and self._ensure_editor_image()
        if self.paint_button.isChecked() != on:
            self.paint_button.setChecked(on)  # comes back here through toggled
            return
        self.drop_zone.show_editor(on)
        if on:
            self.mask_editor.view.setFocus(Qt.FocusReason.OtherFocusReason)
        else:
            self._show_thumbnail()

    def load_mask_file(self, path: str | Path) -> bool:
        """Use a mask file for the init image (the engine's rules; problems go to
        ``message``)."""
        if not self._ensure_editor_image():
            self.message.emit("Add an init image before loading a mask for it.")
            return False
        return self.mask_editor.load_mask_file(path)

    def mask_from_alpha(self) -> bool:
        """Repaint where the init image is transparent; False (with a message) if it is not."""
        if not self._ensure_editor_image():
            self.message.emit("Add an init image before taking a mask from it.")
            return False
        return self.mask_editor.mask_from_alpha()

    def _ensure_editor_image(self) -> bool:
        """Load the init image into the mask editor, at the size the engine reads it."""
        if self._path is None:
            return False
        if self._editor_path == self._path:
            return True
        reader = QImageReader(str(self._path))
        reader.setAutoTransform(True)
        image: QImage | None = reader.read()
        if image is None or image.isNull():
            image = self._read_with_pil(self._path)
            if image is None:
                return False
        if self._size is not None and (image.width(), image.height()) != self._size:
            image = image.scaled(
                QSize(*self._size),
                Qt.AspectRatioMode.IgnoreAspectRatio,
                Qt.TransformationMode.SmoothTransformation,
            )
        self.mask_editor.set_image(image)
        self._editor_path = self._path
        return True

    def _read_with_pil(self, path: Path) -> QImage | None:
        from desktop.engine.images import load_image
        from desktop.ui.qimage import pil_to_qimage

        try:
            return pil_to_qimage(load_image(path))
        except ImageError as exc:
            self.message.emit(str(exc))
            return None

    def _saved_mask(self) -> Path:
        """The mask's PNG, named by a hash of its pixels (identical masks share a file)."""
        if self._mask_file is not None and self._mask_file.is_file():
            return self._mask_file
        values = self.mask_editor.mask_array()
        assert values is not None
        height, width = values.shape
        digest = hashlib.sha256(f"{width}x{height}:".encode() + values.tobytes()).hexdigest()
        folder = masks_dir()
        target = folder / f"{digest[:32]}.png"
        if target.is_file():
            self._mask_file = target
            return target
        partial = folder / f"{digest[:32]}.{os.getpid()}.tmp"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            self.mask_editor.save_mask(partial)
            os.replace(partial, target)
        except (OSError, ImageError) as exc:
            partial.unlink(missing_ok=True)
            self.message.emit(f"The mask could not be saved in {folder} ({exc}).")
            return target
        self._mask_file = target
        return target

    def _reset_mask(self) -> None:
        """No mask and no mask history; "Only masked" goes back to automatic."""
        had = self.mask_editor.has_mask()
        if self._path is not None and self._editor_path == self._path:
            self.mask_editor.set_image(self.mask_editor.image())
        else:
            self.mask_editor.set_image(None)
            self._editor_path = None
        self._mask_file = None
        self._only_masked_touched = False
        if had:
            self._mask_updated()

    def _on_mask_edited(self) -> None:
        self._mask_file = None
        self._apply_only_masked_default()
        self._mask_updated()

    def _mask_updated(self) -> None:
        self._refresh()
        if not self.is_painting():
            self._show_thumbnail()
        self.mask_changed.emit()
        self.values_changed.emit()

    def _apply_only_masked_default(self) -> None:
        """ "Only masked" on for a small repaint (its box under ``ONLY_MASKED_AREA`` of the
        image), off for a large one, unless the user chose."""
        if self._only_masked_touched:
            return
        bounds = self.mask_editor.mask_bounds(MASK_VALUE_THRESHOLD)
        size = self.mask_editor.image_size()
        if bounds is None or size is None:
            return
        small = bounds.width() * bounds.height() < ONLY_MASKED_AREA * size[0] * size[1]
        self.mask_editors["only_masked"].set_value(small)

    def _only_masked_clicked(self) -> None:
        self._only_masked_touched = True

    def _show_thumbnail(self) -> None:
        if self._path is not None and self.has_mask():
            self.drop_zone.show_thumbnail(self.mask_editor.preview(QSize(THUMB, THUMB)))
        else:
            self.drop_zone.show_thumbnail(self._thumbnail if self._path is not None else None)

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
        """Use ``path`` as the init image; any mask is cleared (it belonged to the old one)."""
        path = Path(path)
        try:
            self._size = check_image(path)
        except ImageError as exc:
            self.message.emit(str(exc))
            return False
        self._path = path
        self._reset_mask()
        reader = QImageReader(str(path))
        reader.setAutoTransform(True)
        size = reader.size()
        if size.isValid():
            reader.setScaledSize(
                size.scaled(QSize(THUMB, THUMB), Qt.AspectRatioMode.KeepAspectRatio)
            )
        self._thumbnail = QPixmap.fromImage(reader.read())
        if self.is_painting():
            self.set_painting(self._ensure_editor_image())
        self._show_thumbnail()
        self._refresh()
        self.image_changed.emit(str(path))
        return True

    def clear(self) -> None:
        """Remove the init image (and its mask): back to text-to-image."""
        had = self._path is not None
        self._path = None
        self._size = None
        self._thumbnail = QPixmap()
        self.paint_button.setChecked(False)
        self._reset_mask()
        self._show_thumbnail()
        self._refresh()
        if had:
            self.image_changed.emit(None)

    def _open(self) -> None:
        name, _ = QFileDialog.getOpenFileName(self, "Choose an init image", "", IMAGE_FILTER)
        if name:
            self.set_image(name)

    def _open_mask(self) -> None:
        name, _ = QFileDialog.getOpenFileName(self, "Choose a mask image", "", IMAGE_FILTER)
        if name:
            self.load_mask_file(name)

    def _use_size(self) -> None:
        if self._size:
            self.use_size_requested.emit(*self._size)

    def _refresh(self) -> None:
        active = self._path is not None
        self.mode_label.setText(
            ("Mode: inpainting" if self.has_mask() else "Mode: image-to-image")
            if active
            else "Mode: text-to-image (drop an image to switch)"
        )
        self.path_label.setText(
            f"{self._path.name}  ·  {self._size[0]}×{self._size[1]}"
            if active and self._path is not None and self._size
            else ""
        )
        self.path_label.setToolTip(str(self._path) if active else "")
        self.strength_slider.setEnabled(active)
        self.use_size_button.setEnabled(active)
        self.clear_button.setEnabled(active)
        for button in (self.paint_button, self.load_mask_button, self.alpha_button):
            button.setEnabled(active)
        self.mask_settings.setVisible(self.has_mask())
