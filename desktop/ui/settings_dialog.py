"""The settings dialog: output folder, extra model folders, the compute device and the
performance settings (precision, GPU memory mode, torch.compile)."""

from __future__ import annotations

import dataclasses

from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QListWidget,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from desktop.engine import paths
from desktop.engine.devices import (
    DEVICE_CHOICES,
    DEVICE_CHOICES_HELP,
    MEMORY_MODE_HELP,
    MEMORY_MODES,
    PRECISION_CHOICES,
    parse_device,
)
from desktop.engine.errors import RequestError
from desktop.engine.settings import QUEUE_ON_START, Settings, server_entry
from desktop.ui.servers_editor import ServersEditor

#: The devices the combo offers: the engine's list (a "cuda:N" setting is added to it).
DEVICES = DEVICE_CHOICES


def _device_items(current: str) -> tuple[list[str], str]:
    """The combo's items and the selected one for the device setting ``current``."""
    try:
        value = parse_device(current)
    except RequestError:
        value = "auto"
    items = list(DEVICE_CHOICES)
    if value not in items:  # "cuda:1" from the settings file or the command line
        items.append(value)
    return items, value


#: What the queue does at start-up, as the combo shows it (keys: ``QUEUE_ON_START``).
_QUEUE_ON_START = {"run": "Run them on start", "paused": "Restore them paused"}
assert tuple(_QUEUE_ON_START) == QUEUE_ON_START

_PRECISION_HELP = (
    "The number format the UNet and text encoders compute in. auto: bf16 on CPUs with native "
    "bf16 (AVX-512 BF16 or AMX) and on recent GPUs, fp16 on other GPUs, fp32 otherwise "
    "(fp16 is never picked on a CPU: it is several times slower there). "
    "`sandstorm --check` shows what auto picks on this machine and why."
)
_VAE_PRECISION_HELP = (
    "The VAE's number format. auto: fp32 on CPUs; on GPUs the model's format, except SDXL's "
    "VAE, which is kept in fp32. A picture that decodes to NaN (black) is decoded again in fp32."
)


def _combo(name: str, items: tuple[str, ...], current: str, tooltip: str) -> QComboBox:
    combo = QComboBox()
    combo.setObjectName(name)
    combo.addItems(list(items))
    combo.setCurrentText(current if current in items else items[0])
    combo.setToolTip(tooltip)
    return combo


class SettingsDialog(QDialog):
    """Edits a copy of the path settings; ``result_settings()`` returns the edited copy."""

    def __init__(self, settings: Settings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Settings")
        self.setObjectName("SettingsDialog")
        self.setMinimumWidth(520)
        self._settings = dataclasses.replace(settings)
        layout = QVBoxLayout(self)
        form = QFormLayout()

        out_row = QHBoxLayout()
        self.output_edit = QLineEdit(settings.output_dir)
        self.output_edit.setPlaceholderText(str(paths.pictures_dir()))
        self.output_edit.setToolTip("Where generated images are saved (empty: the default).")
        browse = QPushButton("Browse…")
        browse.setToolTip("Choose the output folder")
        browse.clicked.connect(self._browse_output)
        out_row.addWidget(self.output_edit, 1)
        out_row.addWidget(browse)
        form.addRow("Output folder", out_row)

        self.folders = QListWidget()
        self.folders.setObjectName("ExtraFolders")
        self.folders.setToolTip(
            "Extra folders scanned for models (e.g. a ComfyUI or AUTOMATIC1111 models folder)."
        )
        self.folders.addItems(settings.extra_model_folders)
        folder_buttons = QHBoxLayout()
        self.add_folder_button = QPushButton("Add…")
        self.add_folder_button.setToolTip("Add a folder to scan for models")
        self.remove_folder_button = QPushButton("Remove")
        self.remove_folder_button.setToolTip("Stop scanning the selected folder")
        self.add_folder_button.clicked.connect(self._add_folder)
        self.remove_folder_button.clicked.connect(self._remove_folder)
        folder_buttons.addWidget(self.add_folder_button)
        folder_buttons.addWidget(self.remove_folder_button)
        folder_buttons.addStretch(1)
        folder_box = QVBoxLayout()
        folder_box.addWidget(self.folders)
        folder_box.addLayout(folder_buttons)
        form.addRow("Model folders", folder_box)

        self.device_combo = QComboBox()
        device_items, current_device = _device_items(settings.device)
        self.device_combo.addItems(device_items)
        self.device_combo.setCurrentText(current_device)
        self.device_combo.setToolTip(
            f"Where models run ({DEVICE_CHOICES_HELP}); auto picks the GPU when there is one."
        )
        form.addRow("Device", self.device_combo)

        self.precision_combo = _combo(
            "PrecisionCombo", PRECISION_CHOICES, settings.precision, _PRECISION_HELP
        )
        form.addRow("Precision", self.precision_combo)
        self.vae_precision_combo = _combo(
            "VaePrecisionCombo", PRECISION_CHOICES, settings.vae_precision, _VAE_PRECISION_HELP
        )
        form.addRow("VAE precision", self.vae_precision_combo)
        memory_help = "; ".join(f"{mode}: {text}" for mode, text in MEMORY_MODE_HELP.items())
        self.memory_combo = _combo(
            "MemoryModeCombo",
            MEMORY_MODES,
            settings.memory_mode,
            f"How much GPU memory to save. auto: chosen from the free VRAM and the model. "
            f"{memory_help}.",
        )
        form.addRow("GPU memory", self.memory_combo)
        self.compile_check = QCheckBox("Compile the UNet with torch.compile")
        self.compile_check.setObjectName("CompileCheck")
        self.compile_check.setChecked(settings.torch_compile)
        self.compile_check.setToolTip(
            "The first job after a start compiles for a few minutes (the kernels are cached for "
            "later starts); later steps may run faster or slower depending on the machine. "
            "See the benchmark figures in the README before turning it on."
        )
        form.addRow("", self.compile_check)

        self.queue_combo = QComboBox()
        self.queue_combo.setObjectName("QueueOnStartCombo")
        for value, text in _QUEUE_ON_START.items():
            self.queue_combo.addItem(text, value)
        self.queue_combo.setCurrentIndex(
            max(0, list(_QUEUE_ON_START).index(settings.queue_on_start))
        )
        self.queue_combo.setToolTip(
            "Jobs still waiting when Sandstorm closed (or crashed) come back on the next start. "
            "A job that was running during a crash is never rerun by itself."
        )
        form.addRow("Waiting jobs", self.queue_combo)
        self.servers_editor = ServersEditor(settings.server_configs())
        form.addRow("ComfyUI servers", self.servers_editor)
        layout.addLayout(form)

        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)

    def add_folder(self, folder: str) -> None:
        existing = [self.folders.item(i).text() for i in range(self.folders.count())]
        if folder and folder not in existing:
            self.folders.addItem(folder)

    def _add_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Add a model folder")
        self.add_folder(folder)

    def _remove_folder(self) -> None:
        for item in self.folders.selectedItems():
            self.folders.takeItem(self.folders.row(item))

    def _browse_output(self) -> None:
        folder = QFileDialog.getExistingDirectory(
            self, "Choose the output folder", self.output_edit.text()
        )
        if folder:
            self.output_edit.setText(folder)

    def result_settings(self) -> Settings:
        """A copy of the settings with this dialog's values."""
        return dataclasses.replace(
            self._settings,
            output_dir=self.output_edit.text().strip(),
            extra_model_folders=[self.folders.item(i).text() for i in range(self.folders.count())],
            device=self.device_combo.currentText(),
            precision=self.precision_combo.currentText(),
            vae_precision=self.vae_precision_combo.currentText(),
            memory_mode=self.memory_combo.currentText(),
            torch_compile=self.compile_check.isChecked(),
            queue_on_start=str(self.queue_combo.currentData()),
            servers=[server_entry(config) for config in self.servers_editor.configs()],
        )

    def done(self, result: int) -> None:
        self.servers_editor.shutdown()
        super().done(result)
