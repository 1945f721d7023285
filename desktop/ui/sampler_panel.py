"""Sampler panel: the settings declared with ``panel="sampler"`` (sampler, schedule, steps, CFG,
seed, size, batch, and any setting added there later, which gets a generic editor)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtGui import QRegularExpressionValidator, QStandardItemModel
from PySide6.QtWidgets import (
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QSpinBox,
    QToolButton,
    QWidget,
)

from desktop.engine.errors import RequestError
from desktop.engine.hires import LATENT, hires_size
from desktop.engine.parts import HiresSpec
from desktop.engine.request import request_field
from desktop.engine.samplers import SAMPLERS, SCHEDULES, available_samplers
from desktop.engine.schema import fields_of
from desktop.ui.fields import Editor, IntEditor, SettingsPanel, changed_signal, make_editor
from desktop.ui.form import size_presets
from desktop.ui.icons import icon


class SamplerPanel(SettingsPanel):
    """Sampling settings. ``last_seed`` is set by the window after each finished job.

    Signals:
        sampler_changed(str): another sampler was chosen.
        values_changed(): any value changed.
    """

    PANEL = "sampler"
    CUSTOM = frozenset({"sampler", "schedule", "seed", "width", "height", "hires"})
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
        self.hires_box = HiresBox()
        form.addRow(self.hires_box)
        self.hires_box.values_changed.connect(self.values_changed.emit)
        self.width_spin.valueChanged.connect(self._show_hires_size)
        self.height_spin.valueChanged.connect(self._show_hires_size)
        self.hires_box.values_changed.connect(self._show_hires_size)

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
        self._show_hires_size()

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
            "hires": self.hires_box.spec(),
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
        if "hires" in values:
            self.hires_box.set_spec(_as_hires(values["hires"]))

    # -- hires fix -------------------------------------------------------------------------
    def set_upscalers(self, names: Sequence[str]) -> None:
        """Offer these upscaler models (besides Latent and Lanczos) for the hires fix."""
        self.hires_box.set_upscalers(names)

    def _show_hires_size(self) -> None:
        self.hires_box.show_size(self.width_spin.value(), self.height_spin.value())

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


def _as_hires(value: Any) -> HiresSpec | None:
    """A hires pass from a request value: the spec, its plain dict (restored settings), or
    None; a value that no longer validates is dropped."""
    if value is None or isinstance(value, HiresSpec):
        return value
    if isinstance(value, dict):
        try:
            return HiresSpec(**value)
        except (RequestError, TypeError):
            return None
    return None


class HiresBox(QGroupBox):
    """The hires fix: a switch (the box's check) with scale, upscaler, steps and denoise.

    Built from ``HiresSpec``'s declarations; the upscaler is a list of what is installed
    ("Latent" and "Lanczos" need no model). An upscaler no longer installed stays listed, so
    reusing an image shows what it was made with (the job then says it is missing).

    Signals:
        values_changed(): the switch or a value changed.
    """

    values_changed = Signal()
    BUILT_IN = (LATENT, "Lanczos")

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Hires fix", parent)
        self.setObjectName("HiresBox")
        self.setCheckable(True)
        self.setChecked(False)
        self.setToolTip(
            "Generate at the base size, upscale it, then refine it with a second pass "
            "at the larger size (AUTOMATIC1111's hires fix)."
        )
        form = QFormLayout(self)
        form.setContentsMargins(8, 6, 8, 6)
        self.editors: dict[str, Editor] = {}
        self.upscaler_combo = QComboBox()
        self.upscaler_combo.setObjectName("HiresUpscaler")
        self.upscaler_combo.setToolTip(
            "Latent: resize the latents (fast, softer). Lanczos: resize the picture. "
            "Upscaler models from models/upscale_models add detail."
        )
        self.upscaler_combo.addItems(self.BUILT_IN)
        for info in fields_of(HiresSpec):
            if info.name == "upscaler":
                form.addRow("Upscaler", self.upscaler_combo)
                continue
            editor = make_editor(info, self)
            editor.setObjectName(f"hires_{info.name}_editor")
            changed_signal(editor).connect(lambda *_: self.values_changed.emit())
            self.editors[info.name] = editor
            label = info.label.removeprefix("Hires ").capitalize()
            form.addRow(label, editor)
        self.size_label = QLabel()
        self.size_label.setObjectName("HiresSize")
        form.addRow("Result", self.size_label)
        self.upscaler_combo.currentTextChanged.connect(lambda _t: self.values_changed.emit())
        self.toggled.connect(lambda _on: self.values_changed.emit())

    def spec(self) -> HiresSpec | None:
        """The hires pass, or None when the switch is off (or a value is out of range)."""
        if not self.isChecked():
            return None
        values = {name: editor.value_() for name, editor in self.editors.items()}
        try:
            return HiresSpec(upscaler=self.upscaler_combo.currentText() or LATENT, **values)
        except RequestError:
            return None

    def set_spec(self, spec: HiresSpec | None) -> None:
        """Show ``spec`` (None: the switch off, the last values kept)."""
        self.setChecked(spec is not None)
        if spec is None:
            return
        for name, editor in self.editors.items():
            editor.set_value(getattr(spec, name))
        if self.upscaler_combo.findText(spec.upscaler) < 0:
            self.upscaler_combo.addItem(spec.upscaler)
        self.upscaler_combo.setCurrentText(spec.upscaler)

    def set_upscalers(self, names: Sequence[str]) -> None:
        current = self.upscaler_combo.currentText()
        self.upscaler_combo.blockSignals(True)
        self.upscaler_combo.clear()
        self.upscaler_combo.addItems(
            [*self.BUILT_IN, *(n for n in names if n not in self.BUILT_IN)]
        )
        if self.upscaler_combo.findText(current) < 0:
            self.upscaler_combo.addItem(current)
        self.upscaler_combo.setCurrentText(current)
        self.upscaler_combo.blockSignals(False)

    def show_size(self, width: int, height: int) -> None:
        """Show the size the hires pass makes from the base size."""
        scale = self.editors["scale"].value_()
        w, h = hires_size(width, height, float(scale))
        self.size_label.setText(f"{w} × {h}")
