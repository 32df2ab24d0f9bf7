"""Control-image preprocessing on the CPU: read a 4000x3000 photo (JPEG) or drawn sketch (PNG)
and make its line map at the default size (1152x864), median of several runs. Target: 0.5 s.

    python -m bench.bench_preprocess      # writes bench/results/preprocess_cpu.json
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import PIL
import torch
from PIL import Image, ImageDraw

from runtime.images import load_image
from runtime.sketch import auto_control

ROOT = Path(__file__).resolve().parent.parent
RUNS = 7
TARGET_S = 0.5


def make_inputs(folder: Path) -> dict[str, Path]:
    """A photo-like JPEG (colour gradients, two shapes, sensor noise) and a pen sketch PNG."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:3000, 0:4000]
    photo = np.stack([xx / 4000 * 200, yy / 3000 * 150, np.full(xx.shape, 80.0)], -1)
    photo[(xx - 1500) ** 2 + (yy - 1200) ** 2 < 600**2] = (220, 40, 40)
    photo[1800:2600, 2500:3600] = (30, 160, 60)
    photo += rng.normal(0, 8, photo.shape)
    Image.fromarray(photo.clip(0, 255).astype(np.uint8)).save(folder / "photo.jpg", quality=90)
    sketch = Image.new("RGB", (4000, 3000), "white")
    draw = ImageDraw.Draw(sketch)
    draw.ellipse((800, 600, 2200, 2000), outline="black", width=18)
    draw.line((2400, 2700, 3700, 400), fill=(40, 40, 40), width=14)
    sketch.save(folder / "sketch.png")
    return {"photo": folder / "photo.jpg", "sketch": folder / "sketch.png"}


def time_one(path: Path) -> dict[str, object]:
    loads, totals, kind, size = [], [], "", (0, 0)
    for _ in range(RUNS + 1):  # the first run warms caches and is dropped
        begin = time.perf_counter()
        image = load_image(path)
        loaded = time.perf_counter()
        control, kind = auto_control(image)
        totals.append(time.perf_counter() - begin)
        loads.append(loaded - begin)
        size = control.size
    total = statistics.median(totals[1:])
    return {"read_as": kind, "map_size": list(size),
            "load_s": round(statistics.median(loads[1:]), 3),
            "load_and_map_median_s": round(total, 3),
            "load_and_map_max_s": round(max(totals[1:]), 3),
            "meets_target": total <= TARGET_S}


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="linea-preprocess-") as folder:
        results = {name: time_one(path) for name, path in make_inputs(Path(folder)).items()}
    report = {"benchmark": "load + auto_control of a 4000x3000 image, CPU",
              "runs": RUNS, "target_s": TARGET_S, "results": results,
              "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
              "cpu": platform.processor() or platform.machine(),
              "torch": torch.__version__, "pillow": PIL.__version__,
              "python": platform.python_version(),
              "load_average_1min": round(os.getloadavg()[0], 2),
              "date": time.strftime("%Y-%m-%d")}
    for name, result in results.items():
        print(f"{name:7s} read as {result['read_as']:6s} load {result['load_s']:.3f} s, "
              f"load + line map {result['load_and_map_median_s']:.3f} s "
              f"(max {result['load_and_map_max_s']:.3f} s, target {TARGET_S} s)")
    out = ROOT / "bench" / "results" / "preprocess_cpu.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written to {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
