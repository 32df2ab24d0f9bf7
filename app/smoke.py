"""`main.py --smoke-test`: prove an installed (or frozen) Linea works end to end, headless.

It loads the bundled model, makes one small image, checks it, saves it with its metadata, and
shows it in an offscreen Qt window. Exit 0 when every check passes; otherwise 1 with the reason
on stderr. Installers and CI run it on the frozen app, so it uses only runtime's public API.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

SMOKE_PROMPT = "a red circle to the left of a blue square"
SMOKE_SEED = 7
SMOKE_MAX_SIDE = 256
SMOKE_STEPS = 2
# Below this spread (0-255 scale) every pixel is nearly the same colour: a blank image.
BLANK_STD = 1.0
# A non-ASCII folder name: user names like "Zoë" or "山田" end up in every Windows path.
OUTPUT_PREFIX = "linea-smoke-Zoë-山田-"


class SmokeFailure(Exception):
    """One check failed; the message says which and why."""


def _frozen() -> bool:
    return bool(getattr(sys, "frozen", False))


def _check_offline() -> None:
    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(key) != "1":
            raise SmokeFailure(f"{key} is not set to 1: the offline switches did not run "
                               "before start-up (runtime hook or main.py).")


def _pick_model(scratch: Path):
    from runtime import find_models

    models, problems = find_models(include_hf_cache=False)
    bundled = [m for m in models if m.source == "bundled"]
    if bundled:
        return bundled[0]
    broken = "; ".join(p.message for p in problems)
    if _frozen():
        bundle = Path(getattr(sys, "_MEIPASS", Path(sys.executable).parent))
        raise SmokeFailure(f"No usable model in {bundle / 'assets' / 'models'}"
                           + (f" ({broken})" if broken else "")
                           + ". Rebuild with the model under assets/models/.")
    # A source checkout before the in-house model exists: a tiny replica exercises the same path.
    from models.replica import write_replica

    write_replica("sana-600m", scratch / "replica", tiny=True, seed=0)
    models, problems = find_models(extra_dirs=[scratch], include_hf_cache=False)
    if not models:
        raise SmokeFailure(f"The replica written for the smoke test is unusable: {problems}.")
    return models[0]


def _generate(model, timings: dict[str, float]):
    from runtime import Engine, GenerationRequest

    side = min(model.native_size, model.max_side, SMOKE_MAX_SIDE)
    low, _ = model.family.step_range
    steps = min(model.family.default_steps, max(low, SMOKE_STEPS))
    engine = Engine(model)
    mark = time.perf_counter()
    engine.load()
    timings["load_s"] = time.perf_counter() - mark
    request = GenerationRequest(prompt=SMOKE_PROMPT, seed=SMOKE_SEED, width=side, height=side,
                                steps=steps)
    mark = time.perf_counter()
    result = engine.generate(request, previews=False)
    timings["generate_s"] = time.perf_counter() - mark
    return result, side


def _check_image(result, side: int) -> None:
    import numpy as np
    import torch

    if len(result.images) != 1:
        raise SmokeFailure(f"Asked for 1 image, got {len(result.images)}.")
    image = result.images[0]
    if image.size != (side, side):
        raise SmokeFailure(f"The image is {image.size[0]}x{image.size[1]}, "
                           f"expected {side}x{side}.")
    if result.latents is None or not torch.isfinite(result.latents).all():
        raise SmokeFailure("The latents hold NaN or infinite values.")
    spread = float(np.asarray(image.convert("RGB"), dtype=np.float32).std())
    if spread < BLANK_STD:
        raise SmokeFailure(f"The image is blank (pixel standard deviation {spread:.3f}).")


def _check_png(result, folder: Path) -> Path:
    from PIL import Image

    from runtime import read_request, save_png

    path = save_png(result.images[0], folder / "smoke.png", result.record(0))
    with Image.open(path) as saved:
        saved.load()
        chunks = dict(saved.text)
    missing = [k for k in ("parameters", "linea", "XML:com.adobe.xmp") if k not in chunks]
    if missing:
        raise SmokeFailure(f"The PNG lacks its metadata chunks: {', '.join(missing)}.")
    if "trainedAlgorithmicMedia" not in chunks["XML:com.adobe.xmp"]:
        raise SmokeFailure("The PNG's XMP packet lacks the IPTC AI source type.")
    if read_request(path).prompt != SMOKE_PROMPT:
        raise SmokeFailure("The request read back from the PNG differs from the one made.")
    return path


def _open_window():
    """Qt's platform plugin and widgets must load from the bundle: show a window offscreen."""
    from PySide6.QtWidgets import QApplication, QLabel

    app = QApplication.instance() or QApplication([sys.argv[0]])
    window = QLabel("Linea smoke test")
    window.show()
    app.processEvents()
    if window.grab().isNull():
        raise SmokeFailure("Qt could not draw a window offscreen.")
    return app, window


def _show_image(app, window, path: Path, side: int) -> None:
    """Qt's image plugins must read the PNG Linea wrote."""
    from PySide6.QtGui import QPixmap

    pixmap = QPixmap(str(path))
    if pixmap.isNull() or (pixmap.width(), pixmap.height()) != (side, side):
        raise SmokeFailure(f"Qt could not read the saved PNG at {path}.")
    window.setPixmap(pixmap)
    app.processEvents()
    window.close()


def run_smoke_test() -> int:
    """Run every check; print a one-line verdict. 0 when all pass, 1 with the reason if not."""
    os.environ["QT_QPA_PLATFORM"] = "offscreen"
    start = time.perf_counter()
    timings: dict[str, float] = {}
    try:
        _check_offline()
        # Windows: torch's DLLs must load before Qt's (WinError 1114 on c10.dll otherwise).
        import runtime  # noqa: F401

        timings["import_s"] = time.perf_counter() - start
        app, window = _open_window()
        timings["window_s"] = time.perf_counter() - start
        with tempfile.TemporaryDirectory(prefix=OUTPUT_PREFIX) as scratch:
            model = _pick_model(Path(scratch))
            result, side = _generate(model, timings)
            _check_image(result, side)
            path = _check_png(result, Path(scratch))
            _show_image(app, window, path, side)
    except SmokeFailure as exc:
        print(f"smoke test failed: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        traceback.print_exc()
        print(f"smoke test failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    timings["total_s"] = time.perf_counter() - start
    figures = ", ".join(f"{k} {v:.2f}" for k, v in timings.items())
    print(f"smoke test passed: {model.name} ({model.source}), {side}x{side}, "
          f"{'frozen' if _frozen() else 'source'}; seconds: {figures}")
    return 0
