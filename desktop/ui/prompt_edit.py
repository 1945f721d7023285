"""The prompt box: highlighting of weights, editing, BREAK and tags, Ctrl+Up/Down to change
the weight of the selected words, and a token count like AUTOMATIC1111's ("31/75")."""

from __future__ import annotations

import re
from collections.abc import Callable

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import (
    QColor,
    QFont,
    QKeyEvent,
    QSyntaxHighlighter,
    QTextCharFormat,
    QTextDocument,
)
from PySide6.QtWidgets import QPlainTextEdit, QWidget

from desktop.engine.prompt_syntax import adjust_weight
from desktop.engine.prompt_tokens import TokenCount

#: Ctrl+Up / Ctrl+Down change a weight by this much.
WEIGHT_STEP = 0.1
#: The count waits this long after the last keystroke.
COUNT_DELAY_MS = 120

Counter = Callable[[str], TokenCount]


def _format(colour: str, bold: bool = False) -> QTextCharFormat:
    fmt = QTextCharFormat()
    fmt.setForeground(QColor(colour))
    if bold:
        fmt.setFontWeight(QFont.Weight.Bold)
    return fmt


class PromptHighlighter(QSyntaxHighlighter):
    """Colours what the prompt syntax means: brackets and weights, tags, BREAK, embeddings."""

    RULES: tuple[tuple[str, str], ...] = (
        ("bracket", r"(?<!\\)[()\[\]]"),
        ("weight", r"(?<=:)\s*[+-]?(?:\d+(?:\.\d*)?|\.\d+)\s*(?=[)\]])"),
        ("separator", r"(?<!\\)[|]"),
        ("tag", r"<\w+:[^>]+>"),
        ("embedding", r"\bembedding:[\w.\-]+"),
        ("break", r"\bBREAK\b"),
    )

    def __init__(self, document: QTextDocument) -> None:
        super().__init__(document)
        self.formats = {
            "bracket": _format("#e0a040", bold=True),
            "weight": _format("#e0a040"),
            "separator": _format("#e0a040", bold=True),
            "tag": _format("#6fb7ff"),
            "embedding": _format("#c08fff"),
            "break": _format("#ff7a7a", bold=True),
        }
        self._rules = [(name, re.compile(pattern)) for name, pattern in self.RULES]

    def highlightBlock(self, text: str) -> None:
        for name, pattern in self._rules:
            for match in pattern.finditer(text):
                self.setFormat(match.start(), match.end() - match.start(), self.formats[name])

    def spans(self, text: str) -> list[tuple[str, str]]:
        """(kind, text) of everything highlighted in ``text`` (for tests and tooltips)."""
        return [(name, m.group(0)) for name, p in self._rules for m in p.finditer(text)]


class PromptEdit(QPlainTextEdit):
    """A plain-text prompt editor that knows the prompt syntax.

    Signals:
        token_count_changed(object): a ``TokenCount`` after the text settles.
    """

    token_count_changed = Signal(object)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.highlighter = PromptHighlighter(self.document())
        self._counter: Counter | None = None
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(COUNT_DELAY_MS)
        self._timer.timeout.connect(self.count_now)
        self.textChanged.connect(self._timer.start)
        self.last_count: TokenCount | None = None

    def set_counter(self, counter: Counter | None) -> None:
        """Count with ``counter`` (the selected model's tokenizer) from now on."""
        self._counter = counter
        self.count_now()

    def count_now(self) -> None:
        self._timer.stop()
        if self._counter is None:
            return
        self.last_count = self._counter(self.toPlainText())
        self.token_count_changed.emit(self.last_count)

    def keyPressEvent(self, event: QKeyEvent) -> None:
        ctrl = event.modifiers() & Qt.KeyboardModifier.ControlModifier
        if ctrl and event.key() in (Qt.Key.Key_Up, Qt.Key.Key_Down):
            self.change_weight(WEIGHT_STEP if event.key() == Qt.Key.Key_Up else -WEIGHT_STEP)
            event.accept()
            return
        super().keyPressEvent(event)

    def change_weight(self, delta: float) -> None:
        """Ctrl+Up/Down: re-weight the selection (or the word at the cursor), keeping undo."""
        cursor = self.textCursor()
        text = self.toPlainText()
        new, start, end = adjust_weight(text, cursor.selectionStart(), cursor.selectionEnd(), delta)
        if new == text:
            return
        # Replace only the changed middle, in one undoable edit.
        head = 0
        while head < min(len(text), len(new)) and text[head] == new[head]:
            head += 1
        tail = 0
        while tail < min(len(text), len(new)) - head and text[-1 - tail] == new[-1 - tail]:
            tail += 1
        cursor.beginEditBlock()
        cursor.setPosition(head)
        cursor.setPosition(len(text) - tail, cursor.MoveMode.KeepAnchor)
        cursor.insertText(new[head : len(new) - tail])
        cursor.endEditBlock()
        cursor.setPosition(start)
        cursor.setPosition(end, cursor.MoveMode.KeepAnchor)
        self.setTextCursor(cursor)
