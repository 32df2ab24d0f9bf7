"""The window's responsiveness: time to a usable window, and the longest event-loop stall while
the worker finds the device (its first `import torch`) and while a model loads and generates
(a 5 ms timer records the gaps between its ticks).

    python -m bench.bench_gui [--model FOLDER] [--size 256] [--steps 20]

Writes bench/results/gui_cpu.json. Without --model a tiny SANA replica is written first.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

STARTUP_PROBE = """
import sys, time
start = time.perf_counter()
sys.argv = ["main.py", *sys.argv[1:]]
from runtime.offline import enforce_offline
enforce_offline()
from PySide6.QtWidgets import QApplication
from app.viewmodels.settings import Settings
from app.widgets.window import MainWindow
app = QApplication([])
window = MainWindow(Settings(extra_model_dirs=[sys.argv[1]]))
window.show()
app.processEvents()
while window.panel.current_model() is None:
    app.processEvents()
usable = time.perf_counter() - start
from bench.bench_gui import GapMeter
meter = GapMeter()
meter.start()
while window.session.device is None:  # the worker imports torch meanwhile
    app.processEvents()
    time.sleep(0.001)
print(usable, time.perf_counter() - start, max(meter.gaps, default=0.0))
window.close()
"""


class GapMeter:
    """A 5 ms Qt timer that records the gaps between its ticks (ms): a gap far over 5 ms is the
    event loop stalled. Needs a QApplication."""

    def __init__(self) -> None:
        from PySide6.QtCore import QElapsedTimer, QTimer

        self.gaps: list[float] = []
        self.clock = QElapsedTimer()
        self.clock.start()
        self.last = self.clock.nsecsElapsed()
        self.timer = QTimer()
        self.timer.setInterval(5)
        self.timer.timeout.connect(self._tick)

    def _tick(self) -> None:
        now = self.clock.nsecsElapsed()
        self.gaps.append((now - self.last) / 1e6)
        self.last = now

    def start(self) -> None:
        self.last = self.clock.nsecsElapsed()
        self.timer.start()

    def stop(self) -> None:
        self.timer.stop()


def startup_seconds(data_dir: Path, models: Path, runs: int = 3) -> dict:
    """From the interpreter running our first line to a shown window with its models listed
    (usable: a prompt can be typed and generated), and to the device being known."""
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "LINEA_DATA_DIR": str(data_dir)}
    usable, device, stalls = [], [], []
    for _ in range(runs):
        done = subprocess.run([sys.executable, "-c", STARTUP_PROBE, str(models)], cwd=ROOT, env=env,
                              capture_output=True, text=True, check=True)
        first, second, stall = done.stdout.split()[-3:]
        usable.append(round(float(first), 2))
        device.append(round(float(second), 2))
        stalls.append(round(float(stall), 1))
    return {"usable_window_s": usable, "device_known_s": device,
            "longest_stall_while_the_worker_imports_torch_ms": stalls}


def stall_during_generation(model: Path, data_dir: Path, size: int, steps: int) -> dict:
    os.environ["QT_QPA_PLATFORM"] = "offscreen"
    os.environ["LINEA_DATA_DIR"] = str(data_dir)
    from PySide6.QtWidgets import QApplication

    from app.viewmodels.settings import Settings
    from app.widgets.window import MainWindow

    app = QApplication.instance() or QApplication([])
    meter = GapMeter()
    window = MainWindow(Settings(extra_model_dirs=[str(model.parent)]))
    window.show()
    while window.panel.current_model() is None:
        app.processEvents()
    index = next(i for i, m in enumerate(window.panel.models) if m.path == model.resolve())
    window.panel.model.setCurrentIndex(index)
    window.panel.prompt.setPlainText("a red circle to the left of a blue square")
    window.panel.width_box.setValue(size)
    window.panel.height_box.setValue(size)
    window.panel.steps.setValue(steps)
    meter.start()
    begin = time.perf_counter()
    window.generate()  # the first generation also loads the model
    while window.busy:
        app.processEvents()
        time.sleep(0.001)
    total = time.perf_counter() - begin
    meter.stop()
    window.close()
    gaps = sorted(meter.gaps)
    return {"generation_with_load_s": round(total, 3), "ticks": len(gaps),
            "longest_stall_ms": round(gaps[-1], 1),
            "p99_gap_ms": round(gaps[int(len(gaps) * 0.99)], 1),
            "result": window.progress.format()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", type=Path)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "gui_cpu.json")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="linea-gui-bench-"))
    model = args.model
    if model is None:
        from models.replica import write_replica

        model = write_replica("sana-600m", scratch / "models" / "tiny-sana", tiny=True)
    report = {
        "benchmark": "gui responsiveness", "machine": f"{platform.machine()}, "
        f"{os.cpu_count()} cores", "date": time.strftime("%Y-%m-%d"),
        "startup": startup_seconds(scratch / "a", model.parent),
        "generation": stall_during_generation(model, scratch / "b", args.size, args.steps),
        "targets": {"startup_s": 3.0, "longest_stall_ms": 50.0},
    }
    text = json.dumps(report, indent=2)
    print(text)
    args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
