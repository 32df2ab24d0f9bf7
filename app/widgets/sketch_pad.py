"""A sketch pad: pen, eraser, stroke width, undo/redo, clear, load and save."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

from PySide6.QtCore import QPoint, QSize, Qt, Signal
from PySide6.QtGui import QColor, QImage, QMouseEvent, QPainter, QPaintEvent, QPen
from PySide6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

CANVAS_SIZE = QSize(512, 512)
HISTORY_LIMIT = 40


class SketchCanvas(QWidget):
    """Draws black strokes (or white, erasing) on a white image. `changed` fires per stroke."""

    changed = Signal()

    def __init__(self) -> None:
        super().__init__()
        self.image = QImage(CANVAS_SIZE, QImage.Format.Format_RGB32)
        self.image.fill(Qt.GlobalColor.white)
        self.undo_stack: list[QImage] = []
        self.redo_stack: list[QImage] = []
        self.width_px = 6
        self.erasing = False
        self._last: QPoint | None = None
        self.setFixedSize(CANVAS_SIZE)
        self.setCursor(Qt.CursorShape.CrossCursor)
        self.setAccessibleName("Sketch pad")

    def _pen(self) -> QPen:
        colour = QColor("white") if self.erasing else QColor("black")
        width = self.width_px * (3 if self.erasing else 1)
        return QPen(colour, width, Qt.PenStyle.SolidLine, Qt.PenCapStyle.RoundCap,
                    Qt.PenJoinStyle.RoundJoin)

    def _remember(self) -> None:
        self.undo_stack.append(self.image.copy())
        del self.undo_stack[:-HISTORY_LIMIT]
        self.redo_stack.clear()

    def draw_stroke(self, points: list[QPoint]) -> None:
        """One whole stroke; the mouse handlers and tests both come through here."""
        self._remember()
        painter = QPainter(self.image)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.setPen(self._pen())
        if len(points) == 1:
            painter.drawPoint(points[0])
        for start, end in pairwise(points):
            painter.drawLine(start, end)
        painter.end()
        self.update()
        self.changed.emit()

    def mousePressEvent(self, event: QMouseEvent) -> None:
        if event.button() == Qt.MouseButton.LeftButton:
            self._remember()
            self._last = event.position().toPoint()

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        if self._last is None:
            return
        point = event.position().toPoint()
        painter = QPainter(self.image)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.setPen(self._pen())
        painter.drawLine(self._last, point)
        painter.end()
        self._last = point
        self.update()

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        if self._last is not None:
            self._last = None
            self.changed.emit()

    def paintEvent(self, event: QPaintEvent) -> None:
        QPainter(self).drawImage(0, 0, self.image)

    def undo(self) -> None:
        self._step(self.undo_stack, self.redo_stack)

    def redo(self) -> None:
        self._step(self.redo_stack, self.undo_stack)

    def _step(self, source: list[QImage], target: list[QImage]) -> None:
        """Undo or redo: the current image goes on `target`, the last of `source` comes back."""
        if source:
            target.append(self.image.copy())
            self.image = source.pop()
            self.update()
            self.changed.emit()

    def clear(self) -> None:
        self._remember()
        self.image.fill(Qt.GlobalColor.white)
        self.update()
        self.changed.emit()

    def load(self, path: Path) -> bool:
        loaded = QImage(str(path))
        if loaded.isNull():
            return False
        self._remember()
        self.image.fill(Qt.GlobalColor.white)
        scaled = loaded.scaled(CANVAS_SIZE, Qt.AspectRatioMode.KeepAspectRatio,
                               Qt.TransformationMode.SmoothTransformation)
        painter = QPainter(self.image)
        painter.drawImage((CANVAS_SIZE.width() - scaled.width()) // 2,
                          (CANVAS_SIZE.height() - scaled.height()) // 2, scaled)
        painter.end()
        self.update()
        self.changed.emit()
        return True


class SketchPad(QWidget):
    """The canvas with its tools."""

    def __init__(self, parent: QWidget | None = None) -> None:
        # its own window, owned by the main window: it closes and is deleted with it
        super().__init__(parent, Qt.WindowType.Tool)
        self.setWindowTitle("Sketch")
        self.canvas = SketchCanvas()
        tools = QHBoxLayout()

        def tool(text: str, slot, checkable: bool = False, shortcut: str = "") -> QToolButton:
            button = QToolButton()
            button.setText(text)
            button.setCheckable(checkable)
            if shortcut:
                button.setShortcut(shortcut)
                button.setToolTip(shortcut)
            button.clicked.connect(slot)
            tools.addWidget(button)
            return button

        self.pen = tool("Pen", lambda: self._set_eraser(False), True, "P")
        self.eraser = tool("Eraser", lambda: self._set_eraser(True), True, "E")
        self.pen.setChecked(True)
        self.width_box = QSpinBox()
        self.width_box.setRange(1, 40)
        self.width_box.setValue(self.canvas.width_px)
        self.width_box.setAccessibleName("Stroke width")
        self.width_box.valueChanged.connect(lambda v: setattr(self.canvas, "width_px", v))
        tools.addWidget(self.width_box)
        tool("Undo", self.canvas.undo, shortcut="Ctrl+Z")
        tool("Redo", self.canvas.redo, shortcut="Ctrl+Shift+Z")
        tool("Clear", self.canvas.clear)
        tool("Load...", self._load)
        tool("Save...", self._save)
        layout = QVBoxLayout(self)
        layout.addLayout(tools)
        layout.addWidget(self.canvas)

    def _set_eraser(self, erasing: bool) -> None:
        self.canvas.erasing = erasing
        self.pen.setChecked(not erasing)
        self.eraser.setChecked(erasing)

    def _load(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Load sketch", "",
                                              "Images (*.png *.jpg *.jpeg *.webp *.bmp)")
        if path:
            self.canvas.load(Path(path))

    def _save(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save sketch", "sketch.png",
                                              "PNG images (*.png)")
        if path:
            self.canvas.image.save(path, "PNG")
