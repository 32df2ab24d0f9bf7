"""The image view: fit to the window, zoom with the wheel, pan by dragging."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QImage, QPainter, QPixmap, QWheelEvent
from PySide6.QtWidgets import QGraphicsPixmapItem, QGraphicsScene, QGraphicsView

ZOOM_STEP = 1.25


class ImageView(QGraphicsView):
    def __init__(self) -> None:
        super().__init__()
        self._scene = QGraphicsScene(self)
        self._item = QGraphicsPixmapItem()
        self._item.setTransformationMode(Qt.TransformationMode.SmoothTransformation)
        self._scene.addItem(self._item)
        self.setScene(self._scene)
        self.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
        self.setDragMode(QGraphicsView.DragMode.ScrollHandDrag)
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.AnchorUnderMouse)
        self.setAccessibleName("Image")
        self.setMinimumSize(256, 256)
        self._fit = True

    def show_image(self, image: QImage | QPixmap, fit: bool = True) -> None:
        pixmap = image if isinstance(image, QPixmap) else QPixmap.fromImage(image)
        self._item.setPixmap(pixmap)
        self._scene.setSceneRect(self._item.boundingRect())
        if fit or self._fit:
            self.fit()

    def clear(self) -> None:
        self._item.setPixmap(QPixmap())

    def has_image(self) -> bool:
        return not self._item.pixmap().isNull()

    def fit(self) -> None:
        self._fit = True
        if self.has_image():
            self.fitInView(self._item, Qt.AspectRatioMode.KeepAspectRatio)

    def zoom(self, factor: float) -> None:
        self._fit = False
        self.scale(factor, factor)

    def wheelEvent(self, event: QWheelEvent) -> None:
        if not self.has_image():
            return
        self.zoom(ZOOM_STEP if event.angleDelta().y() > 0 else 1 / ZOOM_STEP)

    def mouseDoubleClickEvent(self, event) -> None:
        if self._fit:
            self.resetTransform()
            self._fit = False
        else:
            self.fit()

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        if self._fit:
            self.fit()
