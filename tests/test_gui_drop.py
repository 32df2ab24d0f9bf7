"""Dropping a PNG on the window restores the prompt and settings it carries."""

from pathlib import Path

from PIL import Image, PngImagePlugin
from PySide6.QtCore import QMimeData, QPoint, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent

from runtime import read_request
from tests.gui_fixtures import (  # noqa: F401  (fixtures)
    control_window_fixture,
    drop_file,
    generate,
    models_dir_fixture,
    window_fixture,
)


def test_dropping_a_linea_png_restores_its_settings(qtbot, window):
    generate(qtbot, window, prompt="two small yellow stars", steps=4)
    made = Path(window.selected_entry().path)
    window.panel.prompt.setPlainText("something else")
    window.panel.steps.setValue(9)
    window.panel.lock_seed.setChecked(False)
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(made))])
    enter = QDragEnterEvent(QPoint(10, 10), Qt.DropAction.CopyAction, mime,
                            Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    window.dragEnterEvent(enter)
    assert enter.isAccepted()
    drop_file(window, made)
    assert window.panel.prompt.toPlainText() == "two small yellow stars"
    assert window.panel.steps.value() == 4
    assert window.panel.lock_seed.isChecked()
    assert int(window.panel.seed.text()) == read_request(made).seed
    assert window.panel.current_model().name == "tiny-sana"


def test_dropping_a_png_with_a1111_parameters_restores_them(qtbot, window, tmp_path):
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a castle on a hill\nNegative prompt: fog\n"
                                "Steps: 7, Sampler: Euler a, CFG scale: 5.5, Seed: 1234, "
                                "Size: 256x192")
    path = tmp_path / "other-tool.png"
    Image.new("RGB", (256, 192), "grey").save(path, pnginfo=info)
    drop_file(window, path)
    panel = window.panel
    assert panel.prompt.toPlainText() == "a castle on a hill"
    assert panel.negative_box.isChecked() and panel.negative.toPlainText() == "fog"
    assert (panel.steps.value(), panel.guidance.value(), panel.seed.text()) == (7, 5.5, "1234")
    assert (panel.width_box.value(), panel.height_box.value()) == (256, 192)
    assert not window.banner.isVisible()


def test_dropping_something_else_says_why_and_changes_nothing(qtbot, window, tmp_path):
    window.panel.prompt.setPlainText("keep me")
    not_png = tmp_path / "notes.png"
    not_png.write_text("hello")
    drop_file(window, not_png)
    assert window.banner.isVisible() and "not a readable PNG" in window.banner.text()
    assert window.panel.prompt.toPlainText() == "keep me"
    plain = tmp_path / "plain.png"
    Image.new("RGB", (32, 32), "white").save(plain)
    drop_file(window, plain)
    assert "carries no generation settings" in window.banner.text()
    assert "pick a model with a ControlNet" in window.banner.text()
    assert window.panel.prompt.toPlainText() == "keep me"
