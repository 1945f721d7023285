"""The LoRA panel: the installed LoRAs with their previews, and what writes them into the prompt.

Like AUTOMATIC1111's extra-networks tab: a searchable list of the LoRAs
``desktop.engine.extra_networks.list_loras`` finds (Sandstorm's ``models/loras`` and the
ComfyUI / AUTOMATIC1111 installs of the settings), and for the selected one its preview,
base model, trigger words (a click puts one in the prompt) and a strength that "Add to
prompt" writes as ``<lora:NAME:0.8>``, or writes into the tag already there.

The panel edits the prompt only through the ``QTextCursor`` of the editor it is given
(``set_prompt_edit``), one edit block per change, so Ctrl+Z undoes each in one step. The
text rules are plain functions on strings (``lora_tag_edit``, ``phrase_edit``) so they are
tested without widgets. Previews are decoded by a ``ThumbnailLoader`` off the GUI thread
(the window shares the gallery's); call ``shutdown`` before an own loader goes.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PySide6.QtCore import (
    QAbstractListModel,
    QModelIndex,
    QPersistentModelIndex,
    QSize,
    Qt,
    Signal,
)
from PySide6.QtGui import QBrush, QColor, QImage, QPainter, QPixmap, QTextCursor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDoubleSpinBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListView,
    QPlainTextEdit,
    QPushButton,
    QSlider,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from desktop.engine.extra_networks import LORA_SUFFIXES, NetworkFile, list_loras, search_folders
from desktop.engine.parts import _LORA_TAG
from desktop.engine.schema import format_value
from desktop.ui.icons import icon
from desktop.ui.thumbnails import ThumbnailLoader

ICON_SIZE = 48
PREVIEW_SIZE = 192
#: The strength slider's range and its steps per 1.0 (steps of 0.05).
MAX_STRENGTH = 2.0
STEPS_PER_UNIT = 20
ITEM_ROLE = Qt.ItemDataRole.UserRole + 1
_MUTED = QColor("#7a7c88")
_PLACEHOLDER = QColor(128, 128, 140, 70)
_Index = QModelIndex | QPersistentModelIndex


# -- prompt text ---------------------------------------------------------------------------
@dataclass(frozen=True)
class TextEdit:
    """Replace ``prompt[start:end]`` with ``text`` (indices into the Python string)."""

    start: int
    end: int
    text: str

    def applied(self, prompt: str) -> str:
        return prompt[: self.start] + self.text + prompt[self.end :]


def format_strength(value: float) -> str:
    """A strength as the prompt writes it: 0.8, 1, 0.75 (two decimals at most)."""
    return format_value(round(float(value), 2) + 0.0)  # + 0.0 turns -0.0 into 0.0


def lora_tag(name: str, strength: float) -> str:
    return f"<lora:{name}:{format_strength(strength)}>"


def _lora_key(name: str) -> str:
    key = name.strip().replace("\\", "/").lower()
    for suffix in LORA_SUFFIXES:
        if key.endswith(suffix):
            return key[: -len(suffix)]
    return key


def find_lora_tag(prompt: str, name: str) -> re.Match[str] | None:
    """The first ``<lora:…>`` tag in ``prompt`` that names the LoRA ``name`` (any case, with
    or without its suffix or subfolder), or None."""
    wanted = _lora_key(name)
    for match in _LORA_TAG.finditer(prompt):
        key = _lora_key(match.group(1))
        if wanted in (key, key.rsplit("/", 1)[-1]):
            return match
    return None


def tag_strength(match: re.Match[str]) -> float | None:
    """The (first) strength a matched tag gives; None when it has none or it is not a number."""
    try:
        return float(match.group(2)) if match.group(2) else None
    except ValueError:
        return None


def lora_tag_edit(prompt: str, name: str, strength: float) -> TextEdit:
    """Set the strength of the LoRA's tag in ``prompt``, or add its tag after ", ".

    A tag with separate text-encoder and UNet strengths (``<lora:x:0.8:0.5>``) becomes one
    with the single strength the panel shows; the name stays as the prompt writes it.
    """
    match = find_lora_tag(prompt, name)
    if match is not None:
        written = match.group(1).strip()
        return TextEdit(match.start(), match.end(), lora_tag(written, strength))
    tag = lora_tag(name, strength)
    body = prompt.rstrip()
    if not body:
        return TextEdit(0, len(prompt), tag)
    # Spaces after the text go (the tag ends it), line breaks the user typed stay.
    trailing = prompt[len(body) :]
    end = len(body) if "\n" in trailing else len(prompt)
    return TextEdit(len(body), end, (" " if body.endswith(",") else ", ") + tag)


def phrase_edit(prompt: str, start: int, end: int, phrase: str) -> TextEdit:
    """Put ``phrase`` in place of ``prompt[start:end]`` (the cursor or selection), with
    ", " between it and the words around it and no doubled commas or spaces."""
    before, after = prompt[:start], prompt[end:]
    head = before.rstrip(" \t")
    if before.endswith((" ", "\t")) and not head.endswith(","):
        start = len(head)  # "a cat |" -> "a cat, word"
    if not head.strip() or head.endswith(("\n", "(", "[", "{")):
        prefix = ""
    elif head.endswith(","):
        prefix = "" if before != head else " "
    else:
        prefix = ", "
    rest = after.lstrip(" \t")
    ends_phrase = not rest or rest[0] in ",)]}\n"
    suffix = "" if ends_phrase else ("," if rest != after else ", ")
    return TextEdit(start, end, prefix + phrase + suffix)


def _utf16(text: str, index: int) -> int:
    """A Python string index as a Qt document position (Qt counts UTF-16 code units)."""
    return len(text[:index].encode("utf-16-le")) // 2


def _from_utf16(text: str, position: int) -> int:
    encoded = text.encode("utf-16-le")[: position * 2]
    return len(encoded.decode("utf-16-le", errors="ignore"))


def apply_text_edit(editor: QPlainTextEdit, change: TextEdit, move_cursor: bool) -> None:
    """Make ``change`` in ``editor`` as one undo step; ``move_cursor`` puts the editor's
    cursor after the new text, otherwise the cursor stays where the user left it."""
    text = editor.toPlainText()
    cursor = editor.textCursor() if move_cursor else QTextCursor(editor.document())
    cursor.beginEditBlock()
    cursor.setPosition(_utf16(text, change.start))
    cursor.setPosition(_utf16(text, change.end), QTextCursor.MoveMode.KeepAnchor)
    cursor.insertText(change.text)
    cursor.endEditBlock()
    if move_cursor:
        editor.setTextCursor(cursor)


# -- the list ------------------------------------------------------------------------------
def matches(item: NetworkFile, query: str) -> bool:
    """True when every word of ``query`` is in the LoRA's name, title or trigger words."""
    haystack = " ".join((item.name, item.title, *item.trigger_words)).casefold()
    return all(word in haystack for word in query.casefold().split())


def _sentence(problem: str) -> str:
    return f"{problem[:1].upper()}{problem[1:]}." if problem else ""


def placeholder_pixmap(size: int) -> QPixmap:
    """A neutral square for a LoRA without a preview (or whose preview is still loading)."""
    pixmap = QPixmap(size, size)
    pixmap.fill(Qt.GlobalColor.transparent)
    painter = QPainter(pixmap)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    painter.setPen(Qt.PenStyle.NoPen)
    painter.setBrush(_PLACEHOLDER)
    painter.drawRoundedRect(2, 2, size - 4, size - 4, 6, 6)
    painter.end()
    return pixmap


class LoraListModel(QAbstractListModel):
    """The LoRAs that match the search, each with a small thumbnail of its preview.

    Thumbnails come from ``loader`` (off the GUI thread); rows show a placeholder until
    theirs arrives, or for good when there is no preview or it cannot be read.
    """

    def __init__(self, loader: ThumbnailLoader, parent: Any = None) -> None:
        super().__init__(parent)
        self.loader = loader
        self.library: list[NetworkFile] = []
        self.items: list[NetworkFile] = []
        self.query = ""
        self._icons: dict[str, QPixmap] = {}
        self._failed: set[str] = set()
        self._placeholder: QPixmap | None = None
        loader.thumbnail_ready.connect(self._on_thumbnail)
        loader.thumbnail_failed.connect(self._on_failed)

    def set_library(self, items: Iterable[NetworkFile]) -> None:
        self.beginResetModel()
        self.library = list(items)
        self.items = [item for item in self.library if matches(item, self.query)]
        wanted = {str(item.preview) for item in self.library if item.preview}
        self._icons = {path: pixmap for path, pixmap in self._icons.items() if path in wanted}
        self._failed.clear()  # a refresh tries unreadable previews again
        self.endResetModel()

    def set_query(self, query: str) -> None:
        self.beginResetModel()
        self.query = query
        self.items = [item for item in self.library if matches(item, query)]
        self.endResetModel()

    def item(self, row: int) -> NetworkFile | None:
        return self.items[row] if 0 <= row < len(self.items) else None

    def row_of(self, name: str) -> int:
        return next((row for row, item in enumerate(self.items) if item.name == name), -1)

    def rowCount(self, parent: _Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self.items)

    def data(self, index: _Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        item = self.item(index.row()) if index.isValid() else None
        if item is None:
            return None
        if role == Qt.ItemDataRole.DisplayRole:
            return item.name
        if role == Qt.ItemDataRole.DecorationRole:
            return self.icon(item)
        if role == Qt.ItemDataRole.ToolTipRole:
            if item.problem:
                return _sentence(item.problem)
            return "\n".join(t for t in (item.title, item.base_model, str(item.path)) if t)
        if role == Qt.ItemDataRole.ForegroundRole and item.problem:
            return QBrush(_MUTED)
        if role == ITEM_ROLE:
            return item
        return None

    def icon(self, item: NetworkFile) -> QPixmap:
        """The row's thumbnail, or the placeholder while it is made (asked for here)."""
        path = str(item.preview) if item.preview else ""
        if path in self._icons:
            return self._icons[path]
        if path and path not in self._failed:
            # Asked again on each paint: the loader keeps one request per path, and a
            # gallery search sharing the loader may have dropped an earlier one.
            self.loader.request(path)
        if self._placeholder is None:
            self._placeholder = placeholder_pixmap(ICON_SIZE)
        return self._placeholder

    def has_icon(self, item: NetworkFile) -> bool:
        return item.preview is not None and str(item.preview) in self._icons

    def _rows_showing(self, path: str) -> list[int]:
        return [row for row, item in enumerate(self.items) if str(item.preview) == path]

    def _on_thumbnail(self, path: str, image: QImage) -> None:
        rows = self._rows_showing(path)
        if not rows:
            return  # a gallery thumbnail, or a LoRA no longer listed
        scaled = image.scaled(
            ICON_SIZE,
            ICON_SIZE,
            Qt.AspectRatioMode.KeepAspectRatio,
            Qt.TransformationMode.SmoothTransformation,
        )
        self._icons[path] = QPixmap.fromImage(scaled)
        for row in rows:
            index = self.index(row)
            self.dataChanged.emit(index, index, [Qt.ItemDataRole.DecorationRole])

    def _on_failed(self, path: str, _why: str) -> None:
        if self._rows_showing(path):
            self._failed.add(path)


# -- the panel -----------------------------------------------------------------------------
class LoraPanel(QWidget):
    """Searchable list of the installed LoRAs; puts their tags and trigger words in a prompt.

    Signals:
        library_changed(int): the LoRAs were listed again (how many there are).
        prompt_edited(str): the panel changed the prompt ("tag" or "trigger word").
    """

    library_changed = Signal(int)
    prompt_edited = Signal(str)

    def __init__(
        self,
        extra_sources: Sequence[Path | str] = (),
        prompt_edit: QPlainTextEdit | None = None,
        loader: ThumbnailLoader | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setObjectName("LoraPanel")
        self.extra_sources: list[Path | str] = list(extra_sources)
        self.prompt_edit: QPlainTextEdit | None = None
        self._own_loader = loader is None
        self.loader = loader if loader is not None else ThumbnailLoader(threads=1, parent=self)
        self.model = LoraListModel(self.loader, parent=self)
        self._preview_path = ""
        self._syncing_strength = False
        self._closed = False
        self._build()
        self.loader.thumbnail_ready.connect(self._on_preview_ready)
        self.loader.thumbnail_failed.connect(self._on_preview_failed)
        self.set_prompt_edit(prompt_edit)
        self.refresh()

    # -- construction ----------------------------------------------------------------------
    def _build(self) -> None:
        layout = QVBoxLayout(self)
        layout.setContentsMargins(10, 10, 10, 10)
        layout.setSpacing(6)

        search_row = QHBoxLayout()
        self.search_edit = QLineEdit()
        self.search_edit.setObjectName("LoraSearch")
        self.search_edit.setClearButtonEnabled(True)
        self.search_edit.setToolTip("Filter by name or trigger word")
        self.refresh_button = QToolButton()
        self.refresh_button.setObjectName("RefreshLoras")
        self.refresh_button.setIcon(icon("refresh"))
        self.refresh_button.setText("Refresh")
        self.refresh_button.setToolTip("List the LoRA folders again")
        search_row.addWidget(self.search_edit, 1)
        search_row.addWidget(self.refresh_button)
        layout.addLayout(search_row)

        self.hint_label = QLabel()
        self.hint_label.setObjectName("LoraHint")
        self.hint_label.setWordWrap(True)
        self.hint_label.setTextFormat(Qt.TextFormat.PlainText)
        self.hint_label.setVisible(False)
        layout.addWidget(self.hint_label)

        self.view = QListView()
        self.view.setObjectName("LoraList")
        self.view.setModel(self.model)
        self.view.setIconSize(QSize(ICON_SIZE, ICON_SIZE))
        self.view.setUniformItemSizes(True)
        self.view.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.view.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        layout.addWidget(self.view, 3)

        self.details = QWidget()
        self.details.setObjectName("LoraDetails")
        details = QVBoxLayout(self.details)
        details.setContentsMargins(0, 4, 0, 0)
        details.setSpacing(4)
        self.preview_label = QLabel()
        self.preview_label.setObjectName("LoraPreview")
        self.preview_label.setFixedHeight(PREVIEW_SIZE)
        self.preview_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.name_label = QLabel()
        self.name_label.setObjectName("LoraName")
        self.name_label.setTextFormat(Qt.TextFormat.PlainText)
        self.name_label.setWordWrap(True)
        self.name_label.setStyleSheet("font-weight: bold;")
        self.base_label = QLabel()
        self.base_label.setObjectName("LoraBaseModel")
        self.base_label.setTextFormat(Qt.TextFormat.PlainText)
        self.problem_label = QLabel()
        self.problem_label.setObjectName("LoraProblem")
        self.problem_label.setTextFormat(Qt.TextFormat.PlainText)
        self.problem_label.setWordWrap(True)
        self.problem_label.setStyleSheet("color: #ff7a7a;")
        self.trigger_label = QLabel()
        self.trigger_label.setObjectName("LoraTriggerWords")
        self.trigger_label.setTextFormat(Qt.TextFormat.RichText)
        self.trigger_label.setWordWrap(True)
        self.trigger_label.setTextInteractionFlags(
            Qt.TextInteractionFlag.LinksAccessibleByMouse
            | Qt.TextInteractionFlag.LinksAccessibleByKeyboard
        )
        self.trigger_label.setToolTip("Click a trigger word to put it in the prompt")
        for label in (self.preview_label, self.name_label, self.base_label, self.problem_label):
            details.addWidget(label)
        details.addWidget(self.trigger_label)

        strength_row = QHBoxLayout()
        steps = round(MAX_STRENGTH * STEPS_PER_UNIT)
        self.strength_slider = QSlider(Qt.Orientation.Horizontal)
        self.strength_slider.setObjectName("LoraStrengthSlider")
        self.strength_slider.setRange(-steps, steps)
        self.strength_slider.setPageStep(STEPS_PER_UNIT // 4)
        self.strength_spin = QDoubleSpinBox()
        self.strength_spin.setObjectName("LoraStrength")
        self.strength_spin.setRange(-MAX_STRENGTH, MAX_STRENGTH)
        self.strength_spin.setSingleStep(1 / STEPS_PER_UNIT)
        self.strength_spin.setDecimals(2)
        self.strength_spin.setToolTip("How strongly the LoRA applies (1 = as trained)")
        strength_row.addWidget(QLabel("Strength"))
        strength_row.addWidget(self.strength_slider, 1)
        strength_row.addWidget(self.strength_spin)
        details.addLayout(strength_row)
        self.add_button = QPushButton("Add to prompt")
        self.add_button.setObjectName("AddLora")
        details.addWidget(self.add_button)
        layout.addWidget(self.details)

        self.search_edit.textChanged.connect(self._on_query)
        self.refresh_button.clicked.connect(self.refresh)
        self.view.selectionModel().currentChanged.connect(lambda *_: self._show_selected())
        self.view.doubleClicked.connect(lambda _index: self.add_to_prompt())
        self.trigger_label.linkActivated.connect(self._on_trigger_link)
        self.strength_slider.valueChanged.connect(self._on_slider)
        self.strength_spin.valueChanged.connect(self._on_spin)
        self.add_button.clicked.connect(self.add_to_prompt)
        self.set_strength(1.0)

    # -- the library -----------------------------------------------------------------------
    def set_prompt_edit(self, edit: QPlainTextEdit | None) -> None:
        """Write tags and trigger words into ``edit`` (the prompt box) from now on."""
        self.prompt_edit = edit
        self._update_buttons()

    def set_extra_sources(self, extra_sources: Sequence[Path | str]) -> None:
        """Search these ComfyUI / AUTOMATIC1111 installs too (the settings changed)."""
        self.extra_sources = list(extra_sources)
        self.refresh()

    def refresh(self) -> None:
        """List the LoRA folders again, keeping the selection when the LoRA is still there."""
        keep = self.selected()
        self.model.set_library(list_loras(self.extra_sources))
        self.search_edit.setPlaceholderText(f"Search {self._count_text()}…")
        self._after_reset(keep.name if keep else "")
        self.library_changed.emit(len(self.model.library))

    def loras(self) -> list[NetworkFile]:
        """The LoRAs listed now (after the search)."""
        return list(self.model.items)

    def select(self, name: str) -> bool:
        """Select the listed LoRA ``name``; False when the search hides it or it is gone."""
        row = self.model.row_of(name)
        if row < 0:
            return False
        self.view.setCurrentIndex(self.model.index(row))
        return True

    def selected(self) -> NetworkFile | None:
        index = self.view.currentIndex()
        return self.model.item(index.row()) if index.isValid() else None

    def _count_text(self) -> str:
        count = len(self.model.library)
        return f"{count} LoRA{'s' if count != 1 else ''}"

    def _on_query(self, text: str) -> None:
        keep = self.selected()
        self.model.set_query(text)
        self._after_reset(keep.name if keep else "")

    def _after_reset(self, keep: str) -> None:
        if not (keep and self.select(keep)) and self.model.items:
            self.view.setCurrentIndex(self.model.index(0))
        self._show_hint()
        self._show_selected()

    def _show_hint(self) -> None:
        if not self.model.library:
            folders = search_folders("lora", self.extra_sources)
            self.hint_label.setText(
                "No LoRAs found. Put .safetensors LoRA files in models/loras, or add a "
                "ComfyUI or AUTOMATIC1111 install in File ▸ Settings, then Refresh."
            )
            self.hint_label.setToolTip("Searched:\n" + "\n".join(str(f) for f in folders))
        elif not self.model.items:
            self.hint_label.setText(f"No LoRA matches “{self.model.query.strip()}”.")
            self.hint_label.setToolTip("")
        self.hint_label.setVisible(not self.model.items)
        self.view.setVisible(bool(self.model.library))

    # -- the selected LoRA -----------------------------------------------------------------
    def _show_selected(self) -> None:
        item = self.selected()
        self.details.setVisible(item is not None)
        self._update_buttons()
        if item is None:
            self._preview_path = ""
            return
        self.name_label.setText(item.title if item.title else item.name)
        self.name_label.setToolTip(
            "\n\n".join(t for t in (f"<lora:{item.name}>", item.description) if t)
        )
        self.base_label.setText(f"Base model: {item.base_model or 'unknown'}")
        self.problem_label.setText(_sentence(item.problem))
        self.problem_label.setVisible(bool(item.problem))
        self._show_trigger_words(item.trigger_words)
        self._show_preview(item)
        self.set_strength(self._initial_strength(item))

    def _initial_strength(self, item: NetworkFile) -> float:
        """The strength of its tag in the prompt, else the file's preferred one, else 1."""
        if self.prompt_edit is not None:
            match = find_lora_tag(self.prompt_edit.toPlainText(), item.name)
            strength = tag_strength(match) if match is not None else None
            if strength is not None:
                return strength
        return item.preferred_weight if item.preferred_weight is not None else 1.0

    def _show_trigger_words(self, words: Sequence[str]) -> None:
        if not words:
            self.trigger_label.setText("<i>No trigger words</i>")
            return
        links = [f'<a href="{i}">{html.escape(word)}</a>' for i, word in enumerate(words)]
        if len(words) > 1:
            links.append('<a href="all">(all)</a>')
        self.trigger_label.setText("Trigger words: " + ", ".join(links))

    def _show_preview(self, item: NetworkFile) -> None:
        self.preview_label.clear()
        self.preview_label.setToolTip("")
        self._preview_path = str(item.preview) if item.preview else ""
        if not self._preview_path:
            self.preview_label.setText("No preview")
            return
        self.preview_label.setText("Loading preview…")
        self.loader.request(self._preview_path)

    def _on_preview_ready(self, path: str, image: QImage) -> None:
        if path != self._preview_path or self._closed:
            return
        self.preview_label.setPixmap(
            QPixmap.fromImage(
                image.scaled(
                    PREVIEW_SIZE,
                    PREVIEW_SIZE,
                    Qt.AspectRatioMode.KeepAspectRatio,
                    Qt.TransformationMode.SmoothTransformation,
                )
            )
        )

    def _on_preview_failed(self, path: str, why: str) -> None:
        if path == self._preview_path:
            self.preview_label.setText("The preview cannot be read")
            self.preview_label.setToolTip(why)

    def has_preview(self) -> bool:
        """True when the selected LoRA's preview image is shown."""
        pixmap = self.preview_label.pixmap()
        return pixmap is not None and not pixmap.isNull()

    # -- strength --------------------------------------------------------------------------
    def strength(self) -> float:
        return round(self.strength_spin.value(), 2)

    def set_strength(self, value: float) -> None:
        value = max(-MAX_STRENGTH, min(MAX_STRENGTH, value))
        self.strength_spin.setValue(value)
        self._on_spin(self.strength_spin.value())

    def _on_slider(self, steps: int) -> None:
        if not self._syncing_strength:
            self._syncing_strength = True
            self.strength_spin.setValue(steps / STEPS_PER_UNIT)
            self._syncing_strength = False

    def _on_spin(self, value: float) -> None:
        if not self._syncing_strength:
            self._syncing_strength = True
            self.strength_slider.setValue(round(value * STEPS_PER_UNIT))
            self._syncing_strength = False

    # -- writing into the prompt -----------------------------------------------------------
    def _update_buttons(self) -> None:
        item = self.selected()
        self.add_button.setEnabled(
            item is not None and item.usable and self.prompt_edit is not None
        )
        self.add_button.setToolTip(
            _sentence(item.problem)
            if item is not None and item.problem
            else "Write the LoRA's tag into the prompt (or change its strength there)"
        )

    def add_to_prompt(self) -> bool:
        """Write the selected LoRA's tag with the strength shown, or update its tag in the
        prompt; False when nothing usable is selected or there is no prompt box."""
        item = self.selected()
        if item is None or not item.usable or self.prompt_edit is None:
            return False
        change = lora_tag_edit(self.prompt_edit.toPlainText(), item.name, self.strength())
        apply_text_edit(self.prompt_edit, change, move_cursor=False)
        self.prompt_edited.emit("tag")
        return True

    def insert_trigger_word(self, word: str) -> bool:
        """Put ``word`` into the prompt at its cursor (in place of a selection)."""
        edit = self.prompt_edit
        if edit is None or not word:
            return False
        text = edit.toPlainText()
        cursor = edit.textCursor()
        start = _from_utf16(text, cursor.selectionStart())
        end = _from_utf16(text, cursor.selectionEnd())
        apply_text_edit(edit, phrase_edit(text, start, end, word), move_cursor=True)
        edit.setFocus(Qt.FocusReason.OtherFocusReason)
        self.prompt_edited.emit("trigger word")
        return True

    def _on_trigger_link(self, href: str) -> None:
        item = self.selected()
        if item is None:
            return
        if href == "all":
            self.insert_trigger_word(", ".join(item.trigger_words))
        elif href.isdigit() and int(href) < len(item.trigger_words):
            self.insert_trigger_word(item.trigger_words[int(href)])

    def shutdown(self, msecs: int = 30_000) -> bool:
        """Stop making previews (an own loader only; a shared one belongs to its owner)."""
        self._closed = True
        return self.loader.shutdown(msecs) if self._own_loader else True
