"""The generation session: models, device, history and the job in flight, without widgets.

The window binds to its signals and calls its verbs (`load`, `generate`, `cancel`, `delete`,
`change_settings`, `close`); it never touches the worker or the engine itself.
"""

from __future__ import annotations

import logging

from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QImage

from app.viewmodels.history import History, HistoryEntry
from app.viewmodels.settings import PRESET_PLANS, Settings
from app.viewmodels.worker import DeviceReport, Job, Made, WorkerThread
from runtime import (
    CancelToken,
    GenerationRequest,
    ModelInfo,
    find_models,
)

log = logging.getLogger(__name__)


class GenerationSession(QObject):
    models_changed = Signal(object, str)  # list[ModelInfo], the folder to select
    device_changed = Signal(object)  # DeviceReport
    plan_changed = Signal(str)
    history_loaded = Signal(object)  # list[HistoryEntry], oldest first
    busy_changed = Signal(bool)
    progress = Signal(str, int, int)  # text, step, total (0: no step count yet)
    preview = Signal(QImage)
    made = Signal(object, object, str)  # list[HistoryEntry], the last QImage, timing text
    failed = Signal(str, str)  # message, what to do
    warned = Signal(str)
    ended = Signal(str)  # how the job ended: "Done", "Failed" or "Cancelled"

    def __init__(self, settings: Settings) -> None:
        super().__init__()
        self.settings = settings
        self.history = History()
        self.models: list[ModelInfo] = []
        self.device: DeviceReport | None = None
        self.busy = False
        self.last_seconds: float | None = None
        self.last_seed: int | None = None
        self._cancel: CancelToken | None = None
        self.worker_thread = WorkerThread()
        worker = self.worker_thread.worker
        worker.progress.connect(self._on_progress)
        worker.finished.connect(self._on_finished)
        worker.failed.connect(self._on_failed)
        worker.cancelled.connect(self._on_cancelled)
        worker.plan_used.connect(self.plan_changed)
        worker.device_found.connect(self._on_device)
        worker.stand_in.connect(self._on_stand_in)
        self.worker_thread.start()

    # ----- loading -------------------------------------------------------------------------

    def load(self) -> None:
        """List the models (fast: headers only), ask the worker about the device, read the
        history. The first model listed is the bundled one, so a first run is ready at once;
        with none at all the worker writes the runtime's stand-in and it is listed then."""
        models, problems = find_models(self.settings.model_dirs)
        for problem in problems:
            log.warning("skipped model folder %s: %s", problem.path, problem.message)
        self.models = models
        self.models_changed.emit(models, self.settings.last_model)
        self.worker_thread.probe.emit(self.settings.device, models, self.settings.model_dirs)
        self.history_loaded.emit(list(self.history.load(self.settings.output_path)))

    def _on_stand_in(self, model: ModelInfo) -> None:
        self.models = [model]
        self.models_changed.emit(self.models, str(model.path))

    def _on_device(self, report: DeviceReport) -> None:
        self.device = report
        self.device_changed.emit(report)

    def change_settings(self, settings: Settings) -> None:
        self.settings = settings
        settings.save()
        self.load()

    # ----- generating ----------------------------------------------------------------------

    def generate(self, request: GenerationRequest, model: ModelInfo | None) -> bool:
        """Start a job; False (with `failed` emitted) when the input cannot make an image."""
        if self.busy:
            return False
        if model is None:
            self.failed.emit("No model is available.",
                             "Add a folder holding a model in File > Settings.")
            return False
        if not request.prompt.strip():
            self.failed.emit("The prompt is empty.", "Describe the image you want.")
            return False
        self._cancel = CancelToken()
        self._set_busy(True)
        self.progress.emit("Starting...", 0, 0)
        self.settings.last_model = str(model.path)
        self.worker_thread.submit.emit(Job(
            request, str(model.path), self.settings.output_path, self.settings.device,
            self.settings.precision, PRESET_PLANS[self.settings.performance], self._cancel))
        return True

    def cancel(self) -> None:
        if self.busy and self._cancel is not None:
            self._cancel.cancel()
            self.progress.emit("Cancelling...", 0, 0)

    def _set_busy(self, busy: bool) -> None:
        self.busy = busy
        self.busy_changed.emit(busy)

    def _on_progress(self, kind: str, message: str, step: int, total: int, preview) -> None:
        if kind == "step" and total:
            self.progress.emit(f"Step {step} of {total}", step, total)
            if preview is not None:
                self.preview.emit(preview)
        elif kind in ("loading", "encoding", "decoding", "plan") and message:
            self.progress.emit(message, 0, 0)

    def _on_finished(self, made: list[Made], timings: dict) -> None:
        entries = [self.history.add(m.entry_id, m.path, m.thumb, m.record) for m in made]
        if made:
            self.last_seed = made[-1].record["seed"]
        self.last_seconds = timings.get("total_s", 0.0) / max(1, len(made))
        noun = "image" if len(made) == 1 else "images"
        text = f"{len(made)} {noun} in {timings.get('total_s', 0.0):.2f} s"
        if len(made) > 1:
            text += f" ({self.last_seconds:.2f} s each)"
        if timings.get("load_s"):
            text += f", after loading the model in {timings['load_s']:.1f} s"
        self.settings.save()
        self._set_busy(False)
        self.made.emit(entries, made[-1].image if made else QImage(), text)
        if timings.get("failure"):  # some images were written before the run failed
            self.ended.emit("Failed")
            self.failed.emit(*timings["failure"])
            return
        self.ended.emit("Done")
        for warning in timings.get("warnings", []):
            self.warned.emit(warning)

    def _on_failed(self, message: str, hint: str) -> None:
        self._set_busy(False)
        self.ended.emit("Failed")
        self.failed.emit(message, hint)

    def _on_cancelled(self) -> None:
        self._set_busy(False)
        self.ended.emit("Cancelled")

    # ----- history -------------------------------------------------------------------------

    def delete(self, entry: HistoryEntry) -> None:
        self.history.remove(entry)

    def close(self) -> None:
        if self._cancel is not None:
            self._cancel.cancel()
        self.worker_thread.stop()
