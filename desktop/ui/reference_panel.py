"""The reference images panel: pictures that steer the result through an IP-Adapter.

A list of cards, each with an image (dropped, pasted or opened; from the canvas or the
gallery too), a weight and an IP-Adapter. The weight's editor is built from
``ReferenceImage``'s declaration with ``make_editor``, so a setting added to the part shows
up here with no change.

The adapter picker lists the installed IP-Adapters (``list_adapters``). Its first entry is
the automatic choice (a request's ``model`` ""), named after the one ``suggest_adapter``
picks for the window's model family; adapters made for another family or that cannot be
used are listed disabled with the reason as tooltip. A card says when no image encoder
for its adapter is installed (``models/clip_vision``), before any job is sent.

``values()`` gives ``{"references": (ReferenceImage, ...)}`` for the cards that are on and
have an image; ``set_values`` restores cards from a request (a card whose image is gone is
left out, and ``message`` says so).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from PySide6.QtCore import QMimeData, QSize, Qt, Signal
from PySide6.QtGui import QImageReader, QPixmap
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
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

from desktop.engine.errors import ImageError, RequestError
from desktop.engine.ip_adapter import (
    AdapterFile,
    EncoderFile,
    list_adapters,
    list_encoders,
    suggest_adapter,
)
from desktop.engine.model_folders import folders_for
from desktop.engine.parts import ReferenceImage
from desktop.engine.schema import fields_of
from desktop.ui.control_panel import (
    IMAGE_FILTER,
    THUMB,
    ImageSlot,
    compact_combo,
    family_label,
)
from desktop.ui.fields import Editor, SettingsPanel, changed_signal, make_editor
from desktop.ui.icons import icon
from desktop.ui.inputs import check_image, image_from_mime
from desktop.ui.part_list import (
    ModelPicker,
    PickerEntry,
    build_card_list,
    part_from,
    sentence,
    show_hint,
    take_card,
)

log = logging.getLogger(__name__)

#: The ``ReferenceImage`` settings edited by hand-made widgets (the rest are generated).
_CUSTOM_FIELDS = frozenset({"image", "model"})


class ReferenceCard(QFrame):
    """One reference image: the image, its weight and its IP-Adapter.

    Signals:
        changed(): a value of the card changed (by the user or by a ``set_…`` call).
        remove_requested(): its remove button was clicked (the panel removes it).
        message(str): a problem to show the user (a non-image drop, an unreadable file).
    """

    changed = Signal()
    remove_requested = Signal()
    message = Signal(str)

    def __init__(
        self,
        adapters: Sequence[AdapterFile] = (),
        encoders: Sequence[EncoderFile] = (),
        family: str = "",
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setObjectName("ReferenceCard")
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self._adapters: list[AdapterFile] = list(adapters)
        self._encoders: list[EncoderFile] = list(encoders)
        self._family = family
        self._path: Path | None = None
        self._size: tuple[int, int] | None = None
        self._quiet = 0  # > 0 while set_reference fills the editors: one "changed" at the end
        self._build()
        self._rebuild_models()
        self._show_image()

    # -- construction ----------------------------------------------------------------------
    def _build(self) -> None:
        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 6, 8, 8)
        layout.setSpacing(4)

        header = QHBoxLayout()
        self.active_box = QCheckBox()
        self.active_box.setObjectName("ReferenceActive")
        self.active_box.setChecked(True)
        self.active_box.setToolTip("Use this reference (off: it stays here but steers nothing)")
        self.title_label = QLabel("Reference")
        self.title_label.setObjectName("ReferenceTitle")
        self.title_label.setStyleSheet("font-weight: bold;")
        self.remove_button = QToolButton()
        self.remove_button.setObjectName("RemoveReference")
        self.remove_button.setIcon(icon("close"))
        self.remove_button.setText("Remove")
        self.remove_button.setToolTip("Remove this reference image")
        header.addWidget(self.active_box)
        header.addWidget(self.title_label)
        header.addStretch(1)
        header.addWidget(self.remove_button)
        layout.addLayout(header)

        row = QHBoxLayout()
        self.slot = ImageSlot(self)
        self.slot.setToolTip(
            "Drop the reference image here (a file, or an image from a browser, the canvas "
            "or the gallery), or click and press Ctrl+V to paste one."
        )
        row.addWidget(self.slot)
        side = QVBoxLayout()
        self.path_label = QLabel()
        self.path_label.setObjectName("ReferencePath")
        self.path_label.setTextFormat(Qt.TextFormat.PlainText)
        self.path_label.setWordWrap(True)
        side.addWidget(self.path_label)
        self.open_button = QPushButton("Open…")
        self.open_button.setToolTip("Choose the reference image file")
        self.paste_button = QPushButton("Paste")
        self.paste_button.setToolTip("Use the image on the clipboard")
        self.clear_button = QPushButton("Clear")
        self.clear_button.setToolTip("Remove the image (the card stays)")
        for button in (self.open_button, self.paste_button, self.clear_button):
            side.addWidget(button)
        side.addStretch(1)
        row.addLayout(side, 1)
        layout.addLayout(row)

        form = QFormLayout()
        form.setContentsMargins(0, 2, 0, 0)
        self.model_combo = QComboBox()
        self.model_combo.setObjectName("ReferenceModel")
        compact_combo(self.model_combo)
        self.picker = ModelPicker(self.model_combo, "IP-Adapter", "models/ipadapter")
        form.addRow("Adapter", self.model_combo)
        self.editors: dict[str, Editor] = {}
        for info in fields_of(ReferenceImage):
            if info.name in _CUSTOM_FIELDS:
                continue
            editor = make_editor(info, self)
            editor.setObjectName(f"reference_{info.name}_editor")
            changed_signal(editor).connect(lambda *_: self._emit_changed())
            self.editors[info.name] = editor
            form.addRow(info.label.removeprefix("Reference ").capitalize(), editor)
        layout.addLayout(form)

        self.note_label = QLabel()
        self.note_label.setObjectName("ReferenceNote")
        self.note_label.setWordWrap(True)
        self.note_label.setTextFormat(Qt.TextFormat.PlainText)
        self.note_label.setStyleSheet("color: #9a9ca8;")
        layout.addWidget(self.note_label)

        self.active_box.toggled.connect(lambda *_: self._emit_changed())
        self.model_combo.currentIndexChanged.connect(lambda *_: self._model_changed())
        self.remove_button.clicked.connect(self.remove_requested.emit)
        self.slot.image_dropped.connect(self.accept_mime)
        self.paste_button.clicked.connect(self.slot.paste)
        self.open_button.clicked.connect(self._open)
        self.clear_button.clicked.connect(self.clear_image)

    # -- values ----------------------------------------------------------------------------
    def is_active(self) -> bool:
        return self.active_box.isChecked()

    def set_active(self, on: bool) -> None:
        self.active_box.setChecked(bool(on))

    def image_path(self) -> Path | None:
        return self._path

    def weight(self) -> float:
        return float(self.editors["weight"].value_())

    def set_weight(self, weight: float) -> None:
        self.editors["weight"].set_value(weight)

    def model_name(self) -> str:
        """The chosen adapter's name; "" for the automatic (suggested) one."""
        return self.picker.name()

    def set_model_name(self, name: str) -> None:
        """Choose the adapter ``name`` ("" for the suggested one); one not installed is
        added to the picker as such, so a restored request keeps naming it."""
        self.picker.select(name)

    def suggested(self) -> AdapterFile | None:
        """The adapter the automatic choice uses for the window's model family."""
        return suggest_adapter(self._family, self._adapters, self._encoders)

    def reference(self) -> ReferenceImage | None:
        """The card as a request part; None while it is off or has no image."""
        if not self.is_active() or self._path is None:
            return None
        values = {name: editor.value_() for name, editor in self.editors.items()}
        try:
            return ReferenceImage(image=str(self._path), model=self.model_name(), **values)
        except RequestError as exc:  # the editors keep the values valid; a guard only
            log.warning("reference image left out of the request: %s", exc)
            return None

    def set_reference(self, ref: ReferenceImage) -> bool:
        """Show a request's reference; False (with a ``message``) when its image cannot be
        read, in which case the card keeps no image."""
        self._quiet += 1
        try:
            for name, editor in self.editors.items():
                editor.set_value(getattr(ref, name))
            self.set_model_name(ref.model)
            self.set_active(True)
            ok = self.set_image(ref.image)
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
        """Use the file at ``path`` (False, with a message, when it cannot be read; the
        image shown before stays)."""
        path = Path(path)
        try:
            size = check_image(path)
        except ImageError as exc:
            self.message.emit(str(exc))
            return False
        self._path, self._size = path, size
        self._show_image()
        self._emit_changed()
        return True

    def clear_image(self) -> None:
        """Remove the image; the card stays (and is left out of the request)."""
        if self._path is None:
            return
        self._path = self._size = None
        self._show_image()
        self._emit_changed()

    def _open(self) -> None:
        name, _ = QFileDialog.getOpenFileName(self, "Choose a reference image", "", IMAGE_FILTER)
        if name:
            self.set_image(name)

    def _show_image(self) -> None:
        if self._path is None:
            self.slot.show_thumbnail(None)
            self.slot.label.setText("Drop or\npaste an\nimage")
            self.path_label.setText("No image: the card is not used yet")
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
            self.path_label.setText(f"{self._path.name}\n{width}×{height}")
            self.path_label.setToolTip(str(self._path))
        self.clear_button.setEnabled(self._path is not None)

    # -- adapters --------------------------------------------------------------------------
    def set_models(
        self, adapters: Sequence[AdapterFile], encoders: Sequence[EncoderFile], family: str
    ) -> None:
        """The installed adapters and encoders and the model family: re-suggest, keep the
        choice."""
        self._adapters, self._encoders, self._family = list(adapters), list(encoders), family
        self._rebuild_models()

    def _family_problem(self, item: AdapterFile) -> str:
        base = self._family.removesuffix("-inpaint")
        if not base or not item.family or item.family == base:
            return ""
        return (
            f"it is made for {family_label(item.family)} models, and the model is "
            f"{family_label(self._family)}"
        )

    def _encoder_problem(self, item: AdapterFile) -> str:
        if item.problem or any(encoder.fits(item) for encoder in self._encoders):
            return ""
        return f"it needs {item.needs()} in models/clip_vision"

    def _rebuild_models(self) -> None:
        pick = self.suggested()
        entries = []
        for item in self._adapters:
            problem = item.problem or self._family_problem(item)
            family = family_label(item.family) if item.family else ""
            details = ", ".join(t for t in (family, item.kind) if t)
            tip = sentence(problem) if problem else f"{details}\n{item.path}".strip()
            entries.append(PickerEntry(item.name, tip, not item.problem))
        suggested = (
            (pick.name, f"The IP-Adapter for this model: {pick.path}") if pick is not None else None
        )
        self.picker.rebuild(suggested, self._no_suggestion_text(), entries)
        self._show_note()

    def _no_suggestion_text(self) -> str:
        if not self._family:
            return "Pick a model first: the IP-Adapter is suggested for the model's family."
        return (
            f"No IP-Adapter for {family_label(self._family)} models is installed; put one in "
            "models/ipadapter (and its image encoder in models/clip_vision) and refresh."
        )

    def _chosen(self) -> AdapterFile | None:
        name = self.model_name()
        if not name:
            return self.suggested()
        return next((a for a in self._adapters if a.name.casefold() == name.casefold()), None)

    def _show_note(self) -> None:
        """What the user should know about the card's adapter (or nothing)."""
        self.picker.update_tooltip()
        notes: list[str] = []
        name = self.model_name()
        item = self._chosen()
        if name and item is None:
            notes.append(f"The IP-Adapter {name} is not installed.")
        elif item is None:
            notes.append(self._no_suggestion_text())
        elif problem := (item.problem or self._family_problem(item) or self._encoder_problem(item)):
            notes.append(f"{item.name}: {sentence(problem)}")
        self.note_label.setText("\n".join(notes))
        self.note_label.setVisible(bool(notes))

    def _model_changed(self) -> None:
        self._show_note()
        self._emit_changed()

    def _emit_changed(self) -> None:
        if not self._quiet:
            self.changed.emit()


class ReferencePanel(SettingsPanel):
    """Reference images (IP-Adapter): ``values()`` gives the request's ``references``.

    Signals:
        values_changed(): a card was added, removed or changed.
        message(str): a problem to show the user (a bad drop, a card not restored, ...).
        cards_changed(int): cards were added or removed (how many there are).
        models_changed(int): the IP-Adapters were listed again (how many there are).
    """

    message = Signal(str)
    cards_changed = Signal(int)
    models_changed = Signal(int)

    PANEL = "references"
    CUSTOM = frozenset({"references"})

    def __init__(
        self,
        extra_sources: Sequence[Path | str] = (),
        family: str = "",
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setObjectName("ReferencePanel")
        self.extra_sources: list[Path | str] = list(extra_sources)
        self._family = family
        self._adapters: list[AdapterFile] = []
        self._encoders: list[EncoderFile] = []
        self._cards: list[ReferenceCard] = []
        self._restoring = False
        self._build()
        self.refresh_models()

    def _build(self) -> None:
        frame = build_card_list(
            self,
            "Add reference image",
            "Steer the picture with an image: its subject, style and colours (IP-Adapter)",
            "List the IP-Adapter and image encoder folders again",
            ("AddReference", "RefreshAdapters", "ReferenceHint", "ReferenceCards"),
        )
        layout = frame.layout
        self.add_button, self.refresh_button = frame.add_button, frame.refresh_button
        self.hint_label, self.scroll = frame.hint_label, frame.scroll
        self.cards_layout = frame.cards_layout

        extra = QFormLayout()
        self.add_generic_editors(extra)
        layout.addLayout(extra)

        self.add_button.clicked.connect(lambda: self.add_card())
        self.refresh_button.clicked.connect(self.refresh_models)

    # -- models ----------------------------------------------------------------------------
    def family(self) -> str:
        return self._family

    def set_family(self, family: str) -> None:
        """The window's model family: every card re-suggests an adapter."""
        if family == self._family:
            return
        self._family = family
        for card in self._cards:
            card.set_models(self._adapters, self._encoders, family)
        self._show_hint()

    def set_extra_sources(self, extra_sources: Iterable[Path | str]) -> None:
        """Search these ComfyUI / AUTOMATIC1111 installs too (the settings changed)."""
        self.extra_sources = list(extra_sources)
        self.refresh_models()

    def refresh_models(self) -> list[AdapterFile]:
        """List the adapter and encoder folders again; each card keeps its choice."""
        self._adapters = list_adapters(self.extra_sources)
        self._encoders = list_encoders(self.extra_sources)
        for card in self._cards:
            card.set_models(self._adapters, self._encoders, self._family)
        self._show_hint()
        self.models_changed.emit(len(self._adapters))
        return list(self._adapters)

    def adapters(self) -> list[AdapterFile]:
        return list(self._adapters)

    # -- cards -----------------------------------------------------------------------------
    def cards(self) -> list[ReferenceCard]:
        return list(self._cards)

    def add_card(self, image: Path | str | None = None, weight: float = 1.0) -> ReferenceCard:
        """Add a card, with ``image`` when given (a file that cannot be read gives a
        ``message`` and the card starts without an image)."""
        card = ReferenceCard(self._adapters, self._encoders, self._family, self)
        card.set_weight(weight)
        card.changed.connect(self._card_changed)
        card.message.connect(self.message.emit)
        card.remove_requested.connect(lambda card=card: self.remove_card(card))
        self._cards.append(card)
        self.cards_layout.insertWidget(self.cards_layout.count() - 1, card)
        if image is not None:
            card.set_image(image)
        self._after_cards_changed()
        return card

    def remove_card(self, card: ReferenceCard) -> None:
        if card not in self._cards:
            return
        self._cards.remove(card)
        take_card(self.cards_layout, card)
        self._after_cards_changed()

    def clear_cards(self) -> None:
        for card in list(self._cards):
            self.remove_card(card)

    def _after_cards_changed(self) -> None:
        for number, card in enumerate(self._cards, start=1):
            card.title_label.setText(f"Reference {number}")
        self._show_hint()
        if not self._restoring:
            self.cards_changed.emit(len(self._cards))
            self.values_changed.emit()

    def _card_changed(self) -> None:
        if not self._restoring:
            self.values_changed.emit()

    def _show_hint(self) -> None:
        missing = (
            ""
            if any(not a.problem for a in self._adapters)
            else (
                "No IP-Adapter models found. Put a .safetensors IP-Adapter in models/ipadapter and "
                "its CLIP image encoder in models/clip_vision (or add a ComfyUI or AUTOMATIC1111 "
                "install in File ▸ Settings), then Refresh."
            )
        )
        show_hint(
            self.hint_label,
            missing,
            folders_for("ipadapter", self.extra_sources) if missing else [],
            "No reference images. Add one to steer the picture with an image's subject, "
            "style and colours; the weight sets how strongly.",
            len(self._cards),
        )

    # -- values ----------------------------------------------------------------------------
    def references(self) -> tuple[ReferenceImage, ...]:
        """The cards that are on and have an image, as request parts, in order."""
        return tuple(ref for card in self._cards if (ref := card.reference()) is not None)

    def _custom_values(self) -> dict[str, Any]:
        return {"references": self.references()}

    def _set_custom_values(self, values: dict[str, Any]) -> None:
        if "references" in values and values["references"] is not None:
            self.set_references(values["references"])

    def set_references(self, refs: Iterable[ReferenceImage | Mapping[str, Any]]) -> int:
        """Replace the cards with ``refs`` (``ReferenceImage`` objects or their plain dicts).

        One that is not valid, or whose image file is missing or unreadable, is left out
        and ``message`` says which and why. Returns how many cards were restored.
        """
        self._restoring = True
        restored = 0
        try:
            self.clear_cards()
            for number, item in enumerate(refs, start=1):
                ref = part_from(
                    ReferenceImage, item, f"Reference image {number}", self.message.emit
                )
                if ref is None:
                    continue
                try:
                    check_image(Path(ref.image))
                except ImageError as exc:
                    self.message.emit(f"Reference image {number} was not restored: {exc}")
                    continue
                card = self.add_card()
                if card.set_reference(ref):
                    restored += 1
                else:
                    self.remove_card(card)
        finally:
            self._restoring = False
        self._after_cards_changed()
        return restored
