"""Editors built from a setting's declaration, and the base class of the settings panels.

A panel lists the settings it edits by their ``panel`` name in ``desktop.engine.request``;
for each one it has no hand-made editor for, ``make_editor`` builds a spin box, check box,
combo box or line edit from the declaration (label, limits, step, unit, choices, help). So a
setting added in request.py appears in its panel with no change here.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QLineEdit,
    QSpinBox,
    QWidget,
)

from desktop.engine.request import panel_fields
from desktop.engine.schema import FieldInfo

_INT_LIMIT = 2**31 - 1


class IntEditor(QSpinBox):
    def __init__(self, info: FieldInfo, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        spec = info.spec
        low = int(spec.minimum) if spec.minimum is not None else -_INT_LIMIT
        high = int(spec.maximum) if spec.maximum is not None else _INT_LIMIT
        self.setRange(max(low, -_INT_LIMIT), min(high, _INT_LIMIT))
        self.setSingleStep(int(spec.step or 1))
        if spec.unit:
            self.setSuffix(f" {spec.unit}")
        self.setValue(int(info.default))

    def value_(self) -> int:
        return int(self.value())

    def set_value(self, value: Any) -> None:
        self.setValue(int(value))


class FloatEditor(QDoubleSpinBox):
    def __init__(self, info: FieldInfo, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        spec = info.spec
        self.setDecimals(spec.decimals)
        self.setRange(
            spec.minimum if spec.minimum is not None else -1e9,
            spec.maximum if spec.maximum is not None else 1e9,
        )
        self.setSingleStep(spec.step or 0.1)
        if spec.unit:
            self.setSuffix(f" {spec.unit}")
        self.setValue(float(info.default))

    def value_(self) -> float:
        return float(self.value())

    def set_value(self, value: Any) -> None:
        self.setValue(float(value))


class BoolEditor(QCheckBox):
    def __init__(self, info: FieldInfo, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setChecked(bool(info.default))

    def value_(self) -> bool:
        return self.isChecked()

    def set_value(self, value: Any) -> None:
        self.setChecked(bool(value))


class ChoiceEditor(QComboBox):
    def __init__(self, info: FieldInfo, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.addItems(list(info.spec.allowed() or ()))
        self.set_value(info.default)

    def value_(self) -> str:
        return self.currentText()

    def set_value(self, value: Any) -> None:
        if self.findText(str(value)) >= 0:
            self.setCurrentText(str(value))


class TextEditor(QLineEdit):
    def __init__(self, info: FieldInfo, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setText(str(info.default or ""))

    def value_(self) -> str:
        return self.text()

    def set_value(self, value: Any) -> None:
        self.setText("" if value is None else str(value))


Editor = IntEditor | FloatEditor | BoolEditor | ChoiceEditor | TextEditor


def make_editor(info: FieldInfo, parent: QWidget | None = None) -> Editor:
    """The widget that edits ``info``'s value (``value_()`` / ``set_value()``)."""
    editor: Editor
    if info.kind == "int":
        editor = IntEditor(info, parent)
    elif info.kind == "float":
        editor = FloatEditor(info, parent)
    elif info.kind == "bool":
        editor = BoolEditor(info, parent)
    elif info.kind == "text" and info.spec.allowed() is not None:
        editor = ChoiceEditor(info, parent)
    elif info.kind == "text":
        editor = TextEditor(info, parent)
    else:
        raise TypeError(f"{info.name} ({info.kind}) has no generic editor")
    editor.setObjectName(f"{info.name}_editor")
    editor.setToolTip(info.spec.help)
    return editor


def changed_signal(editor: Editor) -> Any:
    """The editor's "value changed" signal."""
    if isinstance(editor, (IntEditor, FloatEditor)):
        return editor.valueChanged
    if isinstance(editor, BoolEditor):
        return editor.toggled
    if isinstance(editor, ChoiceEditor):
        return editor.currentTextChanged
    return editor.textChanged


class SettingsPanel(QWidget):
    """A panel that edits some of a request's settings: ``values()`` / ``set_values()``.

    Subclasses set ``PANEL`` (the declarations' panel name) and ``CUSTOM`` (the settings
    they edit with hand-made widgets, read and written in ``_custom_values`` /
    ``_set_custom_values``); every other setting of the panel gets a generic editor, added
    to ``form`` by ``add_generic_editors`` in declaration order.

    Signals:
        values_changed(): a value changed (by the user or by ``set_values``).
    """

    PANEL = ""
    CUSTOM: frozenset[str] = frozenset()
    values_changed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.editors: dict[str, Editor] = {}

    def fields(self) -> tuple[FieldInfo, ...]:
        return panel_fields(self.PANEL)

    def add_generic_editors(self, form: QFormLayout, only: tuple[str, ...] = ()) -> None:
        """Add editors for the panel's non-custom settings (``only``: just these names)."""
        for info in self.fields():
            if info.name in self.CUSTOM or info.name in self.editors:
                continue
            if only and info.name not in only:
                continue
            editor = make_editor(info, self)
            changed_signal(editor).connect(lambda *_: self.values_changed.emit())
            self.editors[info.name] = editor
            form.addRow(info.label, editor)

    def values(self) -> dict[str, Any]:
        """The panel's settings by name."""
        values = {name: editor.value_() for name, editor in self.editors.items()}
        values.update(self._custom_values())
        return values

    def set_values(self, values: dict[str, Any]) -> None:
        """Show ``values`` (names this panel does not edit are ignored)."""
        for name, value in values.items():
            editor = self.editors.get(name)
            if editor is not None and value is not None:
                editor.set_value(value)
        self._set_custom_values({k: v for k, v in values.items() if k in self.CUSTOM})

    def _custom_values(self) -> dict[str, Any]:
        return {}

    def _set_custom_values(self, values: dict[str, Any]) -> None:
        return None
