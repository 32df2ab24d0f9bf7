"""The generation worker: a QThread that owns the engine.

A thread, not a process: the model stays loaded between images (a process would have to reload
it or ship tensors across), and the runtime turns every failure it can meet into a typed error,
which the worker reports instead of dying. The UI thread never waits on it: requests go in through
a queued signal, events come back through signals, and cancelling sets a thread-safe token.
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

from runtime import (
    CancelledError,
    CancelToken,
    Event,
    GenerationRequest,
    LineaError,
    MemoryPlan,
    next_free_path,
    save_png,
)

log = logging.getLogger(__name__)


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
    path: Path
    image: Image.Image
    record: dict


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
    device_info = Signal(str, str)  # device summary, memory plan description

    def __init__(self) -> None:
        super().__init__()
        self._engine = None
        self._engine_key: tuple | None = None

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
            self.device_info.emit(engine.device_info.summary(), engine.plan.description)
            result = engine.generate(job.request, on_event=self._forward, cancel=job.cancel)
            job.output_dir.mkdir(parents=True, exist_ok=True)
            made = []
            for index, image in enumerate(result.images):
                record = result.record(index)
                path = save_png(image, next_free_path(job.output_dir, "linea"), record)
                made.append(Made(path, image, record))
            self.device_info.emit(engine.device_info.summary(), result.plan.description)
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


class WorkerThread(QThread):
    """Owns the worker object and the thread it runs on."""

    submit = Signal(object)

    def __init__(self) -> None:
        super().__init__()
        self.worker = GenerationWorker()
        self.worker.moveToThread(self)
        self.submit.connect(self.worker.run)

    def stop(self, wait_ms: int = 5000) -> None:
        self.quit()
        deadline = time.monotonic() + wait_ms / 1000
        while self.isRunning() and time.monotonic() < deadline:
            self.wait(100)
