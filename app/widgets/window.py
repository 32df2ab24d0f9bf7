"""The main window: controls on the left, the image in the middle, the history on the right.

It shows the session's state and forwards what the user does; the work happens in the session
and its worker thread, so nothing here waits on a model.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from PySide6.QtCore import Qt, QTimer, QUrl
from PySide6.QtGui import QAction, QDesktopServices, QIcon, QImage, QKeySequence, QPixmap
from PySide6.QtWidgets import (
    QApplication,
    QFileDialog,
    QLabel,
    QMainWindow,
    QMessageBox,
    QProgressBar,
    QScrollArea,
    QSplitter,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from app.about import about_text
from app.viewmodels.history import HistoryEntry
from app.viewmodels.session import GenerationSession
from app.viewmodels.settings import PERFORMANCE_PRESETS, Settings
from app.viewmodels.worker import DeviceReport
from app.widgets.controls import GenerationPanel, focus_prompt
from app.widgets.history_view import HistoryView
from app.widgets.settings_dialog import SettingsDialog
from app.widgets.theme import apply_theme
from app.widgets.viewer import ImageView
from runtime import LineaError, read_request
from runtime.paths import assets_dir, user_log_dir

log = logging.getLogger(__name__)
LIVE_DEBOUNCE_MS = 350
PLACEHOLDER = ("Type a prompt and press Ctrl+Enter.\n"
               "Drop a PNG made by Linea to restore its settings.")


class MainWindow(QMainWindow):
    def __init__(self, settings: Settings | None = None) -> None:
        super().__init__()
        self.setWindowTitle("Linea")
        icon = assets_dir() / "icons" / "linea.png"
        if icon.is_file():
            self.setWindowIcon(QIcon(str(icon)))
        self.resize(1280, 800)
        self.setAcceptDrops(True)
        self.session = GenerationSession(settings or Settings.load())
        apply_theme(QApplication.instance(), self.settings.theme)
        self.live_pending = False
        self._build()
        self._build_menus()
        self._bind()
        QTimer.singleShot(0, self.session.load)

    @property
    def settings(self) -> Settings:
        return self.session.settings

    @property
    def busy(self) -> bool:
        return self.session.busy

    # ----- layout --------------------------------------------------------------------------

    def _build(self) -> None:
        self.panel = GenerationPanel()
        self.panel.generate_requested.connect(self.generate)
        self.panel.cancel_button.clicked.connect(self.cancel)
        self.live_timer = QTimer(self)
        self.live_timer.setSingleShot(True)
        self.live_timer.setInterval(LIVE_DEBOUNCE_MS)
        self.live_timer.timeout.connect(self._live_tick)
        self.panel.control.sketch_changed.connect(self._on_sketch_changed)
        scroll = QScrollArea()
        scroll.setWidget(self.panel)
        scroll.setWidgetResizable(True)
        # Never scroll sideways: the panel is as wide as its widgets need, plus room for the
        # vertical scroll bar when the sketch box makes it taller than the window.
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.panel_scroll = scroll
        self.panel.model_changed.connect(self._fit_panel_width)

        centre = QWidget()
        centre_layout = QVBoxLayout(centre)
        self.banner = QLabel()
        self.banner.setObjectName("banner")
        self.banner.setWordWrap(True)
        self.banner.setVisible(False)
        self.banner.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.view = ImageView()
        self.placeholder = QLabel(PLACEHOLDER)
        self.placeholder.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.placeholder.setObjectName("placeholder")
        self.placeholder.setWordWrap(True)
        self.stack = QStackedWidget()
        self.stack.addWidget(self.placeholder)
        self.stack.addWidget(self.view)
        self.progress = QProgressBar()
        self.progress.setAccessibleName("Progress")
        self._set_progress("Ready", 0, 1)
        self.timing = QLabel()
        self.timing.setObjectName("note")
        self.timing.setWordWrap(True)
        self.timing.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        for widget, stretch in ((self.banner, 0), (self.stack, 1), (self.progress, 0),
                                (self.timing, 0)):
            centre_layout.addWidget(widget, stretch)

        self.history = HistoryView()
        self.history.setMinimumWidth(290)
        self.history.selected.connect(self._show_entry)
        self.history.activated.connect(lambda _entry: self.use_settings())
        splitter = QSplitter()
        splitter.addWidget(scroll)
        splitter.addWidget(centre)
        splitter.addWidget(self.history)
        splitter.setStretchFactor(1, 1)
        splitter.setChildrenCollapsible(False)
        splitter.setSizes([380, 600, 300])
        self.splitter = splitter
        self.setCentralWidget(splitter)
        self._fit_panel_width()

        bar = self.statusBar()
        self.status_device = QLabel("Device: finding...")
        self.status_memory = QLabel()
        self.status_plan = QLabel()
        self.status_timing = QLabel("Last: none yet")
        for label in (self.status_device, self.status_memory, self.status_plan,
                      self.status_timing):
            bar.addPermanentWidget(label)

    def _action(self, menu, text: str, slot, shortcut=None) -> QAction:
        action = QAction(text, self)
        if shortcut is not None:
            action.setShortcut(QKeySequence(shortcut))
        action.triggered.connect(slot)
        menu.addAction(action)
        self.addAction(action)
        return action

    def _build_menus(self) -> None:
        menus = self.menuBar()
        file_menu = menus.addMenu("&File")
        self._action(file_menu, "&Generate", self.generate, "Ctrl+Return")
        self._action(file_menu, "Generate (keypad Enter)", self.generate, "Ctrl+Enter")
        self._action(file_menu, "&Cancel", self.cancel, "Esc")
        self._action(file_menu, "&Settings...", self.open_settings, "Ctrl+,")
        file_menu.addSeparator()
        self._action(file_menu, "&Quit", self.close, QKeySequence.StandardKey.Quit)
        image_menu = menus.addMenu("&Image")
        image_actions = [
            self._action(image_menu, "&Use these settings", self.use_settings, "Ctrl+U"),
            self._action(image_menu, "&Save as...", self.save_as,
                         QKeySequence.StandardKey.SaveAs),
            self._action(image_menu, "&Copy", self.copy_image, QKeySequence.StandardKey.Copy),
            self._action(image_menu, "Show in &folder", self.show_in_folder),
            None,
            self._action(image_menu, "&Delete...", self.delete_selected,
                         QKeySequence.StandardKey.Delete)]
        image_menu.addSeparator()
        self._action(image_menu, "&Paste sketch", self.paste, QKeySequence.StandardKey.Paste)
        self._action(image_menu, "&Fit to window", self.view.fit, "Ctrl+0")
        self._action(image_menu, "Zoom &in", lambda: self.view.zoom(1.25), "Ctrl++")
        self._action(image_menu, "Zoom &out", lambda: self.view.zoom(0.8), "Ctrl+-")
        self.history.actions_for_menu = image_actions
        help_menu = menus.addMenu("&Help")
        self._action(help_menu, "Open &log file", self.open_log)
        self._action(help_menu, "&About Linea", self.about)

    def _bind(self) -> None:
        session = self.session
        session.models_changed.connect(self._on_models)
        session.device_changed.connect(self._on_device)
        session.plan_changed.connect(lambda plan: self.status_plan.setText(f"Plan: {plan}"))
        session.history_loaded.connect(self.history.set_entries)
        session.busy_changed.connect(self.panel.set_busy)
        session.progress.connect(lambda text, step, total: self._set_progress(text, step, total))
        session.preview.connect(self._show_image)
        session.made.connect(self._on_made)
        session.failed.connect(self.show_error)
        session.warned.connect(lambda text: self.show_error(text, "", warning_only=True))
        session.ended.connect(self._finish)
        self._show_preset_plan()

    # ----- session state -------------------------------------------------------------------

    def _on_models(self, models: list, preferred: str) -> None:
        self.panel.set_models(models, preferred)
        focus_prompt(self.panel)

    def _on_device(self, report: DeviceReport) -> None:
        self.status_device.setText(f"Device: {report.name}")
        self.status_device.setToolTip(report.summary)
        self.status_memory.setText(f"Memory: {report.free}")
        self.panel.set_fits(report.fits)

    def _show_preset_plan(self) -> None:
        self.status_plan.setText(f"Plan: {PERFORMANCE_PRESETS[self.settings.performance]}")

    def _set_progress(self, text: str, step: int, total: int) -> None:
        self.progress.setRange(0, total)  # (0, 0): busy, no count yet
        self.progress.setValue(step)
        self.progress.setFormat(text)
        self.progress.setTextVisible(True)

    def _show_entry(self, entry: HistoryEntry | None) -> None:
        if entry is None or self.busy:
            return
        image = QImage(entry.path)
        if image.isNull():
            self.show_error(f"The image '{entry.path}' cannot be opened.",
                            "It may have been moved or deleted outside Linea.")
            return
        self._show_image(image)
        self.timing.setText(f"{entry.title}\n{entry.summary}")

    def _show_image(self, image: QImage) -> None:
        self.stack.setCurrentWidget(self.view)
        self.view.show_image(image)

    # ----- generation ----------------------------------------------------------------------

    def generate(self) -> None:
        self._generate(live=False)

    def _generate_live(self) -> None:
        self._generate(live=True)

    def _generate(self, live: bool) -> None:
        if self.busy:
            return
        self.hide_error()
        if self.session.generate(self.panel.request(live=live), self.panel.current_model()):
            self.timing.clear()  # it described the previous image
            self.timing.setToolTip("")
        else:
            focus_prompt(self.panel)

    def cancel(self) -> None:
        self.session.cancel()

    def _finish(self, text: str) -> None:
        self._set_progress(text, 0, 1)
        if self.live_pending:  # the sketch changed while this image was made: newest wins
            self.live_pending = False
            QTimer.singleShot(0, self._generate_live)

    def _on_made(self, entries: list[HistoryEntry], image: QImage, text: str) -> None:
        self.history.list.blockSignals(True)  # the new image is shown as is, not re-read
        for entry in entries:
            self.history.add(entry)
        self.history.list.blockSignals(False)
        if not image.isNull():
            self._show_image(image)
        if entries:
            self.panel.last_seed = self.session.last_seed
            self.timing.setText(f"{text}. Saved as {Path(entries[-1].path).name}")
            self.timing.setToolTip(entries[-1].path)
        self.status_timing.setText(f"Last: {self.session.last_seconds:.2f} s/image")

    def _on_sketch_changed(self) -> None:
        if self.panel.control.live.isChecked():
            self.live_timer.start()  # restarts: quick strokes collapse into one request

    def _live_tick(self) -> None:
        if self.busy:
            self.live_pending = True
        elif self.panel.prompt.toPlainText().strip():
            self._generate_live()

    def show_error(self, message: str, hint: str, warning_only: bool = False) -> None:
        self.banner.setProperty("warning", warning_only)
        self.banner.setText(f"{message} {hint}".strip())
        self.banner.style().unpolish(self.banner)
        self.banner.style().polish(self.banner)
        self.banner.setVisible(True)

    def hide_error(self) -> None:
        self.banner.setVisible(False)

    # ----- image actions -------------------------------------------------------------------

    def selected_entry(self) -> HistoryEntry | None:
        return self.history.current()

    def save_as(self) -> None:
        entry = self.selected_entry()
        if entry is None:
            return
        start = str(Path(self.settings.output_path) / Path(entry.path).name)
        target, _ = QFileDialog.getSaveFileName(self, "Save image as", start,
                                                "PNG images (*.png)")
        if not target:
            return
        try:
            shutil.copyfile(entry.path, target)  # the same bytes: the settings travel with it
        except OSError as exc:
            self.show_error(f"The image could not be saved as '{target}': {exc.strerror}.",
                            "Pick another folder or name.")

    def copy_image(self) -> None:
        entry = self.selected_entry()
        if entry is not None:
            QApplication.clipboard().setPixmap(QPixmap(entry.path))

    def show_in_folder(self) -> None:
        entry = self.selected_entry()
        if entry is not None:
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(Path(entry.path).parent)))

    def use_settings(self) -> None:
        entry = self.selected_entry()
        if entry is not None:
            self.panel.apply(entry.request)
            focus_prompt(self.panel)

    def delete_selected(self) -> None:
        entry = self.selected_entry()
        if entry is None:
            return
        answer = QMessageBox.question(self, "Delete image",
                                      "Delete this image from the history and the disk?\n"
                                      f"{entry.path}")
        if answer != QMessageBox.StandardButton.Yes:
            return
        self.session.delete(entry)
        self.history.remove_current()
        if self.history.count() == 0:
            self.view.clear()
            self.stack.setCurrentWidget(self.placeholder)
            self.timing.clear()

    # ----- drops, settings, help -----------------------------------------------------------

    def dragEnterEvent(self, event) -> None:
        mime = event.mimeData()
        if mime.hasImage() or any(u.isLocalFile() for u in mime.urls()):
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:
        """A PNG with settings restores them; any other image becomes the sketch to follow
        when the model has a ControlNet; image data dragged from a browser works too."""
        mime = event.mimeData()
        urls = [u for u in mime.urls() if u.isLocalFile()]
        if urls:
            self._use_dropped_file(Path(urls[0].toLocalFile()))
        elif mime.hasImage():
            self._use_control(lambda: self.panel.control.set_qimage(QImage(mime.imageData())))
        event.acceptProposedAction()

    def _use_dropped_file(self, path: Path) -> None:
        try:
            request = read_request(path)
        except LineaError as exc:
            if self.panel.control.isVisibleTo(self.panel):
                self._use_control(lambda: self.panel.control.set_image(path))
            else:
                self.show_error(exc.message, f"{exc.hint} To follow a sketch or photo, pick a "
                                             "model with a ControlNet.")
            return
        self.hide_error()
        self.panel.apply(request)

    def _use_control(self, setter) -> None:
        if not self.panel.control.isVisibleTo(self.panel):
            self.show_error("This model cannot follow a sketch.",
                            "Pick a model with a ControlNet to use a sketch or photo.")
        elif setter():
            self.hide_error()
        else:
            self.show_error(self.panel.control.error, "")

    def paste(self) -> None:
        if self.panel.control.isVisibleTo(self.panel) and not self.panel.prompt.hasFocus():
            self._use_control(self.panel.control.paste)

    def open_settings(self) -> SettingsDialog:
        dialog = SettingsDialog(self.settings, self)
        dialog.accepted.connect(lambda: self._apply_settings(dialog.result_settings()))
        dialog.open()  # window-modal, not a nested event loop: the generation keeps going
        return dialog

    def _apply_settings(self, settings: Settings) -> None:
        apply_theme(QApplication.instance(), settings.theme)
        self.session.change_settings(settings)
        self._show_preset_plan()

    def open_log(self) -> None:
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(user_log_dir() / "linea.log")))

    def about(self) -> None:
        QMessageBox.about(self, "About Linea", about_text())

    def _fit_panel_width(self) -> None:
        """The controls' column is never narrower than its widgets (the sketch box widens them)
        plus the vertical scroll bar it may need: nothing is cut off, nothing scrolls sideways."""
        scroll = getattr(self, "panel_scroll", None)
        if scroll is None:
            return
        self.panel.adjustSize()
        need = max(360, self.panel.minimumSizeHint().width()
                   + scroll.verticalScrollBar().sizeHint().width() + 2 * scroll.frameWidth())
        scroll.setMinimumWidth(need)
        splitter = getattr(self, "splitter", None)
        if splitter is not None and splitter.sizes()[0] < need:
            sizes = splitter.sizes()
            sizes[1] = max(0, sizes[1] - (need - sizes[0]))
            sizes[0] = need
            splitter.setSizes(sizes)

    def closeEvent(self, event) -> None:
        self.session.close()
        self.panel.control.shutdown()
        super().closeEvent(event)
