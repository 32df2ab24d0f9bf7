"""The settings dialog: output and model folders, device, precision, performance, theme."""

from __future__ import annotations

import dataclasses

from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.viewmodels.settings import PERFORMANCE_PRESETS, THEMES, Settings


def _combo(options: dict[str, str], current: str) -> QComboBox:
    box = QComboBox()
    for key, label in options.items():
        box.addItem(label, key)
    box.setCurrentIndex(max(0, box.findData(current)))
    return box


class SettingsDialog(QDialog):
    def __init__(self, settings: Settings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Settings")
        self.setSizeGripEnabled(True)
        self._settings = settings
        form = QFormLayout()
        out_row = QHBoxLayout()
        self.output = QLineEdit(str(settings.output_path))
        browse = QPushButton("Browse...")
        browse.clicked.connect(self._browse_output)
        out_row.addWidget(self.output, 1)
        out_row.addWidget(browse)
        form.addRow(QLabel("&Output folder", buddy=self.output), out_row)

        self.model_dirs = QListWidget()
        self.model_dirs.addItems(settings.extra_model_dirs)
        self.model_dirs.setMaximumHeight(90)
        dir_buttons = QHBoxLayout()
        add, remove = QPushButton("Add folder..."), QPushButton("Remove")
        add.clicked.connect(self._add_model_dir)
        remove.clicked.connect(lambda: self.model_dirs.takeItem(self.model_dirs.currentRow()))
        dir_buttons.addWidget(add)
        dir_buttons.addWidget(remove)
        dir_box = QVBoxLayout()
        dir_box.addWidget(self.model_dirs)
        dir_box.addLayout(dir_buttons)
        form.addRow(QLabel("Extra &model folders", buddy=self.model_dirs), dir_box)

        self.device = _combo({"auto": "Automatic (GPU if present)", "cuda": "NVIDIA GPU (CUDA)",
                              "cpu": "CPU (slow)"}, settings.device)
        form.addRow("&Device", self.device)
        self.precision = _combo({"auto": "Automatic (recommended)", "bf16": "bfloat16",
                                 "fp16": "float16", "fp32": "float32 (slowest, most exact)"},
                                settings.precision)
        form.addRow("&Precision", self.precision)
        self.performance = _combo(PERFORMANCE_PRESETS, settings.performance)
        form.addRow("P&erformance", self.performance)
        self.theme = _combo(THEMES, settings.theme)
        form.addRow("&Theme", self.theme)

        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok
                                   | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(buttons)
        self.resize(560, 360)

    def _browse_output(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Output folder", self.output.text())
        if folder:
            self.output.setText(folder)

    def _add_model_dir(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Model folder")
        if folder:
            self.model_dirs.addItem(folder)

    def result_settings(self) -> Settings:
        dirs = [self.model_dirs.item(i).text() for i in range(self.model_dirs.count())]
        return dataclasses.replace(
            self._settings, output_dir=self.output.text().strip(), extra_model_dirs=dirs,
            device=self.device.currentData(), precision=self.precision.currentData(),
            performance=self.performance.currentData(), theme=self.theme.currentData())
