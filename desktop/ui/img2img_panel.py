"""img2img panel: a drop zone for the init image, denoising strength, an inpainting mask.

"Paint mask" turns the drop zone's thumbnail into a ``MaskEditor`` over the init image; the
painted mask is saved (named by its pixels) under ``data_dir()/masks`` and reported as the
request's ``mask``, with the mask settings edited below it. "Outpaint" grows the canvas per
side (pixels or a preset); the thumbnail shows the grown canvas, and the request's
``expand`` says how.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from PySide6.QtCore import QMimeData, QRect, QSize, Qt, Signal
from PySide6.QtGui import (
    QBrush,
    QColor,
    QDragEnterEvent,
    QDropEvent,
    QGuiApplication,
    QImage,
    QImageReader,
    QKeyEvent,
    QKeySequence,
    QPainter,
    QPen,
    QPixmap,
)
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QFrame,
    QGridLayout,
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
from desktop.engine.parts import EXPAND_SIDES, ExpandSpec, MaskSpec
from desktop.engine.schema import fields_of
from desktop.ui.fields import BoolEditor, Editor, SettingsPanel, changed_signal, make_editor
from desktop.ui.inputs import can_accept, check_image, image_from_mime
from desktop.ui.mask_editor import MaskEditor

THUMB = 220
#: The least height of the drop zone while the mask editor is in it (toolbars and view).
EDITOR_MIN_HEIGHT = 340
IMAGE_FILTER = "Images (*.png *.jpg *.jpeg *.webp *.bmp)"
#: "Only masked" defaults to on while the painted box covers less than this share of the image.
ONLY_MASKED_AREA = 0.5
#: Mask values from this one up are the repaint region (the engine's ``MASK_THRESHOLD``).
MASK_VALUE_THRESHOLD = 8


def _snap(value: float) -> int:
    return max(0, round(value / 8) * 8)


def _to_aspect(size: tuple[int, int], aspect: float) -> dict[str, int]:
    """Grow the shorter way, evenly on both sides, to reach ``aspect`` (w / h)."""
    width, height = size
    if width / height < aspect:
        extra = _snap(height * aspect - width)
        return {"left": _snap(extra / 2), "right": extra - _snap(extra / 2)}
    extra = _snap(width / aspect - height)
    return {"top": _snap(extra / 2), "bottom": extra - _snap(extra / 2)}


#: Outpainting presets: (label, the sides to add for an image of size (w, h)).
EXPAND_PRESETS: tuple[tuple[str, Any], ...] = (
    ("Every side +64 px", lambda size: dict.fromkeys(EXPAND_SIDES, 64)),
    ("Every side +128 px", lambda size: dict.fromkeys(EXPAND_SIDES, 128)),
    ("Left +50%", lambda size: {"left": _snap(size[0] / 2)}),
    ("Right +50%", lambda size: {"right": _snap(size[0] / 2)}),
    ("Top +50%", lambda size: {"top": _snap(size[1] / 2)}),
    ("Bottom +50%", lambda size: {"bottom": _snap(size[1] / 2)}),
    ("Wide 16:9", lambda size: _to_aspect(size, 16 / 9)),
    ("Tall 9:16", lambda size: _to_aspect(size, 9 / 16)),
    ("Square", lambda size: _to_aspect(size, 1.0)),
)


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
    CUSTOM = frozenset({"init_image", "strength", "mask", "expand"})

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

        self.expand_settings = QGroupBox("Outpaint")
        self.expand_settings.setObjectName("OutpaintSettings")
        self.expand_settings.setCheckable(True)
        self.expand_settings.setChecked(False)
        self.expand_settings.setToolTip(
            "Grow the picture past its edges and paint the new part (set the strength near 1)"
        )
        # The settings show only while outpainting is on: the mask editor keeps the room.
        self.expand_body = QWidget(self.expand_settings)
        box_layout = QVBoxLayout(self.expand_settings)
        box_layout.setContentsMargins(0, 0, 0, 0)
        box_layout.addWidget(self.expand_body)
        self.expand_body.setVisible(False)
        expand_form = QFormLayout(self.expand_body)
        expand_form.setContentsMargins(6, 6, 6, 6)
        self.expand_preset = QComboBox()
        self.expand_preset.setObjectName("OutpaintPreset")
        self.expand_preset.addItem("Preset…")
        for name, _ in EXPAND_PRESETS:
            self.expand_preset.addItem(name)
        expand_form.addRow("Preset", self.expand_preset)
        self.expand_editors: dict[str, Editor] = {}
        # Two sides a row, so the dock is no wider with outpainting on than off.
        sides = QGridLayout()
        sides.setHorizontalSpacing(4)
        for info in fields_of(ExpandSpec):
            editor = make_editor(info, self.expand_body)
            editor.setObjectName(f"expand_{info.name}_editor")
            changed_signal(editor).connect(lambda *_: self._expand_changed())
            self.expand_editors[info.name] = editor
            if info.name in EXPAND_SIDES:
                editor.setToolTip(info.spec.help)
                editor.setMinimumWidth(0)
                row, column = divmod(EXPAND_SIDES.index(info.name), 2)
                sides.addWidget(QLabel(info.name.capitalize()), row, column * 2)
                sides.addWidget(editor, row, column * 2 + 1)
                sides.setColumnStretch(column * 2 + 1, 1)
                continue
            if isinstance(editor, QComboBox):
                editor.setSizeAdjustPolicy(
                    QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
                )
                editor.setMinimumContentsLength(6)
            expand_form.addRow(info.label, editor)
            if info.name == "fill":
                expand_form.insertRow(1, sides)
        layout.addWidget(self.expand_settings)

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
        self.expand_settings.toggled.connect(lambda *_: self._expand_changed())
        self.expand_preset.activated.connect(self._apply_expand_preset)
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
            "expand": self.expand_spec(),
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
        if "expand" in values:
            self.set_expand(values["expand"])

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

    # -- outpainting -----------------------------------------------------------------------
    def expand_spec(self) -> ExpandSpec | None:
        """How to grow the canvas, or None (outpainting off, no init image or no side)."""
        if self._path is None or not self.expand_settings.isChecked():
            return None
        values = {name: editor.value_() for name, editor in self.expand_editors.items()}
        if not any(values[side] for side in EXPAND_SIDES):
            return None
        return ExpandSpec(**values)

    def set_expand(self, spec: ExpandSpec | Mapping[str, Any] | None) -> None:
        """Show a request's outpainting (None turns it off)."""
        if isinstance(spec, Mapping):
            try:
                spec = ExpandSpec(**spec)
            except (RequestError, TypeError) as exc:
                self.message.emit(f"The outpainting settings could not be restored: {exc}")
                spec = None
        with _signals_blocked(self.expand_settings, *self.expand_editors.values()):
            self.expand_settings.setChecked(spec is not None)
            for name, editor in self.expand_editors.items():
                default = next(i.default for i in fields_of(ExpandSpec) if i.name == name)
                editor.set_value(getattr(spec, name) if spec is not None else default)
        self._expand_changed()

    def canvas_size(self) -> tuple[int, int] | None:
        """The size of the picture a job makes: the init image grown by the outpainting."""
        if self._size is None:
            return None
        spec = self.expand_spec()
        if spec is None:
            return self._size
        left, top, right, bottom = spec.sides()
        return self._size[0] + left + right, self._size[1] + top + bottom

    def _apply_expand_preset(self, index: int) -> None:
        self.expand_preset.setCurrentIndex(0)
        if index < 1 or self._size is None:
            return
        _, sides = EXPAND_PRESETS[index - 1]
        chosen = sides(self._size)
        with _signals_blocked(*self.expand_editors.values()):
            for side in EXPAND_SIDES:
                self.expand_editors[side].set_value(chosen.get(side, 0))
        if not self.expand_settings.isChecked():
            self.expand_settings.setChecked(True)  # comes to _expand_changed through toggled
        else:
            self._expand_changed()

    def _expand_changed(self) -> None:
        self.expand_body.setVisible(self.expand_settings.isChecked())
        self._refresh()
        if not self.is_painting():
            self._show_thumbnail()
        self.values_changed.emit()

    def is_painting(self) -> bool:
        return self.paint_button.isChecked()

    def set_painting(self, on: bool) -> None:
        """Show the mask editor instead of the thumbnail (needs an init image)."""
        on = bool(on) and self._ensure_editor_image()
        if self.paint_button.isChecked() != on:
            self.paint_button.setChecked(on)  # comes back here through toggled
            return
        self.drop_zone.show_editor(on)
        # Room to paint: the dock grows (the docks beside it give way) while the editor shows.
        self.drop_zone.setMinimumHeight(EDITOR_MIN_HEIGHT if on else 0)
        self._refresh()
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
        if self._path is None:
            self.drop_zone.show_thumbnail(None)
            return
        picture = (
            self.mask_editor.preview(QSize(THUMB, THUMB)) if self.has_mask() else self._thumbnail
        )
        spec = self.expand_spec()
        if spec is not None and self._size is not None and not picture.isNull():
            picture = _grown_thumbnail(picture, self._size, spec)
        self.drop_zone.show_thumbnail(picture)

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
        grown = self.expand_spec() is not None
        if not active:
            mode = "text-to-image (drop an image to switch)"
        elif grown:
            mode = "outpainting + inpainting" if self.has_mask() else "outpainting"
        else:
            mode = "inpainting" if self.has_mask() else "image-to-image"
        self.mode_label.setText(f"Mode: {mode}")
        size_text = ""
        if active and self._path is not None and self._size:
            size_text = f"{self._path.name}  ·  {self._size[0]}×{self._size[1]}"
            canvas = self.canvas_size()
            if grown and canvas is not None:
                size_text += f" → {canvas[0]}×{canvas[1]}"
        self.path_label.setText(size_text)
        self.path_label.setToolTip(str(self._path) if active else "")
        self.strength_slider.setEnabled(active)
        self.use_size_button.setEnabled(active)
        self.clear_button.setEnabled(active)
        for button in (self.paint_button, self.load_mask_button, self.alpha_button):
            button.setEnabled(active)
        # Shown from the moment painting starts, so the first stroke does not move the view.
        self.mask_settings.setVisible(self.has_mask() or (active and self.is_painting()))
        self.expand_settings.setEnabled(active)


class _signals_blocked:
    """Block the widgets' signals for a ``with`` block (several at once)."""

    def __init__(self, *widgets: QWidget) -> None:
        self.widgets = widgets
        self.previous: list[bool] = []

    def __enter__(self) -> None:
        self.previous = [w.blockSignals(True) for w in self.widgets]

    def __exit__(self, *exc: object) -> None:
        for widget, was in zip(self.widgets, self.previous, strict=True):
            widget.blockSignals(was)


def _grown_thumbnail(picture: QPixmap, size: tuple[int, int], spec: ExpandSpec) -> QPixmap:
    """``picture`` (the init image's thumbnail) on the grown canvas, the new part hatched."""
    left, top, right, bottom = spec.sides()
    canvas = (size[0] + left + right, size[1] + top + bottom)
    scale = min(THUMB / canvas[0], THUMB / canvas[1])
    out = QPixmap(max(1, round(canvas[0] * scale)), max(1, round(canvas[1] * scale)))
    out.fill(QColor(70, 76, 88))
    painter = QPainter(out)
    painter.fillRect(out.rect(), QBrush(QColor(120, 128, 142), Qt.BrushStyle.BDiagPattern))
    target = QRect(
        round(left * scale), round(top * scale), round(size[0] * scale), round(size[1] * scale)
    )
    painter.drawPixmap(target, picture)
    painter.setPen(QPen(QColor(230, 180, 60), 1, Qt.PenStyle.DashLine))
    painter.drawRect(target.adjusted(0, 0, -1, -1))
    painter.end()
    return out
