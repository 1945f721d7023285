"""What the control-layer and reference-image panels share: their frame and model pickers.

Both panels are a list of cards (one per request part) under an "Add …" button and a
Refresh button, with a hint line for what is missing; each card has a model picker whose
first entry is the automatic choice (a part's ``model`` "") named after the suggested file,
followed by every installed file (those that cannot be used disabled, with the reason as
tooltip) and, when a restored part names a file that is not installed, that name marked so.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from PySide6.QtCore import Qt
from PySide6.QtGui import QStandardItemModel
from PySide6.QtWidgets import (
    QComboBox,
    QFrame,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QScrollArea,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from desktop.engine.errors import RequestError
from desktop.engine.schema import from_plain
from desktop.ui.icons import icon

P = TypeVar("P")

#: The data role of a picker entry holding the model's name ("" for the automatic one).
MODEL_ROLE = Qt.ItemDataRole.UserRole + 1


def sentence(text: str) -> str:
    """``text`` as a sentence: capitalised, ending with a full stop."""
    text = text.strip()
    if not text:
        return ""
    text = text[:1].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."


@dataclass(frozen=True)
class PickerEntry:
    """One installed file in a model picker."""

    name: str
    tip: str
    enabled: bool = True


class ModelPicker:
    """Keeps a ``QComboBox`` of models: the automatic entry, the installed files, and a
    restored name that is not installed (``kind``: "ControlNet", "IP-Adapter"; ``folder``:
    where such files go, for the tooltips)."""

    def __init__(self, combo: QComboBox, kind: str, folder: str) -> None:
        self.combo = combo
        self.kind = kind
        self.folder = folder

    def name(self) -> str:
        """The chosen model's name; "" for the automatic (suggested) one."""
        data = self.combo.currentData(MODEL_ROLE)
        return str(data) if data else ""

    def index(self, name: str) -> int:
        for index in range(self.combo.count()):
            data = self.combo.itemData(index, MODEL_ROLE)
            if (data or "") == name or (name and str(data).casefold() == name.casefold()):
                return index
        return -1

    def select(self, name: str) -> None:
        """Choose ``name`` ("" for the automatic one); one not installed is added as such,
        so a restored part keeps naming it."""
        index = self.index(name)
        if index < 0:
            self.add_missing(name)
            index = self.combo.count() - 1
        self.combo.setCurrentIndex(index)

    def rebuild(
        self,
        suggested: tuple[str, str] | None,
        none_tip: str,
        entries: Sequence[PickerEntry],
    ) -> None:
        """Refill the picker, keeping the choice. ``suggested``: the automatic entry's
        (name, tooltip), None when nothing would be chosen (``none_tip`` says why)."""
        keep = self.name()
        combo = self.combo
        combo.blockSignals(True)
        try:
            combo.clear()
            if suggested is not None:
                combo.addItem(f"Suggested: {suggested[0]}")
                combo.setItemData(0, suggested[1], Qt.ItemDataRole.ToolTipRole)
            else:
                combo.addItem("Automatic (none installed)")
                combo.setItemData(0, none_tip, Qt.ItemDataRole.ToolTipRole)
            combo.setItemData(0, "", MODEL_ROLE)
            model = combo.model()
            for entry in entries:
                combo.addItem(entry.name)
                index = combo.count() - 1
                combo.setItemData(index, entry.name, MODEL_ROLE)
                combo.setItemData(index, entry.tip, Qt.ItemDataRole.ToolTipRole)
                if not entry.enabled and isinstance(model, QStandardItemModel):
                    item = model.item(index)
                    if item is not None:
                        item.setEnabled(False)
            if keep and self.index(keep) < 0:
                self.add_missing(keep)
            combo.setCurrentIndex(max(0, self.index(keep)))
        finally:
            combo.blockSignals(False)

    def add_missing(self, name: str) -> None:
        self.combo.addItem(f"{name} (not installed)")
        index = self.combo.count() - 1
        self.combo.setItemData(index, name, MODEL_ROLE)
        self.combo.setItemData(
            index,
            f"No {self.kind} called {name} is installed; put it in {self.folder} and refresh, "
            "or pick another.",
            Qt.ItemDataRole.ToolTipRole,
        )

    def update_tooltip(self) -> None:
        """The picker is narrow: its tooltip names the whole choice."""
        tip = self.combo.currentData(Qt.ItemDataRole.ToolTipRole)
        text = self.combo.currentText()
        self.combo.setToolTip(f"{text}\n{tip}" if tip else text)


@dataclass
class CardList:
    """The frame ``build_card_list`` made: the buttons, the hint and the cards' layout."""

    layout: QVBoxLayout
    add_button: QPushButton
    refresh_button: QToolButton
    hint_label: QLabel
    scroll: QScrollArea
    cards_layout: QVBoxLayout


def build_card_list(
    owner: QWidget,
    add_text: str,
    add_tip: str,
    refresh_tip: str,
    names: tuple[str, str, str, str],
) -> CardList:
    """The panel frame on ``owner``: "Add …" and Refresh, a hint line, and a scrolling list
    whose layout takes the cards (insert them before its last item, a stretch).
    ``names``: the object names of the add button, the refresh button, the hint and the
    list."""
    layout = QVBoxLayout(owner)
    layout.setContentsMargins(10, 10, 10, 10)
    layout.setSpacing(6)
    top = QHBoxLayout()
    add_button = QPushButton(add_text)
    add_button.setObjectName(names[0])
    add_button.setToolTip(add_tip)
    refresh_button = QToolButton()
    refresh_button.setObjectName(names[1])
    refresh_button.setIcon(icon("refresh"))
    refresh_button.setText("Refresh")
    refresh_button.setToolTip(refresh_tip)
    top.addWidget(add_button, 1)
    top.addWidget(refresh_button)
    layout.addLayout(top)

    hint_label = QLabel()
    hint_label.setObjectName(names[2])
    hint_label.setWordWrap(True)
    hint_label.setTextFormat(Qt.TextFormat.PlainText)
    hint_label.setStyleSheet("color: #9a9ca8;")
    layout.addWidget(hint_label)

    scroll = QScrollArea()
    scroll.setObjectName(names[3])
    scroll.setWidgetResizable(True)
    scroll.setFrameShape(QFrame.Shape.NoFrame)
    scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    body = QWidget()
    cards_layout = QVBoxLayout(body)
    cards_layout.setContentsMargins(0, 0, 0, 0)
    cards_layout.setSpacing(8)
    cards_layout.addStretch(1)
    scroll.setWidget(body)
    layout.addWidget(scroll, 1)
    return CardList(layout, add_button, refresh_button, hint_label, scroll, cards_layout)


def take_card(layout: QVBoxLayout, card: QWidget) -> None:
    """Take ``card`` out of the list's ``layout`` and delete it."""
    layout.removeWidget(card)
    card.hide()
    card.setParent(None)
    card.deleteLater()


def show_hint(
    label: QLabel, missing: str, searched: Sequence[Path], empty: str, cards: int
) -> None:
    """The hint line: ``missing`` (with the searched folders as tooltip) when no usable
    model is installed (``missing`` ""), else ``empty`` while there are no cards, else
    nothing (hidden)."""
    if missing:
        label.setText(missing)
        label.setToolTip("Searched:\n" + "\n".join(str(f) for f in searched))
    else:
        label.setText(empty if not cards else "")
        label.setToolTip("")
    label.setVisible(bool(label.text()))


def part_from(
    cls: type[P], item: P | Mapping[str, Any], what: str, message: Callable[[str], None]
) -> P | None:
    """``item`` as a ``cls`` part (it is one, or its plain dict from a request's JSON);
    None, with ``message("<what> was not restored: why")``, when it is not a valid one."""
    if isinstance(item, cls):
        return item
    try:
        if not isinstance(item, Mapping):
            raise RequestError(f"it is not a {cls.__name__}")
        part: P = from_plain(cls, dict(item), what)
        return part
    except RequestError as exc:
        message(f"{what} was not restored: {sentence(str(exc))}")
        return None
