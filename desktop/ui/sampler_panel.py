"""Sampler panel: the settings declared with ``panel="sampler"`` (sampler, schedule, steps, CFG,
seed, size, batch, and any setting added there later, which gets a generic editor)."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtGui import QRegularExpressionValidator, QStandardItemModel
from PySide6.QtWidgets import (
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QSpinBox,
    QToolButton,
    QWidget,
)

from desktop.engine.request import request_field
from desktop.engine.samplers import SAMPLERS, SCHEDULES, available_samplers
from desktop.ui.fields import IntEditor, SettingsPanel
from desktop.ui.form import size_presets
from desktop.ui.icons import icon


class SamplerPanel(SettingsPanel):
    """Sampling settings. ``last_seed`` is set by the window after each finished job.

    Signals:
        sampler_changed(str): another sampler was chosen.
        values_changed(): any value changed.
    """

    PANEL = "sampler"
    CUSTOM = frozenset({"sampler", "schedule", "seed", "width", "height"})
    sampler_changed = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("SamplerPanel")
        self.last_seed: int | None = None
        form = QFormLayout(self)
        form.setContentsMargins(10, 10, 10, 10)
        form.setHorizontalSpacing(10)
        form.setVerticalSpacing(6)

        self.sampler_combo = QComboBox()
        self.sampler_combo.setObjectName("SamplerCombo")
        self.sampler_combo.addItems(available_samplers())
        self.sampler_combo.setToolTip("The sampling method (same names as in other SD tools).")
        form.addRow("Sampler", self.sampler_combo)

        self.schedule_combo = QComboBox()
        self.schedule_combo.setObjectName("ScheduleCombo")
        self.schedule_combo.addItems(list(SCHEDULES))
        self.schedule_combo.setToolTip(
            "How noise levels are spaced. Greyed-out types are not supported by this sampler."
        )
        form.addRow("Schedule", self.schedule_combo)
        self.add_generic_editors(form, only=("steps", "cfg_scale"))

        seed_row = QHBoxLayout()
        self.seed_edit = QLineEdit("-1")
        self.seed_edit.setObjectName("SeedEdit")
        self.seed_edit.setValidator(QRegularExpressionValidator(r"^(-1|\d{0,10})$"))
        self.seed_edit.setToolTip("Seed of the noise; -1 picks a random seed for every job.")
        self.random_seed_button = QToolButton()
        self.random_seed_button.setIcon(icon("dice"))
        self.random_seed_button.setToolTip("Random seed (-1)")
        self.reuse_seed_button = QToolButton()
        self.reuse_seed_button.setIcon(icon("reuse"))
        self.reuse_seed_button.setToolTip("Reuse the seed of the last image")
        self.reuse_seed_button.setEnabled(False)
        seed_row.addWidget(self.seed_edit, 1)
        seed_row.addWidget(self.random_seed_button)
        seed_row.addWidget(self.reuse_seed_button)
        form.addRow("Seed", seed_row)

        self.preset_combo = QComboBox()
        self.preset_combo.setObjectName("SizePresets")
        self.preset_combo.setToolTip("Sizes that suit the selected model.")
        self.preset_combo.setPlaceholderText("Custom size")
        form.addRow("Preset", self.preset_combo)

        size_row = QHBoxLayout()
        self.width_spin = self._size_spin("width")
        self.height_spin = self._size_spin("height")
        self.swap_button = QToolButton()
        self.swap_button.setIcon(icon("swap"))
        self.swap_button.setToolTip("Swap width and height")
        size_row.addWidget(self.width_spin, 1)
        size_row.addWidget(self.swap_button)
        size_row.addWidget(self.height_spin, 1)
        form.addRow("Size", size_row)
        self.add_generic_editors(form)

        self._presets: tuple[tuple[int, int], ...] = ()
        self.sampler_combo.currentTextChanged.connect(self._on_sampler)
        self.random_seed_button.clicked.connect(lambda: self.set_seed(-1))
        self.reuse_seed_button.clicked.connect(self._reuse_seed)
        self.swap_button.clicked.connect(self.swap_size)
        self.preset_combo.activated.connect(self._apply_preset)
        self.width_spin.valueChanged.connect(self._sync_preset)
        self.height_spin.valueChanged.connect(self._sync_preset)
        for signal in (
            self.sampler_combo.currentTextChanged,
            self.schedule_combo.currentTextChanged,
            self.seed_edit.textChanged,
            self.width_spin.valueChanged,
            self.height_spin.valueChanged,
        ):
            signal.connect(lambda *_: self.values_changed.emit())
        self._on_sampler(self.sampler_combo.currentText())

    def _size_spin(self, name: str) -> QSpinBox:
        info = request_field(name)
        spin = IntEditor(info)
        spin.setObjectName(f"{name}_editor")
        spin.setToolTip(info.spec.help)
        return spin

    # -- values ----------------------------------------------------------------------------
    def _custom_values(self) -> dict[str, Any]:
        return {
            "sampler": self.sampler_combo.currentText(),
            "schedule": self.schedule_combo.currentText(),
            "seed": self.seed(),
            "width": self.width_spin.value(),
            "height": self.height_spin.value(),
        }

    def _set_custom_values(self, values: dict[str, Any]) -> None:
        if "sampler" in values or "schedule" in values:
            self.set_sampler(
                values.get("sampler", self.sampler_combo.currentText()),
                values.get("schedule", "Automatic"),
            )
        if values.get("seed") is not None:
            self.set_seed(int(values["seed"]))
        if values.get("width") is not None or values.get("height") is not None:
            self.set_size(
                int(values.get("width") or self.width_spin.value()),
                int(values.get("height") or self.height_spin.value()),
            )

    # -- sampler / schedule ----------------------------------------------------------------
    def _on_sampler(self, name: str) -> None:
        spec = SAMPLERS.get(name)
        supported = spec.schedules if spec else SCHEDULES
        model = self.schedule_combo.model()
        assert isinstance(model, QStandardItemModel)
        for row, schedule in enumerate(SCHEDULES):
            item = model.item(row)
            item.setEnabled(schedule in supported)
            item.setToolTip(
                "" if schedule in supported else f"The {name} sampler does not support this."
            )
        if self.schedule_combo.currentText() not in supported:
            self.schedule_combo.setCurrentText("Automatic")
        self.sampler_changed.emit(name)

    def set_sampler(self, name: str, schedule: str = "Automatic") -> None:
        if self.sampler_combo.findText(name) >= 0:
            self.sampler_combo.setCurrentText(name)
        spec = SAMPLERS.get(self.sampler_combo.currentText())
        if spec and schedule in spec.schedules:
            self.schedule_combo.setCurrentText(schedule)

    # -- seed ------------------------------------------------------------------------------
    def seed(self) -> int:
        text = self.seed_edit.text().strip()
        return int(text) if text not in ("", "-") else -1

    def set_seed(self, seed: int) -> None:
        self.seed_edit.setText(str(seed))

    def remember_seed(self, seed: int) -> None:
        self.last_seed = seed
        self.reuse_seed_button.setEnabled(True)
        self.reuse_seed_button.setToolTip(f"Reuse the seed of the last image ({seed})")

    def _reuse_seed(self) -> None:
        if self.last_seed is not None:
            self.set_seed(self.last_seed)

    # -- size ------------------------------------------------------------------------------
    def set_size(self, width: int, height: int) -> None:
        self.width_spin.setValue(width)
        self.height_spin.setValue(height)

    def swap_size(self) -> None:
        self.set_size(self.height_spin.value(), self.width_spin.value())

    def set_family(self, family: str, native_size: int = 0) -> None:
        """Offer the size presets of a model family."""
        self._presets = size_presets(family, native_size)
        self.preset_combo.clear()
        for w, h in self._presets:
            self.preset_combo.addItem(f"{w} × {h}")
        self._sync_preset()

    def _sync_preset(self) -> None:
        """Show the preset matching the current size, or "Custom size"."""
        size = (self.width_spin.value(), self.height_spin.value())
        index = self._presets.index(size) if size in self._presets else -1
        self.preset_combo.setCurrentIndex(index)

    def _apply_preset(self, index: int) -> None:
        if 0 <= index < len(self._presets):
            self.set_size(*self._presets[index])
