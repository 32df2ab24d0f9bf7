"""The generation worker: a QThread that owns the engine.

A thread, not a process, chosen knowingly: the model stays loaded between images (a process
would have to reload it, or ship every preview and image across a pipe), and the runtime turns
every failure it can meet (bad folder, out of memory, NaNs) into a typed error, which the worker
reports instead of dying; anything else is caught, logged in full and reported too. What a
thread cannot survive is a crash inside native code, which would take the window with it.
The UI thread never waits on the worker: jobs go in through a queued signal, events come back
through signals (Qt queues them to the UI thread), and cancelling sets a thread-safe token.
Everything heavy happens here, including the first `import torch` (seconds).
"""

from __future__ import annotations

import logging
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from PIL import Image
from PySide6.QtCore import QObject, QThread, Signal, Slot
from PySide6.QtGui import QImage

from app.viewmodels.history import IMAGE_STEM, make_thumbnail
from runtime import (
    CancelledError,
    CancelToken,
    Event,
    GenerationRequest,
    LineaError,
    MemoryPlan,
    ModelInfo,
    OutputPathError,
    check_folder_writable,
    default_model,
    detect_device,
    next_free_path,
    save_png,
)

log = logging.getLogger(__name__)
GIB = 1024**3


@dataclass(frozen=True)
class Job:
    request: GenerationRequest
    model_path: str
    output_dir: Path
    device: str = "auto"
    precision: str = "auto"
    plan: str | None = None
    cancel: CancelToken | None = None


@dataclass(frozen=True)
class Made:
    """One finished image: saved, thumbnailed, ready for the history."""

    entry_id: str
    path: Path
    thumb: Path
    record: dict
    image: QImage


@dataclass(frozen=True)
class DeviceReport:
    name: str
    summary: str
    free: str
    fits: dict[str, bool]  # model folder -> whether it fits this device


def to_qimage(image: Image.Image) -> QImage:
    rgb = image.convert("RGB")
    data = rgb.tobytes("raw", "RGB")
    qimage = QImage(data, rgb.width, rgb.height, 3 * rgb.width, QImage.Format.Format_RGB888)
    return qimage.copy()  # own the pixels: `data` goes away with this frame


class GenerationWorker(QObject):
    progress = Signal(str, str, int, int, object)  # kind, message, step, total, QImage | None
    finished = Signal(object, object)  # list[Made], timings dict
    failed = Signal(str, str)  # message, hint
    cancelled = Signal()
    plan_used = Signal(str)  # the memory plan's description
    device_found = Signal(object)  # DeviceReport
    stand_in = Signal(object)  # ModelInfo: made when no model folder was found

    def __init__(self) -> None:
        super().__init__()
        self._engine = None
        self._engine_key: tuple | None = None

    @Slot(str, object, object)
    def probe(self, preference: str, models: list[ModelInfo], model_dirs: tuple) -> None:
        """Find the device and which models fit it (imports torch: never on the UI thread).
        With no model at all, the runtime's stand-in is written first (it builds one)."""
        from runtime import fits

        if not models:
            models = [default_model(model_dirs)]
            self.stand_in.emit(models[0])
        try:
            device = detect_device(preference)
        except (RuntimeError, ValueError) as exc:
            log.warning("device %r unavailable (%s); using the automatic choice", preference, exc)
            device = detect_device("auto")
        free = f"{device.free_bytes / GIB:.1f} of {device.total_bytes / GIB:.1f} GiB free"
        name = f"CPU ({device.cpu_threads} threads)" if device.is_cpu else device.name
        self.device_found.emit(DeviceReport(name, device.summary(), free,
                                            {str(m.path): fits(device, m) for m in models}))

    def _engine_for(self, job: Job):
        from runtime import Engine

        key = (job.model_path, job.device, job.precision, job.plan)
        if self._engine is None or self._engine_key != key:
            if self._engine is not None:
                self._engine.unload()
            self._engine = None
            plan = MemoryPlan(job.plan) if job.plan else None
            self._engine = Engine(job.model_path, device=job.device, precision=job.precision,
                                  plan=plan)
            self._engine_key = key
        return self._engine

    def _forward(self, event: Event) -> None:
        preview = to_qimage(event.preview) if event.preview is not None else None
        self.progress.emit(event.kind.value, event.message, event.step, event.total, preview)

    @Slot(object)
    def run(self, job: Job) -> None:
        try:
            engine = self._engine_for(job)
            prepare_output(job.output_dir)  # before the work, not after it
            result = engine.generate(job.request, on_event=self._forward, cancel=job.cancel)
            made: list[Made] = []
            try:
                for index, image in enumerate(result.images):
                    record = result.record(index)
                    path = save_png(image, next_free_path(job.output_dir, IMAGE_STEM), record)
                    entry_id, thumb = make_thumbnail(image)
                    made.append(Made(entry_id, path, thumb, record, to_qimage(image)))
            except (LineaError, OSError) as exc:
                error = exc if isinstance(exc, LineaError) else OutputPathError(
                    f"Saving into '{job.output_dir}' failed: {exc.strerror or exc}.",
                    "Check free disk space, or choose another output folder in File > Settings.")
                if not made:
                    raise error from exc
                # the images already written keep their history entries; the run still failed
                log.warning("saving failed after %d image(s): %s", len(made), error)
                self.finished.emit(made, {**result.timings, "warnings": result.warnings,
                                          "failure": (error.message, error.hint)})
                return
            self.plan_used.emit(result.plan.description)
            self.finished.emit(made, {**result.timings, "warnings": result.warnings})
        except CancelledError:
            self.cancelled.emit()
        except LineaError as exc:
            log.warning("generation failed: %s", exc)
            self.failed.emit(exc.message, exc.hint)
        except Exception as exc:  # a bug must not take the window down; it is logged in full
            log.error("generation crashed:\n%s", traceback.format_exc())
            self._engine, self._engine_key = None, None
            self.failed.emit(f"The generation failed unexpectedly: {exc}",
                             "The details are in the log (Help > Open log file). "
                             "Try again, or pick another model.")


def prepare_output(folder: Path) -> None:
    """Create the output folder if needed and check that images can be written into it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputPathError(f"The output folder '{folder}' cannot be created "
                              f"({exc.strerror or exc}).",
                              "Choose another output folder in File > Settings.") from exc
    try:
        check_folder_writable(folder)
    except OutputPathError as exc:
        raise OutputPathError(exc.message, "Choose another output folder in File > Settings."
                              ) from exc


class WorkerThread(QThread):
    """Owns the worker object and the thread it runs on."""

    submit = Signal(object)
    probe = Signal(str, object, object)

    def __init__(self) -> None:
        super().__init__()
        self.worker = GenerationWorker()
        self.worker.moveToThread(self)
        self.submit.connect(self.worker.run)
        self.probe.connect(self.worker.probe)
        self.finished.connect(self.worker.deleteLater)

    def stop(self, wait_s: float = 10.0) -> bool:
        """Let the job in flight end (cancel it first), then stop; False if it would not."""
        self.quit()
        deadline = time.monotonic() + wait_s
        while self.isRunning() and time.monotonic() < deadline:
            self.wait(100)
        if self.isRunning():
            log.error("the generation thread did not stop within %.0f s", wait_s)
        return not self.isRunning()
