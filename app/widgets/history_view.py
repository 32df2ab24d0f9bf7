"""The history: a grid of thumbnails, newest first, with the image actions on a context menu."""

from __future__ import annotations

from PySide6.QtCore import QPoint, QSize, Qt, Signal
from PySide6.QtGui import QAction, QIcon, QPixmap
from PySide6.QtWidgets import QLabel, QListWidget, QListWidgetItem, QMenu, QVBoxLayout, QWidget

from app.viewmodels.history import HistoryEntry

ICON_SIDE = 112
EMPTY_TEXT = "Images you make appear here, with their settings."


def thumbnail_icon(path: str) -> QIcon:
    """The thumbnail in its true colours: the style would tint a selected item's icon with the
    highlight colour, so the selected image would look bluer than it is."""
    pixmap = QPixmap(path)
    icon = QIcon()
    for mode in (QIcon.Mode.Normal, QIcon.Mode.Selected, QIcon.Mode.Active):
        icon.addPixmap(pixmap, mode)
    return icon


class HistoryView(QWidget):
    selected = Signal(object)  # HistoryEntry | None
    activated = Signal(object)  # HistoryEntry: double click or Enter

    def __init__(self) -> None:
        super().__init__()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.title = QLabel("Histor&y")
        self.title.setObjectName("heading")
        self.list = QListWidget()
        self.title.setBuddy(self.list)
        self.list.setViewMode(QListWidget.ViewMode.IconMode)
        self.list.setIconSize(QSize(ICON_SIDE, ICON_SIDE))
        self.list.setGridSize(QSize(ICON_SIDE + 16, ICON_SIDE + 34))
        self.list.setResizeMode(QListWidget.ResizeMode.Adjust)
        self.list.setMovement(QListWidget.Movement.Static)
        self.list.setWordWrap(False)
        self.list.setTextElideMode(Qt.TextElideMode.ElideRight)
        self.list.setUniformItemSizes(True)
        self.list.setAccessibleName("History")
        self.list.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.list.customContextMenuRequested.connect(self._menu)
        self.list.currentItemChanged.connect(lambda item, _old: self.selected.emit(
            self._entry(item)))
        self.list.itemActivated.connect(lambda item: self.activated.emit(self._entry(item)))
        self.empty = QLabel(EMPTY_TEXT)
        self.empty.setObjectName("note")
        self.empty.setWordWrap(True)
        self.empty.setAlignment(Qt.AlignmentFlag.AlignCenter)
        layout.addWidget(self.title)
        layout.addWidget(self.empty)
        layout.addWidget(self.list, 1)
        self.actions_for_menu: list[QAction | None] = []

    @staticmethod
    def _entry(item: QListWidgetItem | None) -> HistoryEntry | None:
        return item.data(Qt.ItemDataRole.UserRole) if item is not None else None

    def _menu(self, at: QPoint) -> None:
        if self.list.itemAt(at) is None:
            return
        menu = QMenu(self)
        for action in self.actions_for_menu:
            if action is None:
                menu.addSeparator()
            else:
                menu.addAction(action)
        menu.exec(self.list.viewport().mapToGlobal(at))

    def set_entries(self, entries: list[HistoryEntry]) -> None:
        self.list.clear()
        for entry in entries:
            self.add(entry, select=False)
        self._update_empty()

    def add(self, entry: HistoryEntry, select: bool = True) -> None:
        item = QListWidgetItem(thumbnail_icon(entry.thumb), entry.title or "(no prompt)")
        item.setToolTip(f"{entry.title}\n{entry.summary}")
        item.setData(Qt.ItemDataRole.UserRole, entry)
        self.list.insertItem(0, item)
        if select:
            self.list.setCurrentItem(item)
        self._update_empty()

    def current(self) -> HistoryEntry | None:
        return self._entry(self.list.currentItem())

    def remove_current(self) -> None:
        self.list.takeItem(self.list.currentRow())
        self._update_empty()

    def count(self) -> int:
        return self.list.count()

    def entries(self) -> list[HistoryEntry]:
        return [self._entry(self.list.item(i)) for i in range(self.list.count())]

    def _update_empty(self) -> None:
        self.empty.setVisible(self.list.count() == 0)
