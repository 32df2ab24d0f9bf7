"""What the frozen bundle holds and what it leaves out; linea.spec reads these at build time.

diffusers and transformers import their model classes lazily by name, so PyInstaller's import
analysis cannot see them: every module of both libraries is collected except the model and
pipeline architectures Linea never loads. Everything else is found by following imports.
"""

from __future__ import annotations

import fnmatch
import importlib.util
import re
from functools import cache
from pathlib import Path

APP_NAME = "Linea"
CLI_NAME = "linea-cli"
ROOT = Path(__file__).resolve().parent.parent
ENTRY_SCRIPT = ROOT / "main.py"
RUNTIME_HOOK = ROOT / "installer" / "rthook_offline.py"
ICON = ROOT / "assets" / "icons" / "linea.ico"
# PyInstaller's onedir layout: the launchers beside _internal/, which holds everything else.
CONTENTS_DIR = "_internal"
# build.py --models: a folder of model folders to bundle instead of assets/models (test builds,
# or weights kept outside the repository).
MODELS_OVERRIDE_ENV = "LINEA_BUNDLE_MODELS"

QT_MODULES_KEPT = ("QtCore", "QtGui", "QtWidgets")

# Architectures the runtime builds (runtime.loader.ALLOWED_CLASSES and the families' pipelines)
# plus what they import by name: sana imports pixart_alpha's size bins; transformers' auto
# classes resolve through models/auto.
DIFFUSERS_PIPELINES_KEPT = ("sana", "pixart_alpha")
TRANSFORMERS_MODELS_KEPT = ("auto", "gemma", "gemma2")

EXCLUDED_MODULES = (
    # Test and lint tools: present in the build environment, never used by the app.
    "pytest", "_pytest", "pytestqt", "pytest_socket", "ruff", "iniconfig", "pluggy",
    # bitsandbytes and transformers download kernels from the hub at import when it exists.
    "kernels",
    # Downloads and hub command lines: Linea never downloads.
    "hf_xet", "huggingface_hub.cli", "transformers.cli", "diffusers.commands",
    # Optional extras some libraries probe for; large and unused.
    "tkinter", "IPython", "matplotlib", "tensorboard", "torch.utils.tensorboard",
)

# Packages that read their own (or a dependency's) version from metadata at import time.
METADATA_RECURSIVE = ("diffusers", "transformers", "accelerate", "bitsandbytes")


# torch's C++ test programs and libraries, and the protobuf compiler: built into the wheel, never
# run by an app. (torch_shm_manager stays: torch.multiprocessing may share tensors through it.)
TORCH_FILES_LEFT_OUT = ("torch/test/*", "torch/bin/test_*", "torch/bin/*Test", "torch/bin/protoc*",
                        "torch/lib/*torchbind_test*", "torch/lib/*aoti_custom_ops*")
BNB_LIBRARY = re.compile(r"bitsandbytes/(lib)?bitsandbytes_(?P<backend>[a-z]+)(?P<tag>[0-9]*)\.")


def keep_file(destination: str, torch_cuda: str | None) -> bool:
    """Whether a file PyInstaller collected belongs in the bundle.

    bitsandbytes ships a library per CUDA, ROCm and XPU version; only the CPU one and the one
    for the bundled torch's CUDA version (12.8 -> cuda128) can ever load.
    """
    path = destination.replace("\\", "/")
    if any(fnmatch.fnmatch(path, pattern) for pattern in TORCH_FILES_LEFT_OUT):
        return False
    found = BNB_LIBRARY.search(path)
    if found is None or found["backend"] == "cpu":
        return True
    wanted = torch_cuda.replace(".", "") if torch_cuda else None
    return found["backend"] == "cuda" and found["tag"] == wanted


def excluded_qt_modules(installed: list[str]) -> list[str]:
    """Every PySide6 module other than QtCore, QtGui and QtWidgets."""
    return [f"PySide6.{name}" for name in installed
            if name.startswith("Qt") and name not in QT_MODULES_KEPT]


def keep_library_module(name: str) -> bool:
    """Filter for collect_submodules: drop architectures Linea never loads."""
    parts = name.split(".")
    if parts[:2] == ["diffusers", "pipelines"] and len(parts) > 2 and parts[2] in _pipelines():
        return parts[2] in DIFFUSERS_PIPELINES_KEPT
    if parts[:2] == ["diffusers", "modular_pipelines"] and len(parts) > 2:
        return False
    if parts[:2] == ["transformers", "models"] and len(parts) > 2:
        return parts[2] in TRANSFORMERS_MODELS_KEPT
    return not any(name == m or name.startswith(m + ".") for m in EXCLUDED_MODULES)


@cache
def _pipelines() -> frozenset[str]:
    """diffusers.pipelines' per-model folders (beside shared modules such as pipeline_utils)."""
    spec = importlib.util.find_spec("diffusers")
    if spec is None or not spec.submodule_search_locations:
        return frozenset()
    folder = Path(next(iter(spec.submodule_search_locations))) / "pipelines"
    return frozenset(p.name for p in folder.iterdir() if (p / "__init__.py").is_file())


def data_files(root: Path = ROOT, models: Path | None = None) -> list[tuple[str, str]]:
    """assets/ (bundled models, icons) as PyInstaller (source, destination folder) pairs.

    With `models`, its contents replace assets/models/.
    """
    assets = root / "assets"
    found = [p for p in sorted(assets.rglob("*")) if p.is_file()] if assets.is_dir() else []
    pairs = [(str(p), str(p.parent.relative_to(root))) for p in found
             if models is None or "models" not in p.relative_to(assets).parts[:1]]
    if models is not None:
        for path in sorted(models.rglob("*")):
            if path.is_file():
                destination = Path("assets", "models", path.parent.relative_to(models))
                pairs.append((str(path), str(destination)))
    return pairs


def internal_dir(bundle_dir: Path) -> Path:
    return bundle_dir / CONTENTS_DIR


def bundled_models(bundle_dir: Path) -> Path:
    return internal_dir(bundle_dir) / "assets" / "models"


def longest_relative_path(folder: Path) -> tuple[int, str]:
    """Length and name of the deepest file under `folder`, as Windows will count it."""
    longest = (0, "")
    for path in folder.rglob("*"):
        relative = str(path.relative_to(folder)).replace("/", "\\")
        longest = max(longest, (len(relative), relative))
    return longest
