"""Control-image preprocessing on the CPU: read a 4000x3000 photo (JPEG) or a drawn sketch and
make the line map at 1024x768, median of 5.

    python -m bench.bench_preprocess      # writes bench/results/preprocess_cpu.json
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from runtime.images import load_image
from runtime.sketch import auto_control

ROOT = Path(__file__).resolve().parent.parent


def make_inputs(folder: Path) -> dict[str, Path]:
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


def main() -> None:
    folder = Path(tempfile.mkdtemp(prefix="linea-preprocess-"))
    results = {}
    for name, path in make_inputs(folder).items():
        times = []
        for _ in range(6):
            begin = time.perf_counter()
            _, kind = auto_control(load_image(path), size=(1024, 768))
            times.append(time.perf_counter() - begin)
        results[name] = {"read_as": kind, "median_s": round(statistics.median(times[1:]), 3)}
    report = {"benchmark": "control preprocessing, 4000x3000 input", "results": results,
              "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
              "load_average_1min": round(os.getloadavg()[0], 2), "target_s": 0.5,
              "date": time.strftime("%Y-%m-%d")}
    text = json.dumps(report, indent=2)
    print(text)
    (ROOT / "bench" / "results" / "preprocess_cpu.json").write_text(text + "\n")


if __name__ == "__main__":
    main()
