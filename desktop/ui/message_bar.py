"""A non-modal message strip above the canvas: errors and notices that never block."""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton, QToolButton, QWidget

from desktop.ui.icons import icon


class MessageBar(QFrame):
    """Shows one message with an optional action button; hidden when empty."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("MessageBar")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(12, 6, 6, 6)
        self.label = QLabel()
        self.label.setWordWrap(True)
        self.label.setObjectName("MessageText")
        self.action_button = QPushButton()
        self.action_button.setVisible(False)
        self.close_button = QToolButton()
        self.close_button.setIcon(icon("close"))
        self.close_button.setToolTip("Dismiss")
        layout.addWidget(self.label, 1)
        layout.addWidget(self.action_button)
        layout.addWidget(self.close_button)
        self.close_button.clicked.connect(self.dismiss)
        self._action: Callable[[], None] | None = None
        self.action_button.clicked.connect(self._run_action)
        self.setVisible(False)

    def show_message(
        self,
        text: str,
        level: str = "error",
        action: tuple[str, Callable[[], None]] | None = None,
    ) -> None:
        """Show ``text``; ``level`` is "error", "warning" or "info" (styled by the theme)."""
        self.label.setText(text)
        self.setProperty("level", level)
        self.style().unpolish(self)
        self.style().polish(self)
        if action is not None:
            self.action_button.setText(action[0])
            self._action = action[1]
            self.action_button.setVisible(True)
        else:
            self._action = None
            self.action_button.setVisible(False)
        self.setVisible(True)

    def text(self) -> str:
        return self.label.text() if self.isVisibleTo(self.parentWidget()) else ""

    def dismiss(self) -> None:
        self.setVisible(False)
        self.label.clear()
        self._action = None

    def _run_action(self) -> None:
        if self._action is not None:
            self._action()
