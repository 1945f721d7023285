"""Prompt panel: prompt, negative prompt, the model picker and, once ComfyUI servers are set
up, the backend picker next to it (this computer, one server, or all of them)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QStandardItem, QStandardItemModel
from PySide6.QtWidgets import (
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from desktop.engine.models import ModelInfo, match_model
from desktop.engine.prompt_tokens import TokenCount
from desktop.ui.fields import SettingsPanel
from desktop.ui.icons import icon
from desktop.ui.prompt_edit import Counter, PromptEdit

DEFAULT_PLACEHOLDER = "Describe the image you want…"
_INFO_ROLE = Qt.ItemDataRole.UserRole + 1


_SYNTAX_HELP = (
    "Weights as in AUTOMATIC1111: (word) ×1.1, [word] ÷1.1, (word:1.3); Ctrl+Up/Down "
    "changes the weight of the selected words. BREAK starts a new 75-token chunk; "
    "[a:b:0.5] switches from a to b halfway; [a|b] alternates every step."
)


def _count_label(name: str) -> QLabel:
    label = QLabel("")
    label.setObjectName(name)
    label.setVisible(False)
    label.setToolTip("Tokens used / the chunks they fill (75 tokens each)")
    return label


def _show_count(label: QLabel, count: TokenCount) -> None:
    label.setText(count.text)
    if count.cut:
        label.setStyleSheet("color: #ff7a7a; font-weight: bold;")
        label.setToolTip(
            f"This model reads only {count.capacity} tokens; the rest of the prompt is ignored."
        )
    else:
        label.setStyleSheet("")
        label.setToolTip("Tokens used / the chunks they fill (75 tokens each)")


def model_key(info: ModelInfo) -> str:
    """What a request and the settings store for a model: its path."""
    return str(info.path)


class PromptPanel(SettingsPanel):
    """Prompt and negative prompt editors plus the model picker.

    Signals:
        model_changed(object): the selected ``ModelInfo`` (None when nothing is usable).
        refresh_requested(): the user asked to rescan the model folders.
        backend_changed(str): the user chose where jobs run (a ``set_backends`` key).
    """

    PANEL = "prompt"
    CUSTOM = frozenset({"prompt", "negative_prompt", "model"})
    model_changed = Signal(object)
    refresh_requested = Signal()
    backend_changed = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("PromptPanel")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(10, 10, 10, 10)
        layout.setSpacing(6)

        model_row = QHBoxLayout()
        self.model_combo = QComboBox()
        self.model_combo.setObjectName("ModelCombo")
        self.model_combo.setToolTip("The model that generates the image (family in brackets).")
        self.model_combo.setSizeAdjustPolicy(
            QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
        )
        self.model_combo.setMinimumContentsLength(14)
        self._model_items = QStandardItemModel(self.model_combo)
        self.model_combo.setModel(self._model_items)
        self.refresh_button = QToolButton()
        self.refresh_button.setObjectName("RefreshModels")
        self.refresh_button.setIcon(icon("refresh"))
        self.refresh_button.setToolTip("Rescan the model folders")
        # Hidden until a ComfyUI server is set up (see ``set_backends``).
        self.backend_label = QLabel("on")
        self.backend_combo = QComboBox()
        self.backend_combo.setObjectName("BackendCombo")
        self.backend_combo.setToolTip(
            "Where jobs run: this computer, one ComfyUI server, or all of them (each job goes "
            "to the next server free to run it). Servers are set up in File ▸ Settings."
        )
        self.backend_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        for widget in (self.backend_label, self.backend_combo):
            widget.setVisible(False)
        model_row.addWidget(QLabel("Model"))
        model_row.addWidget(self.model_combo, 1)
        model_row.addWidget(self.backend_label)
        model_row.addWidget(self.backend_combo)
        model_row.addWidget(self.refresh_button)
        layout.addLayout(model_row)

        prompt_row = QHBoxLayout()
        prompt_row.addWidget(QLabel("Prompt"))
        prompt_row.addStretch(1)
        self.example_button = QToolButton()
        self.example_button.setText("Example")
        self.example_button.setToolTip("Fill in an example prompt that suits this model")
        self.example_button.setVisible(False)
        prompt_row.addWidget(self.example_button)
        self.prompt_count = _count_label("PromptTokenCount")
        prompt_row.addWidget(self.prompt_count)
        layout.addLayout(prompt_row)
        self.prompt_edit = PromptEdit()
        self.prompt_edit.setObjectName("PromptEdit")
        self.prompt_edit.setPlaceholderText(DEFAULT_PLACEHOLDER)
        self.prompt_edit.setToolTip(
            f"What the image should show. Ctrl+Enter generates.\n{_SYNTAX_HELP}"
        )
        self.prompt_edit.setTabChangesFocus(True)
        layout.addWidget(self.prompt_edit, 3)

        negative_row = QHBoxLayout()
        negative_row.addWidget(QLabel("Negative prompt"))
        negative_row.addStretch(1)
        self.negative_count = _count_label("NegativeTokenCount")
        negative_row.addWidget(self.negative_count)
        layout.addLayout(negative_row)
        self.negative_edit = PromptEdit()
        self.negative_edit.setObjectName("NegativeEdit")
        self.negative_edit.setPlaceholderText("What to avoid (optional)…")
        self.negative_edit.setToolTip("What the image should not show.")
        self.negative_edit.setTabChangesFocus(True)
        layout.addWidget(self.negative_edit, 2)
        # Settings added to this panel later get generic editors here.
        extra = QFormLayout()
        self.add_generic_editors(extra)
        layout.addLayout(extra)

        self._examples: list[str] = []
        self._example_index = 0
        self.model_combo.currentIndexChanged.connect(self._on_model_index)
        self.backend_combo.activated.connect(self._on_backend_activated)
        self.refresh_button.clicked.connect(self.refresh_requested)
        self.example_button.clicked.connect(self._next_example)
        self.prompt_edit.token_count_changed.connect(
            lambda count: _show_count(self.prompt_count, count)
        )
        self.negative_edit.token_count_changed.connect(
            lambda count: _show_count(self.negative_count, count)
        )

    def set_token_counter(self, counter: Counter | None) -> None:
        """Count both prompts with ``counter`` (the selected model's tokenizer)."""
        self.prompt_edit.set_counter(counter)
        self.negative_edit.set_counter(counter)
        for label in (self.prompt_count, self.negative_count):
            label.setVisible(counter is not None)

    # -- values ----------------------------------------------------------------------------
    def _custom_values(self) -> dict[str, Any]:
        return {
            "prompt": self.prompt(),
            "negative_prompt": self.negative_prompt(),
            "model": self.current_key(),
        }

    def _set_custom_values(self, values: dict[str, Any]) -> None:
        if "prompt" in values or "negative_prompt" in values:
            self.set_prompt(values.get("prompt", self.prompt()), values.get("negative_prompt"))
        if values.get("model"):
            self.select_model(str(values["model"]))

    def select_model(self, key: str) -> bool:
        """Select the listed usable model whose path is ``key``; False when none is."""
        for row in range(self._model_items.rowCount()):
            item = self._model_items.item(row)
            info = item.data(_INFO_ROLE) if item is not None else None
            if isinstance(info, ModelInfo) and info.usable and model_key(info) == key:
                self.model_combo.setCurrentIndex(row)
                return True
        return False

    # -- prompt ----------------------------------------------------------------------------
    def focus_prompt(self) -> None:
        """Put the keyboard focus in the prompt box, the cursor at the end of the text."""
        self.prompt_edit.setFocus(Qt.FocusReason.ActiveWindowFocusReason)
        self.prompt_edit.moveCursor(self.prompt_edit.textCursor().MoveOperation.End)

    def prompt(self) -> str:
        return self.prompt_edit.toPlainText()

    def negative_prompt(self) -> str:
        return self.negative_edit.toPlainText()

    def set_prompt(self, text: str, negative: str | None = None) -> None:
        self.prompt_edit.setPlainText(text)
        if negative is not None:
            self.negative_edit.setPlainText(negative)

    # -- backends --------------------------------------------------------------------------
    def set_backends(self, choices: Sequence[tuple[str, str]], current: str) -> None:
        """Offer ``choices`` ((key, label) pairs) with ``current`` selected; the picker is
        hidden while there is only one choice (no server is set up)."""
        self.backend_combo.blockSignals(True)
        self.backend_combo.clear()
        for key, label in choices:
            self.backend_combo.addItem(label, key)
        self.backend_combo.setCurrentIndex(max(0, self.backend_combo.findData(current)))
        self.backend_combo.blockSignals(False)
        for widget in (self.backend_label, self.backend_combo):
            widget.setVisible(len(choices) > 1)
        self._update_refresh_tip()

    def current_backend(self) -> str:
        """The chosen backend's key ("" while none is offered)."""
        data = self.backend_combo.currentData()
        return str(data) if data is not None else ""

    def select_backend(self, key: str) -> bool:
        """Choose the backend ``key`` as the user would (``backend_changed`` follows)."""
        index = self.backend_combo.findData(key)
        if index < 0:
            return False
        self.backend_combo.setCurrentIndex(index)
        self._on_backend_activated(index)
        return True

    def _on_backend_activated(self, index: int) -> None:
        self._update_refresh_tip()
        data = self.backend_combo.itemData(index)
        if data is not None:
            self.backend_changed.emit(str(data))

    def _update_refresh_tip(self) -> None:
        servers = self.backend_combo.isVisibleTo(self) and self.backend_combo.currentIndex() > 0
        self.refresh_button.setToolTip(
            "Ask the servers again for their models" if servers else "Rescan the model folders"
        )

    # -- models ----------------------------------------------------------------------------
    def show_model_placeholder(self, text: str, tooltip: str = "") -> None:
        """List nothing but a disabled ``text`` (e.g. "Connecting…" while no server has
        answered); no model is selected then."""
        self.model_combo.blockSignals(True)
        self._model_items.clear()
        item = QStandardItem(text)
        item.setEnabled(False)
        item.setToolTip(tooltip or text)
        self._model_items.appendRow(item)
        self.model_combo.setCurrentIndex(0)
        self.model_combo.blockSignals(False)
        self.model_combo.setToolTip(tooltip or text)
        self._on_model_index(0)

    def listed_models(self) -> list[ModelInfo]:
        """The models in the picker, in order (placeholders left out)."""
        items = (self._model_items.item(row) for row in range(self._model_items.rowCount()))
        infos = (item.data(_INFO_ROLE) for item in items if item is not None)
        return [info for info in infos if isinstance(info, ModelInfo)]

    def set_models(self, models: list[ModelInfo], select: str = "") -> None:
        """Fill the picker; select ``select`` (a path or name) or the default model.

        The default is the built-in model, else the first usable one. Unusable models are
        listed but disabled, with the reason as their tooltip.
        """
        previous = select or self.current_key()
        self.model_combo.blockSignals(True)
        self._model_items.clear()
        for info in models:
            item = QStandardItem(f"{info.name}  [{info.label}]")
            item.setData(info, _INFO_ROLE)
            if info.usable:
                where = " on the server" if info.extras.get("server") else ""
                tip = f"{info.label} model{where}\n{info.path}"
                if info.reason:
                    tip += f"\nNote: {info.reason}"
                item.setToolTip(tip)
            else:
                item.setEnabled(False)
                item.setText(f"{info.name}  [{info.label}] — unusable")
                item.setToolTip(f"Cannot be used: {info.reason}\n{info.path}")
            self._model_items.appendRow(item)
        index = self._find(previous, models)
        self.model_combo.setCurrentIndex(index)
        self.model_combo.blockSignals(False)
        self._on_model_index(index)

    def _find(self, key: str, models: list[ModelInfo]) -> int:
        match = match_model(models, key) if key else None
        if match is not None and match.usable:
            return models.index(match)
        for i, info in enumerate(models):
            if info.usable and info.family == "builtin":
                return i
        return next((i for i, info in enumerate(models) if info.usable), -1)

    def current_model(self) -> ModelInfo | None:
        index = self.model_combo.currentIndex()
        if index < 0:
            return None
        item = self._model_items.item(index)
        info = item.data(_INFO_ROLE) if item is not None else None
        return info if isinstance(info, ModelInfo) and info.usable else None

    def current_key(self) -> str:
        info = self.current_model()
        return model_key(info) if info else ""

    def _on_model_index(self, _index: int) -> None:
        info = self.current_model()
        examples = list(info.extras.get("example_prompts", [])) if info else []
        self._examples = [str(e) for e in examples if str(e).strip()]
        self._example_index = 0
        if self._examples:
            self.prompt_edit.setPlaceholderText(f"e.g. {self._examples[0]}")
            listed = "\n".join(f"• {e}" for e in self._examples[:8])
            self.prompt_edit.setToolTip(
                "What the image should show. Ctrl+Enter generates.\n\n"
                f"The built-in model knows prompts like:\n{listed}"
            )
        else:
            self.prompt_edit.setPlaceholderText(DEFAULT_PLACEHOLDER)
            self.prompt_edit.setToolTip(
                f"What the image should show. Ctrl+Enter generates.\n{_SYNTAX_HELP}"
            )
        self.example_button.setVisible(bool(self._examples))
        if info is not None:
            where = " on the server" if info.extras.get("server") else ""
            self.model_combo.setToolTip(f"{info.name} — {info.label} model{where}\n{info.path}")
        self.model_changed.emit(info)

    def _next_example(self) -> None:
        if not self._examples:
            return
        # setPlainText would wipe the undo stack; a cursor edit keeps Ctrl+Z working.
        cursor = self.prompt_edit.textCursor()
        cursor.select(cursor.SelectionType.Document)
        cursor.insertText(self._examples[self._example_index % len(self._examples)])
        self._example_index += 1
