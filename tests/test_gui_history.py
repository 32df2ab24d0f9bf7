"""The history: kept across restarts, recovered from a damaged file, deleted only when confirmed,
and "use these settings" restores a past request."""

import json
from pathlib import Path

from PySide6.QtGui import QImage
from PySide6.QtWidgets import QApplication, QMessageBox

from tests.gui_fixtures import (  # noqa: F401  (fixtures)
    control_window_fixture,
    generate,
    models_dir_fixture,
    open_window,
    window_fixture,
)


def test_history_survives_a_restart(qtbot, window, data_dir, models_dir):
    generate(qtbot, window, prompt="a green triangle")
    generate(qtbot, window, prompt="a purple square")
    window.close()
    second = open_window(qtbot, models_dir)
    qtbot.waitUntil(lambda: second.history.count() == 2, timeout=10_000)
    newest_first = [e.record["prompt"] for e in second.history.entries()]
    assert newest_first == ["a purple square", "a green triangle"]
    assert all(Path(e.thumb).is_file() for e in second.history.entries())
    second.close()


def test_a_damaged_history_file_is_recovered_from_the_images(qtbot, window, data_dir,
                                                             models_dir):
    generate(qtbot, window, prompt="a green triangle", steps=2)
    generate(qtbot, window, prompt="a purple square", steps=3)
    window.close()
    (data_dir / "history.json").write_text('[{"id": "broken", "pa')  # killed mid-write
    again = open_window(qtbot, models_dir)
    qtbot.waitUntil(lambda: again.history.count() == 2, timeout=10_000)
    by_prompt = {e.record["prompt"]: e for e in again.history.entries()}
    assert set(by_prompt) == {"a green triangle", "a purple square"}
    assert by_prompt["a purple square"].request.steps == 3
    assert list(data_dir.glob("history.json.damaged-*"))
    assert len(json.loads((data_dir / "history.json").read_text())) == 2
    again.close()


def test_entries_whose_image_is_gone_or_whose_record_is_bad_are_dropped(qtbot, window,
                                                                       data_dir, models_dir):
    generate(qtbot, window, prompt="kept")
    generate(qtbot, window, prompt="moved away")
    window.close()
    entries = json.loads((data_dir / "history.json").read_text())
    Path(entries[1]["path"]).unlink()
    entries.append({"id": "x", "path": entries[0]["path"], "thumb": "", "record": {},
                    "created": 0.0, "seconds": 0.0})
    (data_dir / "history.json").write_text(json.dumps(entries))
    again = open_window(qtbot, models_dir)
    qtbot.waitUntil(lambda: again.history.count() >= 1, timeout=10_000)
    assert [e.record["prompt"] for e in again.history.entries()] == ["kept"]
    again.close()


def test_use_these_settings_restores_the_request(qtbot, window):
    window.panel.negative_box.setChecked(True)
    window.panel.negative.setPlainText("blurry")
    generate(qtbot, window, prompt="a lighthouse at dusk", steps=4, size=96)
    made = window.selected_entry()
    window.panel.prompt.setPlainText("something else")
    window.panel.negative_box.setChecked(False)
    window.panel.steps.setValue(9)
    window.panel.lock_seed.setChecked(False)
    window.use_settings()
    panel = window.panel
    assert panel.prompt.toPlainText() == "a lighthouse at dusk"
    assert panel.negative_box.isChecked() and panel.negative.toPlainText() == "blurry"
    assert (panel.steps.value(), panel.width_box.value(), panel.height_box.value()) == (4, 96, 96)
    assert int(panel.seed.text()) == made.record["seed"] and panel.lock_seed.isChecked()


def test_delete_asks_first_and_removes_the_file_and_the_entry(qtbot, window, monkeypatch):
    generate(qtbot, window)
    entry = window.selected_entry()
    monkeypatch.setattr(QMessageBox, "question",
                        lambda *a, **k: QMessageBox.StandardButton.No)
    window.delete_selected()
    assert Path(entry.path).is_file() and window.history.count() == 1
    monkeypatch.setattr(QMessageBox, "question",
                        lambda *a, **k: QMessageBox.StandardButton.Yes)
    window.delete_selected()
    assert not Path(entry.path).exists() and not Path(entry.thumb).exists()
    assert window.history.count() == 0 and window.history.empty.isVisibleTo(window.history)
    assert json.loads((Path(entry.thumb).parent.parent / "history.json").read_text()) == []
    assert window.stack.currentWidget() is window.placeholder


def test_copy_and_save_as_keep_the_pixels_and_the_settings(qtbot, window, tmp_path,
                                                           monkeypatch):
    from PySide6.QtWidgets import QFileDialog

    generate(qtbot, window, prompt="a copied cat")
    entry = window.selected_entry()
    window.copy_image()
    copied = QApplication.clipboard().image()
    assert copied.size() == QImage(entry.path).size()
    target = tmp_path / "mine.png"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(target), ""))
    window.save_as()
    assert target.read_bytes() == Path(entry.path).read_bytes()
    monkeypatch.setattr(QFileDialog, "getSaveFileName",
                        lambda *a, **k: (str(tmp_path / "missing" / "x.png"), ""))
    window.save_as()
    assert window.banner.isVisible() and "could not be saved" in window.banner.text()
