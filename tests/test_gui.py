"""The desktop window, offscreen: generate, cancel, drop a PNG, restart, bad inputs, screenshots."""

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image
from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
from PySide6.QtGui import QDropEvent
from PySide6.QtWidgets import QMessageBox

from app.settings import Settings
from app.window import MainWindow
from runtime import read_request

SHOTS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
WAIT_MS = 120_000


@pytest.fixture
def models_dir(sana_tiny, tmp_path):
    folder = tmp_path / "models"
    folder.mkdir()
    shutil.copytree(sana_tiny, folder / "tiny-sana")
    return folder


@pytest.fixture
def window(qtbot, data_dir, models_dir):
    settings = Settings(extra_model_dirs=[str(models_dir)])
    win = MainWindow(settings)
    qtbot.addWidget(win)
    win.show()
    qtbot.waitUntil(lambda: win.panel.current_model() is not None, timeout=10_000)
    yield win
    win.close()


def _select_model(win, name):
    index = next(i for i, m in enumerate(win.panel.models) if m.name == name)
    win.panel.model.setCurrentIndex(index)


def _generate(qtbot, win, prompt="a red circle", steps=3, size=128):
    _select_model(win, "tiny-sana")
    win.panel.prompt.setPlainText(prompt)
    win.panel.width_box.setValue(size)
    win.panel.height_box.setValue(size)
    win.panel.steps.setValue(steps)
    win.generate()
    assert win.busy
    qtbot.waitUntil(lambda: not win.busy, timeout=WAIT_MS)


def test_generate_shows_the_image_in_history_and_writes_the_png(qtbot, window, data_dir):
    SHOTS.mkdir(parents=True, exist_ok=True)
    window.grab().save(str(SHOTS / "empty.png"))
    _generate(qtbot, window)
    assert window.progress.format() == "Done", window.banner.text()
    assert window.history_list.count() == 1
    entry = window.selected_entry()
    png = Path(entry.path)
    assert png.is_file() and png.parent == data_dir / "images"
    with Image.open(png) as image:
        assert image.size == (128, 128)
        assert "a red circle" in image.text["parameters"]
    assert read_request(png).steps == 3
    assert "s each" in window.timing.text()
    window.grab().save(str(SHOTS / "result.png"))


def test_ctrl_enter_generates_and_escape_cancels(qtbot, window):
    _select_model(window, "tiny-sana")
    window.panel.prompt.setPlainText("a blue star")
    window.panel.width_box.setValue(128)
    window.panel.height_box.setValue(128)
    window.panel.steps.setValue(100)
    previews = []
    window.worker_thread.worker.progress.connect(
        lambda kind, *_: previews.append(kind) if kind == "step" else None)
    window.panel.prompt.setFocus()
    qtbot.keyClick(window.panel.prompt, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    assert window.busy
    qtbot.waitUntil(lambda: len(previews) >= 2, timeout=WAIT_MS)
    window.grab().save(str(SHOTS / "generating.png"))
    qtbot.keyClick(window, Qt.Key.Key_Escape)
    qtbot.waitUntil(lambda: not window.busy, timeout=WAIT_MS)
    assert window.progress.format() == "Cancelled"
    assert len(previews) < 100
    assert window.history_list.count() == 0


def _drop(window, path):
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(path))])
    event = QDropEvent(QPointF(200, 200), Qt.DropAction.CopyAction, mime,
                       Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    window.dropEvent(event)


def test_dropping_a_linea_png_restores_its_settings(qtbot, window, tmp_path):
    _generate(qtbot, window, prompt="two small yellow stars", steps=4)
    made = Path(window.selected_entry().path)
    window.panel.prompt.setPlainText("something else")
    window.panel.steps.setValue(9)
    _drop(window, made)
    assert window.panel.prompt.toPlainText() == "two small yellow stars"
    assert window.panel.steps.value() == 4
    assert window.panel.lock_seed.isChecked()
    assert int(window.panel.seed.text()) == read_request(made).seed
    not_png = tmp_path / "notes.png"
    not_png.write_text("hello")
    _drop(window, not_png)
    assert window.banner.isVisible() and "not a readable PNG" in window.banner.text()
    assert window.panel.prompt.toPlainText() == "two small yellow stars"
    window.grab().save(str(SHOTS / "error.png"))


def test_history_survives_a_restart_and_a_damaged_history_file(qtbot, window, data_dir,
                                                              models_dir):
    _generate(qtbot, window, prompt="a green triangle")
    _generate(qtbot, window, prompt="a purple square")
    window.close()
    second = MainWindow(Settings(extra_model_dirs=[str(models_dir)]))
    qtbot.addWidget(second)
    qtbot.waitUntil(lambda: second.history_list.count() == 2, timeout=10_000)
    second.close()
    (data_dir / "history.json").write_text('[{"id": "broken", "pa')  # killed mid-write
    third = MainWindow(Settings(extra_model_dirs=[str(models_dir)]))
    qtbot.addWidget(third)
    qtbot.waitUntil(lambda: third.history_list.count() == 2, timeout=10_000)
    prompts = {e.record["prompt"] for e in third.history.entries}
    assert prompts == {"a green triangle", "a purple square"}
    assert list(data_dir.glob("history.json.damaged-*"))
    third.close()


def test_bad_inputs_leave_the_window_usable(qtbot, window, models_dir, monkeypatch):
    window.panel.prompt.setPlainText("   ")
    window.generate()
    assert not window.busy and "prompt is empty" in window.banner.text()
    broken = models_dir / "tiny-sana" / "transformer" / "diffusion_pytorch_model.safetensors"
    broken.write_bytes(broken.read_bytes()[:1000])
    _generate(qtbot, window, prompt="a cat")
    assert window.progress.format() == "Failed"
    assert "truncated" in window.banner.text() or "damaged" in window.banner.text()
    assert window.history_list.count() == 0 and window.panel.generate_button.isEnabled()


def test_delete_asks_first_and_removes_file_and_entry(qtbot, window, monkeypatch):
    _generate(qtbot, window)
    entry = window.selected_entry()
    monkeypatch.setattr(QMessageBox, "question",
                        lambda *a, **k: QMessageBox.StandardButton.No)
    window.delete_selected()
    assert Path(entry.path).is_file() and window.history_list.count() == 1
    monkeypatch.setattr(QMessageBox, "question",
                        lambda *a, **k: QMessageBox.StandardButton.Yes)
    window.delete_selected()
    assert not Path(entry.path).exists() and window.history_list.count() == 0
    assert json.loads((Path(entry.thumb).parent.parent / "history.json").read_text()) == []


def test_settings_dialog_round_trip(qtbot, window, data_dir):
    from app.settings_dialog import SettingsDialog

    dialog = SettingsDialog(window.settings, window)
    qtbot.addWidget(dialog)
    dialog.theme.setCurrentIndex(dialog.theme.findData("dark"))
    dialog.performance.setCurrentIndex(dialog.performance.findData("low"))
    dialog.show()
    dialog.grab().save(str(SHOTS / "settings.png"))
    settings = dialog.result_settings()
    settings.save()
    again = Settings.load()
    assert (again.theme, again.performance) == ("dark", "low")
    (data_dir / "settings.json").write_text("{broken")
    assert Settings.load().theme == "system"


def test_about_lists_the_versions():
    from app.window import about_text

    text = about_text()
    assert "Linea 0.1.0" in text and "diffusers 0." in text and "torch 2." in text


@pytest.fixture
def control_window(qtbot, data_dir, replica_dir, tmp_path):
    folder = tmp_path / "cn-models"
    shutil.copytree(replica_dir("sana-controlnet-600m"), folder / "tiny-controlnet")
    win = MainWindow(Settings(extra_model_dirs=[str(folder)]))
    qtbot.addWidget(win)
    win.show()
    qtbot.waitUntil(lambda: win.panel.current_model() is not None, timeout=10_000)
    _select_model(win, "tiny-controlnet")
    yield win
    win.close()


def _sketch_file(path):
    from PIL import ImageDraw

    sketch = Image.new("RGB", (300, 200), "white")
    ImageDraw.Draw(sketch).ellipse((60, 30, 240, 170), outline="black", width=5)
    sketch.save(path)
    return path


def test_dropped_sketch_file_and_image_data_steer_a_controlnet_model(qtbot, control_window,
                                                                     tmp_path):
    from PySide6.QtGui import QImage

    win = control_window
    assert win.panel.control.isVisible()
    _drop(win, _sketch_file(tmp_path / "sketch.jpg"))
    assert win.panel.control.path.endswith("sketch.jpg")
    assert "sketch" in win.panel.control.note.text()
    mime = QMimeData()
    mime.setImageData(QImage(str(tmp_path / "sketch.jpg")))
    event = QDropEvent(QPointF(50, 50), Qt.DropAction.CopyAction, mime,
                       Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    win.dropEvent(event)
    assert Path(win.panel.control.path).parent.name == "controls"
    win.panel.control.scale.setValue(0.6)
    win.panel.prompt.setPlainText("a round window")
    win.panel.width_box.setValue(128)
    win.panel.height_box.setValue(128)
    win.panel.steps.setValue(2)
    win.generate()
    qtbot.waitUntil(lambda: not win.busy, timeout=WAIT_MS)
    assert win.progress.format() == "Done", win.banner.text()
    request = read_request(Path(win.selected_entry().path))
    assert request.control_scale == 0.6 and request.control_image == win.panel.control.path
    win.grab().save(str(SHOTS / "sketch.png"))
    win.panel.control.clear()
    win.use_settings()
    assert win.panel.control.path == request.control_image


def test_a_model_without_controlnet_refuses_a_dropped_photo(qtbot, window, tmp_path):
    _drop(window, _sketch_file(tmp_path / "photo.jpg"))
    assert "carries no generation settings" in window.banner.text()
    assert "pick a model with a ControlNet" in window.banner.text()


def test_sketch_pad_undo_redo_and_line_map(qtbot, control_window):
    from PySide6.QtCore import QPoint

    pad = control_window.panel.control.open_pad()
    canvas = pad.canvas
    before = canvas.image.copy()
    canvas.draw_stroke([QPoint(100, 100), QPoint(400, 100)])
    assert canvas.image != before
    drawn = canvas.image.copy()
    canvas.undo()
    assert canvas.image == before
    canvas.redo()
    assert canvas.image == drawn
    pad._set_eraser(True)
    canvas.draw_stroke([QPoint(100, 100), QPoint(400, 100)])
    assert canvas.image.pixelColor(250, 100).name() == "#ffffff"
    pad._set_eraser(False)
    canvas.draw_stroke([QPoint(256, 50), QPoint(256, 450)])
    assert control_window.panel.control.path is not None
    assert "sketch" in control_window.panel.control.note.text()
    pad.grab().save(str(SHOTS / "sketch-pad.png"))
    pad.close()


def test_live_mode_coalesces_quick_strokes(qtbot, control_window):
    from PySide6.QtCore import QPoint

    win = control_window
    win.panel.prompt.setPlainText("a round window")
    win.panel.width_box.setValue(64)
    win.panel.height_box.setValue(64)
    win.panel.steps.setValue(2)
    win.panel.control.live.setChecked(True)
    runs = []
    win.worker_thread.submit.connect(lambda job: runs.append(job.request.control_image))
    canvas = win.panel.control.open_pad().canvas
    for k in range(10):
        canvas.draw_stroke([QPoint(20 + 40 * k, 50), QPoint(20 + 40 * k, 450)])
        qtbot.wait(30)
    qtbot.waitUntil(lambda: len(runs) >= 1 and not win.busy and not win.live_timer.isActive()
                    and not win.live_pending, timeout=WAIT_MS)
    qtbot.wait(200)
    assert 1 <= len(runs) <= 2
    assert runs[-1] == win.panel.control.path  # the newest sketch was the last one made
    qtbot.waitUntil(lambda: not win.busy, timeout=WAIT_MS)
    win.panel.control.pad.close()
