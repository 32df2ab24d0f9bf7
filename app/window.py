"""The main window: controls on the left, the image in the middle, the history on the right."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from PySide6.QtCore import QSize, Qt, QTimer, QUrl
from PySide6.QtGui import QAction, QDesktopServices, QIcon, QImage, QKeySequence, QPixmap
from PySide6.QtWidgets import (
    QApplication,
    QFileDialog,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMainWindow,
    QMessageBox,
    QProgressBar,
    QScrollArea,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from app.controls import GenerationPanel, focus_prompt
from app.history import History, HistoryEntry
from app.settings import PRESET_PLANS, Settings
from app.settings_dialog import SettingsDialog
from app.theme import apply_theme
from app.worker import Job, Made, WorkerThread
from runtime import (
    CancelToken,
    LineaError,
    __version__,
    detect_device,
    find_models,
    read_request,
)
from runtime.device import fits
from runtime.paths import user_log_dir

log = logging.getLogger(__name__)
LIVE_DEBOUNCE_MS = 350


def about_text() -> str:
    """Versions from package metadata: nothing heavy is imported to show them."""
    from importlib import metadata

    import PySide6.QtCore

    lines = [f"Linea {__version__}", "Offline text-to-image studio: nothing is downloaded.", "",
             f"Qt {PySide6.QtCore.qVersion()}"]
    for package in ("PySide6-Essentials", "torch", "diffusers", "transformers", "bitsandbytes"):
        try:
            lines.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            lines.append(f"{package}: not installed")
    return "\n".join(lines)


class MainWindow(QMainWindow):
    def __init__(self, settings: Settings | None = None) -> None:
        super().__init__()
        self.setWindowTitle("Linea")
        self.resize(1280, 800)
        self.setAcceptDrops(True)
        self.settings = settings or Settings.load()
        apply_theme(QApplication.instance(), self.settings.theme)
        self.history = History()
        self.cancel_token: CancelToken | None = None
        self.busy = False
        self.live_pending = False
        self.started_at = 0.0
        self.worker_thread = WorkerThread()
        self.worker_thread.start()
        worker = self.worker_thread.worker
        worker.progress.connect(self._on_progress)
        worker.finished.connect(self._on_finished)
        worker.failed.connect(self._on_failed)
        worker.cancelled.connect(self._on_cancelled)
        worker.device_info.connect(self._on_device_info)
        self._build()
        self._build_menus()
        QTimer.singleShot(0, self._load_catalogue_and_history)

    # ----- layout --------------------------------------------------------------------------

    def _build(self) -> None:
        self.panel = GenerationPanel()
        self.panel.generate_requested.connect(self.generate)
        self.live_timer = QTimer(self)
        self.live_timer.setSingleShot(True)
        self.live_timer.setInterval(LIVE_DEBOUNCE_MS)
        self.live_timer.timeout.connect(self._live_tick)
        self.panel.control.sketch_changed.connect(self._on_sketch_changed)
        self.panel.cancel_button.clicked.connect(self.cancel)
        scroll = QScrollArea()
        scroll.setWidget(self.panel)
        scroll.setWidgetResizable(True)
        scroll.setMinimumWidth(340)

        centre = QWidget()
        centre_layout = QVBoxLayout(centre)
        self.banner = QLabel()
        self.banner.setObjectName("banner")
        self.banner.setWordWrap(True)
        self.banner.setVisible(False)
        self.banner.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        from app.viewer import ImageView

        self.view = ImageView()
        self.placeholder = QLabel("Type a prompt and press Ctrl+Enter.\n"
                                  "Drop a PNG made by Linea to restore its settings.")
        self.placeholder.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.placeholder.setObjectName("placeholder")
        self.progress = QProgressBar()
        self.progress.setTextVisible(True)
        self.progress.setFormat("Ready")
        self.progress.setValue(0)
        self.timing = QLabel()
        centre_layout.addWidget(self.banner)
        centre_layout.addWidget(self.placeholder)
        centre_layout.addWidget(self.view, 1)
        centre_layout.addWidget(self.progress)
        centre_layout.addWidget(self.timing)
        self.view.setVisible(False)

        self.history_list = QListWidget()
        self.history_list.setViewMode(QListWidget.ViewMode.IconMode)
        self.history_list.setIconSize(QSize(120, 120))
        self.history_list.setResizeMode(QListWidget.ResizeMode.Adjust)
        self.history_list.setMovement(QListWidget.Movement.Static)
        self.history_list.setSpacing(6)
        self.history_list.setMinimumWidth(280)
        self.history_list.setAccessibleName("History")
        self.history_list.currentItemChanged.connect(self._show_selected)
        self.history_list.itemDoubleClicked.connect(lambda _item: self.use_settings())

        splitter = QSplitter()
        splitter.addWidget(scroll)
        splitter.addWidget(centre)
        splitter.addWidget(self.history_list)
        splitter.setStretchFactor(1, 1)
        splitter.setSizes([360, 640, 300])
        self.setCentralWidget(splitter)

        bar = self.statusBar()
        self.status_device = QLabel("Device: detecting...")
        self.status_plan = QLabel()
        self.status_timing = QLabel()
        for label in (self.status_device, self.status_plan, self.status_timing):
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
        self._action(image_menu, "&Save as...", self.save_as, QKeySequence.StandardKey.SaveAs)
        self._action(image_menu, "&Copy", self.copy_image, QKeySequence.StandardKey.Copy)
        self._action(image_menu, "&Paste sketch", self.paste, QKeySequence.StandardKey.Paste)
        self._action(image_menu, "Show in &folder", self.show_in_folder)
        self._action(image_menu, "&Use these settings", self.use_settings, "Ctrl+U")
        self._action(image_menu, "&Delete...", self.delete_selected,
                     QKeySequence.StandardKey.Delete)
        self._action(image_menu, "&Fit to window", self.view.fit, "Ctrl+0")
        self._action(image_menu, "Zoom &in", lambda: self.view.zoom(1.25), "Ctrl++")
        self._action(image_menu, "Zoom &out", lambda: self.view.zoom(0.8), "Ctrl+-")
        help_menu = menus.addMenu("&Help")
        self._action(help_menu, "Open &log file", self.open_log)
        self._action(help_menu, "&About Linea", self.about)

    # ----- models and history --------------------------------------------------------------

    def _load_catalogue_and_history(self) -> None:
        models, problems = find_models(self.settings.model_dirs)
        if not models:
            from runtime import default_model

            models = [default_model(self.settings.model_dirs)]
        device = detect_device(self.settings.device)
        self.status_device.setText(f"Device: {device.summary()}")
        self.panel.set_models(models, {str(m.path): fits(device, m) for m in models},
                              self.settings.last_model)
        for problem in problems:
            log.warning("skipped model folder %s: %s", problem.path, problem.message)
        for entry in self.history.load(self.settings.output_path):
            self._add_history_item(entry)
        focus_prompt(self.panel)

    def _add_history_item(self, entry: HistoryEntry) -> QListWidgetItem:
        item = QListWidgetItem(QIcon(entry.thumb), "")
        item.setToolTip(f"{entry.title}\n{entry.summary}")
        item.setData(Qt.ItemDataRole.UserRole, entry)
        self.history_list.insertItem(0, item)
        return item

    def selected_entry(self) -> HistoryEntry | None:
        item = self.history_list.currentItem()
        return item.data(Qt.ItemDataRole.UserRole) if item else None

    def _show_selected(self, item: QListWidgetItem | None, _previous=None) -> None:
        entry = item.data(Qt.ItemDataRole.UserRole) if item else None
        if entry is None or self.busy:
            return
        image = QImage(entry.path)
        if image.isNull():
            self.show_error(f"The image '{entry.path}' cannot be opened.",
                            "It may have been moved or deleted outside Linea.")
            return
        self._show_image(image)
        self.timing.setText(f"{entry.title}  ({entry.summary})")

    def _show_image(self, image: QImage) -> None:
        self.placeholder.setVisible(False)
        self.view.setVisible(True)
        self.view.show_image(image)

    # ----- generation ----------------------------------------------------------------------

    def generate(self) -> None:
        if self.busy:
            return
        model = self.panel.current_model()
        if model is None:
            self.show_error("No model is available.", "Add a model folder in Settings.")
            return
        request = self.panel.request()
        if not request.prompt.strip():
            self.show_error("The prompt is empty.", "Describe the image you want.")
            focus_prompt(self.panel)
            return
        self.hide_error()
        self.cancel_token = CancelToken()
        self.busy = True
        self.started_at = time.perf_counter()
        self.panel.set_busy(True)
        self.progress.setRange(0, 0)
        self.progress.setFormat("Starting...")
        self.settings.last_model = str(model.path)
        job = Job(request, str(model.path), self.settings.output_path, self.settings.device,
                  self.settings.precision, PRESET_PLANS[self.settings.performance],
                  self.cancel_token)
        self.worker_thread.submit.emit(job)

    def cancel(self) -> None:
        if self.busy and self.cancel_token is not None:
            self.cancel_token.cancel()
            self.progress.setFormat("Cancelling...")

    def _on_progress(self, kind: str, message: str, step: int, total: int, preview) -> None:
        if kind == "step" and total:
            self.progress.setRange(0, total)
            self.progress.setValue(step)
            self.progress.setFormat(f"Step {step} of {total}")
            if preview is not None:
                self._show_image(preview)
        elif kind in ("loading", "encoding", "decoding", "plan"):
            self.progress.setRange(0, 0)
            self.progress.setFormat(message)

    def _finish(self, text: str) -> None:
        self.busy = False
        self.panel.set_busy(False)
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat(text)
        if self.live_pending:  # the sketch changed while this image was made: newest wins
            self.live_pending = False
            QTimer.singleShot(0, self.generate)

    def _on_sketch_changed(self) -> None:
        if self.panel.control.live.isChecked():
            self.live_timer.start()  # restarts: quick strokes collapse into one request

    def _live_tick(self) -> None:
        if self.busy:
            self.live_pending = True
        elif self.panel.prompt.toPlainText().strip():
            self.generate()

    def _on_finished(self, made: list[Made], timings: dict) -> None:
        self._finish("Done")
        item = None
        for result in made:
            entry = self.history.add(result.image, result.path, result.record)
            item = self._add_history_item(entry)
            self.panel.last_seed = result.record["seed"]
        if made:
            self.history_list.setCurrentItem(item)
            self._show_image(QImage(str(made[-1].path)))
        per_image = timings.get("total_s", 0.0) / max(1, len(made))
        text = f"{len(made)} image(s), {per_image:.2f} s each"
        self.timing.setText(f"{text}; saved to {made[-1].path}" if made else text)
        self.status_timing.setText(f"Last: {per_image:.2f} s/image")
        for warning in timings.get("warnings", []):
            self.show_error(warning, "", warning_only=True)
        self.settings.save()

    def _on_failed(self, message: str, hint: str) -> None:
        self._finish("Failed")
        self.show_error(message, hint)

    def _on_cancelled(self) -> None:
        self._finish("Cancelled")

    def _on_device_info(self, device: str, plan: str) -> None:
        self.status_device.setText(f"Device: {device}")
        self.status_plan.setText(f"Memory plan: {plan}")

    def show_error(self, message: str, hint: str, warning_only: bool = False) -> None:
        self.banner.setProperty("warning", warning_only)
        self.banner.setText(f"{message} {hint}".strip())
        self.banner.style().unpolish(self.banner)
        self.banner.style().polish(self.banner)
        self.banner.setVisible(True)

    def hide_error(self) -> None:
        self.banner.setVisible(False)

    # ----- image actions -------------------------------------------------------------------

    def save_as(self) -> None:
        entry = self.selected_entry()
        if entry is None:
            return
        target, _ = QFileDialog.getSaveFileName(self, "Save image as", Path(entry.path).name,
                                                "PNG images (*.png)")
        if target:
            Path(target).write_bytes(Path(entry.path).read_bytes())

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

    def delete_selected(self) -> None:
        entry = self.selected_entry()
        if entry is None:
            return
        answer = QMessageBox.question(self, "Delete image",
                                      f"Delete this image from the history and the disk?\n"
                                      f"{entry.path}")
        if answer != QMessageBox.StandardButton.Yes:
            return
        self.history.remove(entry)
        self.history_list.takeItem(self.history_list.currentRow())
        if self.history_list.count() == 0:
            self.view.clear()

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
            if self.panel.control.isVisible():
                self._use_control(lambda: self.panel.control.set_image(path))
            else:
                self.show_error(exc.message, f"{exc.hint} To follow a sketch or photo, pick a "
                                             "model with a ControlNet.")
            return
        self.hide_error()
        self.panel.apply(request)

    def _use_control(self, setter) -> None:
        if not self.panel.control.isVisible():
            self.show_error("This model cannot follow a sketch.",
                            "Pick a model with a ControlNet to use a sketch or photo.")
        elif setter():
            self.hide_error()
        else:
            self.show_error(self.panel.control.error, "")

    def paste(self) -> None:
        if self.panel.control.isVisible() and not self.panel.prompt.hasFocus():
            self._use_control(self.panel.control.paste)

    def open_settings(self) -> None:
        dialog = SettingsDialog(self.settings, self)
        if dialog.exec():
            self.settings = dialog.result_settings()
            self.settings.save()
            apply_theme(QApplication.instance(), self.settings.theme)
            self.history_list.clear()
            self.panel.models = []
            self._load_catalogue_and_history()

    def open_log(self) -> None:
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(user_log_dir() / "linea.log")))

    def about(self) -> None:
        QMessageBox.about(self, "About Linea", about_text())

    def closeEvent(self, event) -> None:
        if self.cancel_token is not None:
            self.cancel_token.cancel()
        self.worker_thread.stop()
        super().closeEvent(event)
