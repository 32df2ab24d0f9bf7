"""The sketch-to-image controls: a control image (loaded, dropped or pasted), the line map the
model will see, and how closely to follow it. Shown for models with a ControlNet."""

from __future__ import annotations

import contextlib
import logging
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
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
# The preview's line map is drawn at about this many pixels: it is shown at 300x150, and a
# full-size map (the engine draws its own at the image's size) takes a few hundred ms.
PREVIEW_AREA = 384 * 384


def _draw_line_map(image) -> tuple[QImage, str]:
    """The preview line map and what the image was read as; a null image if it failed."""
    from runtime import auto_control
    from runtime.images import fit_to_supported_size

    try:
        size = fit_to_supported_size(*image.size, target_area=PREVIEW_AREA)
        control, kind = auto_control(image, size=size)
    except Exception:  # a preview is a courtesy: it never takes the app down
        logging.getLogger("linea.gui").exception("line map preview failed")
        return QImage(), ""
    data = control.convert("RGB").tobytes("raw", "RGB")
    return QImage(data, control.width, control.height, 3 * control.width,
                  QImage.Format.Format_RGB888).copy(), kind


class ControlBox(QGroupBox):
    sketch_changed = Signal()
    preview_ready = Signal()
    # emitted from the preview thread; Qt queues it to the UI thread
    _line_map_drawn = Signal(int, QImage, str)

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
        self.kind = ""  # what the current image was read as: "sketch", "lines" or "photo"
        self._ticket = 0
        # One plain Python thread draws previews (no QObject crosses threads); the newest wins.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="line-map")
        self._pending: Future | None = None
        self._line_map_drawn.connect(self._show_line_map)

    def open_pad(self):
        from app.widgets.sketch_pad import SketchPad

        if self.pad is None:
            self.pad = SketchPad(self)
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
        """Take the image as the control image; False, with `error`, if it is unusable. The
        file is read and checked here; its line map preview follows from a background thread
        (`preview_ready`), the newest image winning."""
        from runtime import ImageInputError, load_image

        try:
            image = load_image(path)
        except ImageInputError as exc:
            self.error = str(exc)
            return False
        self.error = ""
        self.path = str(path)
        self._ticket += 1
        self._pending = self._executor.submit(self._draw, self._ticket, image)
        return True

    def _draw(self, ticket: int, image) -> None:
        if ticket != self._ticket:
            return  # a newer image came while this one waited
        qimage, kind = _draw_line_map(image)
        with contextlib.suppress(RuntimeError):  # the box was closed meanwhile
            self._line_map_drawn.emit(ticket, qimage, kind)

    def _show_line_map(self, ticket: int, qimage: QImage, kind: str) -> None:
        if ticket != self._ticket or self.path is None:
            return  # a newer image (or none) has taken its place
        from runtime import PHOTO_NOTE

        self.kind = kind
        if qimage.isNull():
            self.preview.setText("The line map preview could not be drawn; see the log.")
        else:
            self.preview.setPixmap(QPixmap.fromImage(qimage).scaled(
                PREVIEW_SIDE * 2, PREVIEW_SIDE, Qt.AspectRatioMode.KeepAspectRatio,
                Qt.TransformationMode.SmoothTransformation))
        notes = {"sketch": "Read as a drawn sketch.", "lines": "Used as a line map.",
                 "photo": PHOTO_NOTE}
        self.note.setText(notes.get(kind, ""))
        self.preview_ready.emit()

    def wait_for_preview(self, msecs: int = 30_000) -> bool:
        """Block until the newest preview is drawn (closing, tests); False on time-out."""
        pending = self._pending
        if pending is None:
            return True
        try:
            pending.result(timeout=msecs / 1000)
        except FutureTimeout:
            return False
        return True

    def shutdown(self) -> None:
        """Stop the preview thread (the window calls this when it closes)."""
        self._ticket += 1
        self._executor.shutdown(wait=True, cancel_futures=True)

    def clear(self) -> None:
        self.path = None
        self.kind = ""
        self._ticket += 1
        self.preview.clear()
        self.preview.setText("Drop a sketch, drawing or photo here")
        self.note.clear()
