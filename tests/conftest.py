"""Test-wide setup: offline switches before any Hugging Face import, headless Qt, small threads."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["DIFFUSERS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import gc
import json
import shutil
import sys
from pathlib import Path

import pytest

torch_threads = int(os.environ.get("LINEA_TEST_THREADS", "2"))


@pytest.fixture(scope="session", autouse=True)
def _small_threads():
    import torch

    torch.set_num_threads(torch_threads)


def _delete_closed_widgets() -> None:
    """Widgets pytest-qt closed get deleteLater(); deliver those deletions now, while the
    QApplication lives, instead of leaving them to the interpreter's shutdown, where Qt objects
    die in no particular order."""
    if "PySide6.QtWidgets" not in sys.modules:
        return
    from PySide6.QtCore import QCoreApplication, QEvent

    if QCoreApplication.instance() is not None:
        gc.collect()
        QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)


@pytest.fixture(autouse=True)
def _qt_cleanup(request):
    yield
    if "qtbot" in request.fixturenames:
        _delete_closed_widgets()


@pytest.fixture(scope="session")
def replica_dir(tmp_path_factory):
    """Tiny replicas of the real families, written once per session through models.replica."""
    root = tmp_path_factory.mktemp("replicas")
    reuse = os.environ.get("LINEA_TEST_REPLICAS")  # folders written earlier, to save time
    cache: dict[str, Path] = {}

    def get(family: str) -> Path:
        if family not in cache:
            if reuse and (Path(reuse) / family / "model_index.json").is_file():
                cache[family] = Path(reuse) / family
            else:
                from models.replica import write_replica

                cache[family] = write_replica(family, root / family, tiny=True, seed=0)
        return cache[family]

    return get


@pytest.fixture(scope="session")
def sana_tiny(replica_dir) -> Path:
    return replica_dir("sana-600m")


@pytest.fixture(scope="session")
def sprint_tiny(replica_dir) -> Path:
    return replica_dir("sprint-600m")


@pytest.fixture
def with_interval(tmp_path):
    """A copy of a model folder whose linea.json limits guidance to `interval`."""

    def copy(folder: Path, interval: list[float]) -> Path:
        target = tmp_path / f"{folder.name}-interval"
        shutil.copytree(folder, target)
        (target / "linea.json").write_text(json.dumps({"guidance_interval": interval}))
        return target

    return copy


@pytest.fixture
def data_dir(tmp_path, monkeypatch) -> Path:
    """Redirect every user folder (models, history, logs, images) into the test's tmp dir."""
    monkeypatch.setenv("LINEA_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"
