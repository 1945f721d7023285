"""The control layers panel: ControlNet units, each guided by an image.

Like krita-ai-diffusion's control layers and AUTOMATIC1111's ControlNet units: a list of
layers, each with a control type (``CONTROL_TYPES``), an image (dropped, pasted, opened or
drawn on a ``SketchPad``), a ControlNet model and the strength / start / end / resize
settings. The settings' editors are built from ``ControlUnit``'s declarations with
``make_editor``, so a setting added to the part appears here with no change.

The model picker lists the installed ControlNets (``list_controlnets``). Its first entry is
the automatic choice (a request's ``model`` ""), named after the one ``suggest`` picks for
the layer's type and the window's model family ("Suggested: control_v11p_sd15_canny");
files that cannot be used are listed disabled with their problem as tooltip.

Each layer shows what the ControlNet will see: ``control_images.preprocess`` of its image,
computed off the GUI thread by a ``TaskRunner`` and delivered as a ``QImage``; a failure is
shown as text on the layer, never raised. Drawings are saved as PNGs named by their pixels
under ``data_dir()/controls``.

``values()`` gives ``{"controls": (ControlUnit, ...)}`` for the layers that are on and have
an image; ``set_values`` restores layers from a request (a layer whose image is gone is left
out, and ``message`` says so).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from PySide6.QtCore import QByteArray, QMimeData, QSize, Qt, Signal
from PySide6.QtGui import (
    QDragEnterEvent,
    QDragLeaveEvent,
    QDropEvent,
    QGuiApplication,
    QImage,
    QImageReader,
    QImageWriter,
    QKeyEvent,
    QKeySequence,
    QPixmap,
)
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QFileDialog,
    QFormLayout,
    QFrame,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from desktop.engine import paths
from desktop.engine.control_images import describe, preprocess
from desktop.engine.controlnet import ControlNetFile, list_controlnets, suggest
from desktop.engine.errors import ImageError, RequestError
from desktop.engine.model_folders import folders_for
from desktop.engine.models import FAMILY_LABELS
from desktop.engine.parts import CONTROL_TYPES, ControlUnit
from desktop.engine.schema import FieldInfo, fields_of
from desktop.ui.fields import Editor, SettingsPanel, changed_signal, make_editor
from desktop.ui.icons import icon
from desktop.ui.inputs import can_accept, check_image, image_from_mime
from desktop.ui.part_list import (
    ModelPicker,
    PickerEntry,
    build_card_list,
    part_from,
    sentence,
    show_hint,
    take_card,
)
from desktop.ui.qimage import pil_to_qimage
from desktop.ui.sketch_pad import DEFAULT_SIZE, SketchDialog, image_digest
from desktop.ui.tasks import Task, TaskRunner

log = logging.getLogger(__name__)

#: Side of the image and preview thumbnails of a layer.
THUMB = 112
IMAGE_FILTER = "Images (*.png *.jpg *.jpeg *.webp *.bmp)"
#: The control type a new layer gets.
DEFAULT_TYPE = "scribble"
#: A drawing made for an image is at most this many pixels on its longer side.
MAX_DRAWING_SIDE = 2048
#: The ``ControlUnit`` settings edited by hand-made widgets (the rest are generated).
_CUSTOM_FIELDS = frozenset({"image", "model"})
_SLOT_STYLE = """
#ControlImageSlot { background: #1a1b20; border: 2px dashed #50525e; border-radius: 8px; }
#ControlImageSlot:focus { border-color: #8a6a3e; }
#ControlImageSlot[dragging="true"] { border-color: #e0a458; background: #2a2620; }
"""


def controls_dir() -> Path:
    """Where drawn control images are kept, one PNG per distinct drawing."""
    return paths.data_dir() / "controls"


def save_drawing(image: QImage) -> Path:
    """Write a drawing under ``controls_dir()`` as a PNG named by a sha256 of its pixels
    (the same drawing twice gives one file) and return its path.

    Raises:
        ImageError: the image is empty or the file cannot be written.
    """
    if image.isNull():
        raise ImageError("There is no drawing to save.")
    folder = controls_dir()
    name = image_digest(image)[:32]
    target = folder / f"{name}.png"
    if target.is_file():
        return target
    partial = folder / f"{name}.{os.getpid()}.tmp"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        writer = QImageWriter(str(partial), QByteArray(b"PNG"))
        if not writer.write(image):
            raise ImageError(
                f"The drawing could not be saved in {folder} ({writer.errorString()})."
            )
        os.replace(partial, target)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise ImageError(
            f"The drawing could not be saved in {folder} ({exc.strerror or exc})."
        ) from exc
    except ImageError:
        partial.unlink(missing_ok=True)
        raise
    return target


def make_preview(kind: str, path: str, thumb: int = THUMB) -> tuple[QImage, QImage]:
    """(the control image ``preprocess`` makes of the file at ``path``, a thumbnail of it).

    Runs on a worker thread: only ``QImage`` (never ``QPixmap``) is made here.

    Raises:
        ImageError: the file cannot be read.
        RequestError: ``kind`` is not a control type.
    """
    from desktop.engine.images import load_image

    result = pil_to_qimage(preprocess(kind, load_image(path)))
    small = result.scaled(
        thumb,
        thumb,
        Qt.AspectRatioMode.KeepAspectRatio,
        Qt.TransformationMode.SmoothTransformation,
    )
    return result, small


def family_label(family: str) -> str:
    """A model family as the window names it ("SD1.5", "SDXL", ...)."""
    return FAMILY_LABELS.get(family, family.upper() if family else "unknown")


def _short_label(info: FieldInfo) -> str:
    """A declaration's label without the "Control " every one of them starts with."""
    label = info.label
    if label.startswith("Control "):
        label = label.removeprefix("Control ")
        label = label[:1].upper() + label[1:]
    return label


def compact_combo(combo: QComboBox) -> None:
    # Not as wide as its longest entry: the dock stays as narrow as the other panels.
    combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
    combo.setMinimumContentsLength(8)


class ImageSlot(QFrame):
    """Takes an image by drag and drop or paste (Ctrl+V when focused); shows a thumbnail.

    Signals:
        image_dropped(object): the mime data of a drop or paste, for the layer to resolve.
    """

    image_dropped = Signal(object)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("ControlImageSlot")
        self.setAcceptDrops(True)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setFixedSize(THUMB + 12, THUMB + 12)
        self.setStyleSheet(_SLOT_STYLE)
        self.setToolTip(
            "Drop the control image here (a file, or an image from a browser or the "
            "gallery), or click and press Ctrl+V to paste one."
        )
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        self.label = QLabel()
        self.label.setObjectName("ControlImageLabel")
        self.label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.label.setWordWrap(True)
        self.label.setStyleSheet("color: #9a9ca8;")
        layout.addWidget(self.label)
        self.setProperty("dragging", False)
        self.show_thumbnail(None)

    def show_thumbnail(self, pixmap: QPixmap | None) -> None:
        if pixmap is None or pixmap.isNull():
            self.label.setPixmap(QPixmap())
            self.label.setText("Drop, paste\nor draw an\nimage")
        else:
            self.label.setPixmap(pixmap)

    def has_thumbnail(self) -> bool:
        pixmap = self.label.pixmap()
        return pixmap is not None and not pixmap.isNull()

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

    def dragLeaveEvent(self, event: QDragLeaveEvent) -> None:
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


class ControlLayer(QFrame):
    """One control layer: type, image, model, settings and the preprocessed preview.

    Signals:
        changed(): a value of the layer changed (by the user or by a ``set_…`` call).
        remove_requested(): its remove button was clicked (the panel removes it).
        preview_ready(QImage): the preprocessed control image at the image's size.
        preview_failed(str): why no preview could be made (also shown on the layer).
        message(str): a problem to show the user (a non-image drop, an unreadable file).
    """

    changed = Signal()
    remove_requested = Signal()
    preview_ready = Signal(QImage)
    preview_failed = Signal(str)
    message = Signal(str)

    def __init__(
        self,
        runner: TaskRunner,
        control_type: str = DEFAULT_TYPE,
        models: Sequence[ControlNetFile] = (),
        family: str = "",
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setObjectName("ControlLayer")
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self._runner = runner
        self._models: list[ControlNetFile] = list(models)
        self._family = family
        self._path: Path | None = None
        self._size: tuple[int, int] | None = None
        self._task: Task | None = None
        self._preview_key: tuple[str, str] | None = None
        self._preview_size: tuple[int, int] | None = None
        self._preview_error = ""
        self._quiet = 0  # > 0 while set_unit fills the editors: one "changed" at the end
        self._last_type = ""
        self.drawing_size: tuple[int, int] = DEFAULT_SIZE
        self._build()
        self.set_control_type(control_type)
        self._last_type = self.control_type()
        self._rebuild_models()
        self._show_image()

    # -- construction ----------------------------------------------------------------------
    def _build(self) -> None:
        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 6, 8, 8)
        layout.setSpacing(4)
        infos = {info.name: info for info in fields_of(ControlUnit)}

        header = QHBoxLayout()
        self.active_box = QCheckBox()
        self.active_box.setObjectName("ControlLayerActive")
        self.active_box.setChecked(True)
        self.active_box.setToolTip("Use this layer (off: it stays here but guides nothing)")
        self.title_label = QLabel("Control layer")
        self.title_label.setObjectName("ControlLayerTitle")
        self.title_label.setStyleSheet("font-weight: bold;")
        self.editors: dict[str, Editor] = {}
        type_editor = make_editor(infos["type"], self)
        type_editor.setObjectName("ControlType")
        if isinstance(type_editor, QComboBox):
            compact_combo(type_editor)
        self.editors["type"] = type_editor
        self.remove_button = QToolButton()
        self.remove_button.setObjectName("RemoveControlLayer")
        self.remove_button.setIcon(icon("close"))
        self.remove_button.setText("Remove")
        self.remove_button.setToolTip("Remove this control layer")
        header.addWidget(self.active_box)
        header.addWidget(self.title_label)
        header.addStretch(1)
        header.addWidget(type_editor)
        header.addWidget(self.remove_button)
        layout.addLayout(header)

        pictures = QHBoxLayout()
        self.slot = ImageSlot(self)
        self.preview_label = QLabel()
        self.preview_label.setObjectName("ControlPreview")
        self.preview_label.setFixedSize(THUMB + 12, THUMB + 12)
        self.preview_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.preview_label.setWordWrap(True)
        self.preview_label.setTextFormat(Qt.TextFormat.PlainText)
        self.preview_label.setToolTip("What the ControlNet sees: the preprocessed image")
        self.preview_label.setStyleSheet(
            "#ControlPreview { background: #1a1b20; border: 1px solid #50525e; "
            "border-radius: 8px; color: #9a9ca8; }"
        )
        pictures.addWidget(self.slot)
        pictures.addWidget(self.preview_label)
        pictures.addStretch(1)
        layout.addLayout(pictures)

        self.path_label = QLabel()
        self.path_label.setObjectName("ControlImagePath")
        self.path_label.setTextFormat(Qt.TextFormat.PlainText)
        self.path_label.setWordWrap(True)
        layout.addWidget(self.path_label)

        buttons = QHBoxLayout()
        self.open_button = QPushButton("Open…")
        self.open_button.setToolTip("Choose the control image file")
        self.paste_button = QPushButton("Paste")
        self.paste_button.setToolTip("Use the image on the clipboard")
        self.draw_button = QPushButton("Draw…")
        self.draw_button.setObjectName("DrawControlImage")
        self.draw_button.setToolTip("Draw the control image on a sketch pad (for scribble)")
        self.clear_button = QPushButton("Clear")
        self.clear_button.setToolTip("Remove the image (the layer stays)")
        for button in (self.open_button, self.paste_button, self.draw_button, self.clear_button):
            button.setStyleSheet("QPushButton { padding-left: 6px; padding-right: 6px; }")
            buttons.addWidget(button)
        layout.addLayout(buttons)

        form = QFormLayout()
        form.setContentsMargins(0, 2, 0, 0)
        self.model_combo = QComboBox()
        self.model_combo.setObjectName("ControlModel")
        compact_combo(self.model_combo)
        self.picker = ModelPicker(self.model_combo, "ControlNet", "models/controlnet")
        form.addRow("Model", self.model_combo)
        for info in fields_of(ControlUnit):
            if info.name in _CUSTOM_FIELDS or info.name in self.editors:
                continue
            editor = make_editor(info, self)
            editor.setObjectName(f"control_{info.name}_editor")
            if isinstance(editor, QComboBox):
                compact_combo(editor)
            changed_signal(editor).connect(lambda *_, name=info.name: self._setting_changed(name))
            self.editors[info.name] = editor
            form.addRow(_short_label(info), editor)
        layout.addLayout(form)

        self.note_label = QLabel()
        self.note_label.setObjectName("ControlNote")
        self.note_label.setWordWrap(True)
        self.note_label.setTextFormat(Qt.TextFormat.PlainText)
        self.note_label.setStyleSheet("color: #9a9ca8;")
        layout.addWidget(self.note_label)

        changed_signal(type_editor).connect(lambda *_: self._type_changed())
        self.active_box.toggled.connect(lambda *_: self._emit_changed())
        self.model_combo.currentIndexChanged.connect(lambda *_: self._model_changed())
        self.remove_button.clicked.connect(self.remove_requested.emit)
        self.slot.image_dropped.connect(self.accept_mime)
        self.paste_button.clicked.connect(self.slot.paste)
        self.open_button.clicked.connect(self._open)
        self.draw_button.clicked.connect(self.draw)
        self.clear_button.clicked.connect(self.clear_image)

    # -- values ----------------------------------------------------------------------------
    def control_type(self) -> str:
        return str(self.editors["type"].value_())

    def set_control_type(self, control_type: str) -> None:
        if control_type not in CONTROL_TYPES:
            raise ValueError(
                f"unknown control type {control_type!r}; use one of {', '.join(CONTROL_TYPES)}"
            )
        self.editors["type"].set_value(control_type)

    def is_active(self) -> bool:
        """Whether the layer is on (an off layer is kept but left out of ``unit()``)."""
        return self.active_box.isChecked()

    def set_active(self, on: bool) -> None:
        self.active_box.setChecked(bool(on))

    def image_path(self) -> Path | None:
        return self._path

    def image_size(self) -> tuple[int, int] | None:
        return self._size

    def model_name(self) -> str:
        """The chosen model's name; "" for the automatic (suggested) one."""
        return self.picker.name()

    def set_model_name(self, name: str) -> None:
        """Choose the model ``name`` ("" for the suggested one); one not installed is added
        to the picker as such, so a restored request keeps naming it."""
        self.picker.select(name)

    def suggested(self) -> ControlNetFile | None:
        """The ControlNet the automatic choice uses for this layer's type and the family."""
        return suggest(self.control_type(), self._family, self._models)

    def settings_values(self) -> dict[str, Any]:
        """The generated editors' values by ``ControlUnit`` field name (type included)."""
        return {name: editor.value_() for name, editor in self.editors.items()}

    def unit(self) -> ControlUnit | None:
        """The layer as a request part; None while it is off or has no image."""
        if not self.is_active() or self._path is None:
            return None
        try:
            return ControlUnit(
                image=str(self._path), model=self.model_name(), **self.settings_values()
            )
        except RequestError as exc:  # the editors keep the values valid; a guard only
            log.warning("control layer left out of the request: %s", exc)
            return None

    def set_unit(self, unit: ControlUnit) -> bool:
        """Show a request's control unit; False (with a ``message``) when its image cannot
        be read, in which case the layer keeps no image."""
        self._quiet += 1
        try:
            self.set_control_type(unit.type)
            for name, editor in self.editors.items():
                if name != "type":
                    editor.set_value(getattr(unit, name))
            self.set_model_name(unit.model)
            self.set_active(True)
            ok = self.set_image(unit.image)
        finally:
            self._quiet -= 1
        self._emit_changed()
        return ok

    # -- the image -------------------------------------------------------------------------
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
        """Use the file at ``path`` as the control image (False, with a message, when it
        cannot be read; the image shown before stays)."""
        path = Path(path)
        try:
            size = check_image(path)
        except ImageError as exc:
            self.message.emit(str(exc))
            return False
        self._path, self._size = path, size
        self._show_image()
        self._emit_changed()
        self.request_preview()
        return True

    def clear_image(self) -> None:
        """Remove the image; the layer stays (and is left out of the request)."""
        if self._path is None:
            return
        self._path = self._size = None
        self._show_image()
        self._emit_changed()
        self.request_preview()

    def use_drawing(self, image: QImage) -> bool:
        """Save a drawing under ``controls_dir()`` and use it as the image."""
        try:
            path = save_drawing(image)
        except ImageError as exc:
            self.message.emit(str(exc))
            return False
        return self.set_image(path)

    def draw(self) -> bool:
        """Open the sketch pad; "Use drawing" makes the drawing the layer's image.

        A drawing made here before is opened again to go on with it; otherwise the page
        has the image's size (at most ``MAX_DRAWING_SIDE``) or ``drawing_size``.
        """
        start: QImage | None = None
        size = self.drawing_size
        if self._path is not None and self._size is not None:
            if self._path.parent == controls_dir():
                reader = QImageReader(str(self._path))
                read = reader.read()
                start = read if not read.isNull() else None
            scale = min(1.0, MAX_DRAWING_SIDE / max(self._size))
            size = (max(1, round(self._size[0] * scale)), max(1, round(self._size[1] * scale)))
        dialog = SketchDialog(size, start, self.window())
        try:
            if dialog.exec() != int(QDialog.DialogCode.Accepted):
                return False
            if dialog.pad.is_blank():
                self.message.emit("The drawing is empty, so the layer's image was left as it was.")
                return False
            return self.use_drawing(dialog.image())
        finally:
            dialog.deleteLater()

    def _open(self) -> None:
        name, _ = QFileDialog.getOpenFileName(self, "Choose a control image", "", IMAGE_FILTER)
        if name:
            self.set_image(name)

    def _show_image(self) -> None:
        if self._path is None:
            self.slot.show_thumbnail(None)
            self.path_label.setText("No image: the layer is not used yet")
            self.path_label.setToolTip("")
        else:
            reader = QImageReader(str(self._path))
            reader.setAutoTransform(True)
            size = reader.size()
            if size.isValid():
                reader.setScaledSize(
                    size.scaled(QSize(THUMB, THUMB), Qt.AspectRatioMode.KeepAspectRatio)
                )
            self.slot.show_thumbnail(QPixmap.fromImage(reader.read()))
            width, height = self._size or (0, 0)
            self.path_label.setText(f"{self._path.name}  ·  {width}×{height}")
            self.path_label.setToolTip(str(self._path))
        self.clear_button.setEnabled(self._path is not None)

    # -- the preview -----------------------------------------------------------------------
    def request_preview(self) -> None:
        """Make the preprocessed preview of the image (off the GUI thread) if it changed."""
        if self._quiet:
            return
        if self._path is None:
            self._cancel_preview()
            self._preview_key = None
            self._preview_size = None
            self._preview_error = ""
            self.preview_label.setPixmap(QPixmap())
            self.preview_label.setText("Preview")
            return
        key = (self.control_type(), str(self._path))
        if key == self._preview_key:
            return
        self._cancel_preview()
        self._preview_key = key
        self._preview_error = ""
        self.preview_label.setPixmap(QPixmap())
        self.preview_label.setText("Preprocessing…")
        try:
            self._task = self._runner.submit(
                make_preview,
                *key,
                on_result=lambda result, key=key: self._on_preview(key, result),
                on_error=lambda exc, key=key: self._on_preview_error(key, exc),
                name="control preview",
            )
        except RuntimeError:  # the panel is shutting down
            self._task = None

    def _cancel_preview(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    def _on_preview(self, key: tuple[str, str], result: tuple[QImage, QImage]) -> None:
        if key != self._preview_key:
            return
        self._task = None
        full, small = result
        self._preview_size = (full.width(), full.height())
        self.preview_label.setText("")
        self.preview_label.setPixmap(QPixmap.fromImage(small))
        self.preview_ready.emit(full)

    def _on_preview_error(self, key: tuple[str, str], exc: BaseException) -> None:
        if key != self._preview_key:
            return
        self._task = None
        if isinstance(exc, (ImageError, RequestError)):
            text = str(exc)
        else:
            log.warning("control preview failed", exc_info=exc)
            text = f"The preview could not be made: {exc}"
        self._preview_error = sentence(text)
        self._preview_size = None
        self.preview_label.setPixmap(QPixmap())
        self.preview_label.setText(self._preview_error)
        self.preview_failed.emit(self._preview_error)

    def has_preview(self) -> bool:
        """Whether the preview thumbnail of the current type and image is shown."""
        pixmap = self.preview_label.pixmap()
        return pixmap is not None and not pixmap.isNull()

    def preview_size(self) -> tuple[int, int] | None:
        """The size of the last preprocessed image (the image's size), or None."""
        return self._preview_size

    def preview_error(self) -> str:
        return self._preview_error

    def preview_pending(self) -> bool:
        return self._task is not None

    def shutdown(self) -> None:
        """Drop a preview under way (the panel's runner stops the thread)."""
        self._cancel_preview()

    # -- models ----------------------------------------------------------------------------
    def set_models(self, models: Sequence[ControlNetFile], family: str) -> None:
        """The installed ControlNets and the model family: re-suggest, keep the choice."""
        self._models = list(models)
        self._family = family
        self._rebuild_models()

    def _family_problem(self, item: ControlNetFile) -> str:
        base = self._family.removesuffix("-inpaint")
        if not base or not item.family or item.family == base:
            return ""
        return (
            f"it is made for {family_label(item.family)} models, and the model is "
            f"{family_label(self._family)}"
        )

    def _rebuild_models(self) -> None:
        pick = self.suggested()
        entries = []
        for item in self._models:
            problem = item.problem or self._family_problem(item)
            family = family_label(item.family) if item.family else ""
            details = ", ".join(t for t in (family, item.control_type) if t)
            tip = sentence(problem) if problem else f"{details}\n{item.path}".strip()
            entries.append(PickerEntry(item.name, tip, not item.problem))
        suggested = (
            (pick.name, f"The {self.control_type()} ControlNet for this model: {pick.path}")
            if pick is not None
            else None
        )
        self.picker.rebuild(suggested, self._no_suggestion_text(), entries)
        self._show_note()

    def _no_suggestion_text(self) -> str:
        kind = self.control_type()
        if not self._family:
            return "Pick a model first: the ControlNet is suggested for the model's family."
        return (
            f"No {kind} ControlNet for {family_label(self._family)} models is installed; "
            "put one in models/controlnet and refresh, or pick one below."
        )

    def _show_note(self) -> None:
        """What the user should know about the layer's model and type (or nothing)."""
        self.picker.update_tooltip()
        notes: list[str] = []
        name = self.model_name()
        if name:
            item = next((m for m in self._models if m.name.casefold() == name.casefold()), None)
            if item is None:
                notes.append(f"The ControlNet {name} is not installed.")
            elif item.problem or self._family_problem(item):
                notes.append(f"{item.name}: {sentence(item.problem or self._family_problem(item))}")
        elif self.suggested() is None:
            notes.append(self._no_suggestion_text())
        about = describe(self.control_type())
        if about.get("needs_mask"):
            notes.append("Inpaint control: the img2img mask marks the part to repaint.")
        if not about.get("preprocessed"):
            notes.append("The image is used as it is (a depth, pose or normal map).")
        self.note_label.setText("\n".join(notes))
        self.note_label.setVisible(bool(notes))

    # -- changes ---------------------------------------------------------------------------
    def _type_changed(self) -> None:
        if self.control_type() == self._last_type:
            return
        self._last_type = self.control_type()
        self._rebuild_models()
        self.request_preview()
        self._emit_changed()

    def _model_changed(self) -> None:
        self._show_note()
        self._emit_changed()

    def _setting_changed(self, name: str) -> None:
        """Keep start before end (a request refuses otherwise), then report the change."""
        if name in ("start", "end"):
            start, end = self.editors["start"], self.editors["end"]
            step = 0.05
            if float(start.value_()) >= float(end.value_()):
                blocked = [start.blockSignals(True), end.blockSignals(True)]
                if name == "start":
                    end.set_value(min(1.0, float(start.value_()) + step))
                    if float(start.value_()) >= float(end.value_()):
                        start.set_value(float(end.value_()) - step)
                else:
                    start.set_value(max(0.0, float(end.value_()) - step))
                    if float(start.value_()) >= float(end.value_()):
                        end.set_value(float(start.value_()) + step)
                start.blockSignals(blocked[0])
                end.blockSignals(blocked[1])
        self._emit_changed()

    def _emit_changed(self) -> None:
        if not self._quiet:
            self.changed.emit()


class ControlPanel(SettingsPanel):
    """Control layers (ControlNet units): ``values()`` gives the request's ``controls``.

    Signals:
        values_changed(): a layer was added, removed or changed.
        message(str): a problem to show the user (a bad drop, a layer not restored, ...).
        preview_ready(object, QImage): a layer's preprocessed image is ready.
        layers_changed(int): layers were added or removed (how many there are).
        models_changed(int): the ControlNets were listed again (how many there are).
    """

    message = Signal(str)
    preview_ready = Signal(object, QImage)
    layers_changed = Signal(int)
    models_changed = Signal(int)

    PANEL = "controls"
    CUSTOM = frozenset({"controls"})

    def __init__(
        self,
        extra_sources: Sequence[Path | str] = (),
        family: str = "",
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setObjectName("ControlPanel")
        self.extra_sources: list[Path | str] = list(extra_sources)
        self._family = family
        self._models: list[ControlNetFile] = []
        self._layers: list[ControlLayer] = []
        self._drawing_size: tuple[int, int] = DEFAULT_SIZE
        self._restoring = False
        self.runner = TaskRunner(parent=self)
        self._build()
        self.refresh_models()
        self._show_hint()

    def _build(self) -> None:
        frame = build_card_list(
            self,
            "Add control layer",
            "Guide the picture with an image: edges (canny), a scribble, line art, a tile, "
            "or a depth / pose map",
            "List the ControlNet folders again",
            ("AddControlLayer", "RefreshControlNets", "ControlHint", "ControlLayers"),
        )
        layout = frame.layout
        self.add_button, self.refresh_button = frame.add_button, frame.refresh_button
        self.hint_label, self.scroll = frame.hint_label, frame.scroll
        self.layers_layout = frame.cards_layout

        # Settings declared for this panel later get generic editors here.
        extra = QFormLayout()
        self.add_generic_editors(extra)
        layout.addLayout(extra)

        self.add_button.clicked.connect(lambda: self.add_layer())
        self.refresh_button.clicked.connect(self.refresh_models)

    # -- models ----------------------------------------------------------------------------
    def family(self) -> str:
        return self._family

    def set_family(self, family: str) -> None:
        """The window's model family ("sd1", "sdxl", ...): every layer re-suggests a model."""
        if family == self._family:
            return
        self._family = family
        for layer in self._layers:
            layer.set_models(self._models, family)
        self._show_hint()

    def set_extra_sources(self, extra_sources: Iterable[Path | str]) -> None:
        """Search these ComfyUI / AUTOMATIC1111 installs too (the settings changed)."""
        self.extra_sources = list(extra_sources)
        self.refresh_models()

    def refresh_models(self) -> list[ControlNetFile]:
        """List the ControlNet folders again; each layer keeps its choice."""
        self._models = list_controlnets(self.extra_sources)
        for layer in self._layers:
            layer.set_models(self._models, self._family)
        self._show_hint()
        self.models_changed.emit(len(self._models))
        return list(self._models)

    def models(self) -> list[ControlNetFile]:
        """The ControlNets listed by the last refresh (usable or not)."""
        return list(self._models)

    def set_drawing_size(self, width: int, height: int) -> None:
        """The page size of new drawings (e.g. the picture's size); 512×512 by default."""
        self._drawing_size = (max(1, int(width)), max(1, int(height)))
        for layer in self._layers:
            layer.drawing_size = self._drawing_size

    # -- layers ----------------------------------------------------------------------------
    def layers(self) -> list[ControlLayer]:
        return list(self._layers)

    def add_layer(self, type: str = DEFAULT_TYPE, image: Path | str | None = None) -> ControlLayer:
        """Add a layer of control ``type``, with ``image`` when given (a file that cannot be
        read gives a ``message`` and the layer starts without an image)."""
        layer = ControlLayer(self.runner, type, self._models, self._family, self)
        layer.drawing_size = self._drawing_size
        layer.changed.connect(self._layer_changed)
        layer.message.connect(self.message.emit)
        layer.remove_requested.connect(lambda layer=layer: self.remove_layer(layer))
        layer.preview_ready.connect(
            lambda image, layer=layer: self.preview_ready.emit(layer, image)
        )
        self._layers.append(layer)
        self.layers_layout.insertWidget(self.layers_layout.count() - 1, layer)
        if image is not None:
            layer.set_image(image)
        self._after_layers_changed()
        return layer

    def remove_layer(self, layer: ControlLayer) -> None:
        if layer not in self._layers:
            return
        self._layers.remove(layer)
        layer.shutdown()
        take_card(self.layers_layout, layer)
        self._after_layers_changed()

    def clear_layers(self) -> None:
        """Remove every layer."""
        for layer in list(self._layers):
            self.remove_layer(layer)

    def _after_layers_changed(self) -> None:
        for number, layer in enumerate(self._layers, start=1):
            layer.title_label.setText(f"Layer {number}")
        self._show_hint()
        if not self._restoring:
            self.layers_changed.emit(len(self._layers))
            self.values_changed.emit()

    def _layer_changed(self) -> None:
        if not self._restoring:
            self.values_changed.emit()

    def _show_hint(self) -> None:
        missing = (
            ""
            if any(not m.problem for m in self._models)
            else (
                "No ControlNet models found. Put .safetensors ControlNets in models/controlnet, "
                "or add a ComfyUI or AUTOMATIC1111 install in File ▸ Settings, then Refresh."
            )
        )
        show_hint(
            self.hint_label,
            missing,
            folders_for("controlnet", self.extra_sources) if missing else [],
            "No control layers. Add one to guide the picture with an image: its edges, "
            "a scribble, line art, or a depth or pose map.",
            len(self._layers),
        )

    # -- values ----------------------------------------------------------------------------
    def units(self) -> tuple[ControlUnit, ...]:
        """The layers that are on and have an image, as request parts, in order."""
        return tuple(unit for layer in self._layers if (unit := layer.unit()) is not None)

    def _custom_values(self) -> dict[str, Any]:
        return {"controls": self.units()}

    def _set_custom_values(self, values: dict[str, Any]) -> None:
        if "controls" in values and values["controls"] is not None:
            self.set_units(values["controls"])

    def set_units(self, units: Iterable[ControlUnit | Mapping[str, Any]]) -> int:
        """Replace the layers with ``units`` (``ControlUnit`` objects or their plain dicts).

        A unit that is not valid, or whose image file is missing or unreadable, is left out
        and ``message`` says which and why. Returns how many layers were restored.
        """
        self._restoring = True
        restored = 0
        try:
            self.clear_layers()
            for number, item in enumerate(units, start=1):
                what = f"Control layer {number}"
                unit = part_from(ControlUnit, item, what, self.message.emit)
                if unit is None:
                    continue
                try:
                    check_image(Path(unit.image))
                except ImageError as exc:
                    self.message.emit(f"Control layer {number} was not restored: {exc}")
                    continue
                layer = self.add_layer(unit.type)
                if layer.set_unit(unit):
                    restored += 1
                    layer.request_preview()
                else:
                    self.remove_layer(layer)
        finally:
            self._restoring = False
        self._after_layers_changed()
        return restored

    # -- closing ---------------------------------------------------------------------------
    def shutdown(self, msecs: int = 30_000) -> bool:
        """Stop making previews: call before the panel goes (True when every thread ended)."""
        for layer in self._layers:
            layer.shutdown()
        return self.runner.shutdown(msecs)
