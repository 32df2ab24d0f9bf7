"""The sketch-to-image controls: a control image (loaded, dropped or pasted), the line map the
model will see, and how closely to follow it. Shown for models with a ControlNet."""

from __future__ import annotations

import uuid
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QImage, QPixmap
from PySide6.QtWidgets import (
    QApplication,
    QCheckBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
)

from runtime.paths import user_data_dir

PREVIEW_SIDE = 150


class ControlBox(QGroupBox):
    sketch_changed = Signal()

    def __init__(self) -> None:
        super().__init__("Sketch to image")
        self.path: str | None = None
        self.pad = None
        layout = QFormLayout(self)
        buttons = QHBoxLayout()
        self.draw_button = QPushButton("&Draw...")
        self.draw_button.clicked.connect(self.open_pad)
        buttons.addWidget(self.draw_button)
        self.load_button = QPushButton("&Load...")
        self.load_button.clicked.connect(self._browse)
        self.paste_button = QPushButton("&Paste")
        self.paste_button.clicked.connect(self.paste)
        self.clear_button = QPushButton("Clear")
        self.clear_button.clicked.connect(self.clear)
        for button in (self.load_button, self.paste_button, self.clear_button):
            buttons.addWidget(button)
        layout.addRow(buttons)
        self.preview = QLabel("Drop a sketch, drawing or photo here")
        self.preview.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.preview.setMinimumHeight(PREVIEW_SIDE)
        self.preview.setWordWrap(True)
        self.preview.setAccessibleName("Line map preview")
        layout.addRow(self.preview)
        self.note = QLabel()
        self.note.setWordWrap(True)
        self.note.setObjectName("note")
        layout.addRow(self.note)
        self.scale = QDoubleSpinBox()
        self.scale.setRange(0.0, 2.0)
        self.scale.setSingleStep(0.1)
        self.scale.setValue(1.0)
        self.scale.setAccessibleName("Control scale")
        layout.addRow("Follow s&trength", self.scale)
        self.live = QCheckBox("L&ive: regenerate while drawing")
        layout.addRow(self.live)
        self.error = ""

    def open_pad(self):
        from app.widgets.sketch_pad import SketchPad

        if self.pad is None:
            self.pad = SketchPad()
            self.pad.setWindowFlag(Qt.WindowType.Tool)
            self.pad.canvas.changed.connect(self._sketch_drawn)
        self.pad.show()
        self.pad.raise_()
        return self.pad

    def _sketch_drawn(self) -> None:
        """Each version of the sketch is its own file, so every image keeps the sketch it
        followed."""
        if self.set_qimage(self.pad.canvas.image):
            self.sketch_changed.emit()

    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Control image", "", "Images (*.png *.jpg *.jpeg *.webp *.bmp *.gif)")
        if path:
            self.set_image(Path(path))

    def paste(self) -> bool:
        image = QApplication.clipboard().image()
        return not image.isNull() and self.set_qimage(image)

    def set_qimage(self, image: QImage) -> bool:
        """Raw image data (pasted, or dragged from a browser) is kept as a PNG file first."""
        folder = user_data_dir() / "controls"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{uuid.uuid4().hex}.png"
        if not image.save(str(path), "PNG"):
            self.error = "The pasted image could not be stored."
            return False
        return self.set_image(path)

    def set_image(self, path: Path) -> bool:
        """Read the image and show the line map made from it; False, with `error`, if unusable."""
        from runtime import PHOTO_NOTE, ImageInputError, auto_control, load_image

        try:
            control, kind = auto_control(load_image(path))
        except ImageInputError as exc:
            self.error = str(exc)
            return False
        self.error = ""
        self.path = str(path)
        data = control.convert("RGB").tobytes("raw", "RGB")
        qimage = QImage(data, control.width, control.height, 3 * control.width,
                        QImage.Format.Format_RGB888).copy()
        self.preview.setPixmap(QPixmap.fromImage(qimage).scaled(
            PREVIEW_SIDE * 2, PREVIEW_SIDE, Qt.AspectRatioMode.KeepAspectRatio,
            Qt.TransformationMode.SmoothTransformation))
        notes = {"sketch": "Read as a drawn sketch.", "lines": "Used as a line map.",
                 "photo": PHOTO_NOTE}
        self.note.setText(notes[kind])
        return True

    def clear(self) -> None:
        self.path = None
        self.preview.clear()
        self.preview.setText("Drop a sketch, drawing or photo here")
        self.note.clear()
