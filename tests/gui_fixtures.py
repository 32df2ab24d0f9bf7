"""Fixtures and helpers for the window tests. tests/test_gui_*.py import the fixture functions
(`window_fixture`, ...), which pytest knows as `models_dir`, `window` and `control_window`.

The tiny models come from conftest's session-scoped replicas (models.replica.write_replica):
written once per run, then copied per test so that a test may damage its copy.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
from PySide6.QtGui import QDropEvent
from PySide6.QtWidgets import QApplication

from app.viewmodels.settings import Settings
from app.widgets.window import MainWindow

SHOTS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
# Screenshots are refreshed on request only (LINEA_SCREENSHOTS=1), so that a plain test run
# leaves the working tree as it found it.
TAKE_SHOTS = os.environ.get("LINEA_SCREENSHOTS") == "1"
WAIT_MS = 120_000  # a ceiling for a stuck run, not a timing check: runs take about a second


@pytest.fixture(name="models_dir")
def models_dir_fixture(sana_tiny, sprint_tiny, tmp_path) -> Path:
    folder = tmp_path / "models"
    folder.mkdir()
    shutil.copytree(sana_tiny, folder / "tiny-sana")
    shutil.copytree(sprint_tiny, folder / "tiny-sprint")
    return folder


def open_window(qtbot, models_dir: Path, saved_settings: bool = False) -> MainWindow:
    """A shown window listing the models in `models_dir`, with fresh settings or (with
    `saved_settings`) those in the user data folder, as the app starts."""
    settings = Settings.load() if saved_settings else Settings()
    settings.extra_model_dirs = [str(models_dir)]
    win = MainWindow(settings)
    qtbot.addWidget(win)
    win.show()
    qtbot.waitUntil(lambda: win.panel.current_model() is not None, timeout=10_000)
    return win


@pytest.fixture(name="window")
def window_fixture(qtbot, data_dir, models_dir):
    win = open_window(qtbot, models_dir)
    yield win
    win.close()


@pytest.fixture(name="control_window")
def control_window_fixture(qtbot, data_dir, replica_dir, tmp_path):
    folder = tmp_path / "cn-models"
    shutil.copytree(replica_dir("sana-controlnet-600m"), folder / "tiny-controlnet")
    win = open_window(qtbot, folder)
    select_model(win, "tiny-controlnet")
    yield win
    win.close()


def select_model(win: MainWindow, name: str) -> None:
    index = next(i for i, m in enumerate(win.panel.models) if m.name == name)
    win.panel.model.setCurrentIndex(index)


def set_small(win: MainWindow, size: int = 128, steps: int = 3) -> None:
    win.panel.width_box.setValue(size)
    win.panel.height_box.setValue(size)
    win.panel.steps.setValue(steps)


def generate(qtbot, win: MainWindow, prompt: str = "a red circle", steps: int = 3,
             size: int = 128, model: str = "tiny-sana") -> None:
    select_model(win, model)
    win.panel.prompt.setPlainText(prompt)
    set_small(win, size, steps)
    win.generate()
    assert win.busy
    qtbot.waitUntil(lambda: not win.busy, timeout=WAIT_MS)


def drop_file(win: MainWindow, path: Path) -> None:
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(path))])
    drop_mime(win, mime)


def drop_mime(win: MainWindow, mime: QMimeData) -> None:
    event = QDropEvent(QPointF(200, 200), Qt.DropAction.CopyAction, mime,
                       Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    win.dropEvent(event)


def screenshot(widget, name: str) -> None:
    """Saved to docs/screenshots/ for the README when asked; tests check behaviour, not
    pictures."""
    if TAKE_SHOTS:
        QApplication.processEvents()  # pending layout changes first
        SHOTS.mkdir(parents=True, exist_ok=True)
        widget.grab().save(str(SHOTS / f"{name}.png"))
