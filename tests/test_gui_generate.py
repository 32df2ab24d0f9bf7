"""The window makes images: type a prompt, generate, see it in the history and on disk; cancel;
the controls follow the model; seeds lock and come back."""

from pathlib import Path

from PIL import Image
from PySide6.QtCore import Qt

from runtime import read_request
from tests.gui_fixtures import (  # noqa: F401  (fixtures)
    WAIT_MS,
    control_window_fixture,
    generate,
    models_dir_fixture,
    screenshot,
    select_model,
    set_small,
    window_fixture,
)


def test_typed_prompt_makes_an_image_in_the_history_and_on_disk(qtbot, window, data_dir):
    qtbot.waitUntil(lambda: bool(window.panel.fits), timeout=WAIT_MS)
    screenshot(window, "empty")
    assert window.stack.currentWidget() is window.placeholder
    window.panel.prompt.setFocus()
    select_model(window, "tiny-sana")
    set_small(window, size=128, steps=3)
    qtbot.keyClicks(window.panel.prompt, "a red circle")
    window.panel.generate_button.click()
    assert window.busy and not window.panel.generate_button.isEnabled()
    qtbot.waitUntil(lambda: not window.busy, timeout=WAIT_MS)

    assert window.progress.format() == "Done", window.banner.text()
    assert window.history.count() == 1
    entry = window.selected_entry()
    png = Path(entry.path)
    assert png.parent == data_dir / "images" and png.name == "linea-00001.png"
    with Image.open(png) as image:
        assert image.size == (128, 128)
        assert "a red circle" in image.text["parameters"]
    request = read_request(png)
    assert (request.prompt, request.steps, request.model) == ("a red circle", 3, "tiny-sana")
    assert Path(entry.thumb).is_file()
    assert window.stack.currentWidget() is window.view and window.view.has_image()
    assert "1 image in" in window.timing.text() and png.name in window.timing.text()
    assert window.timing.toolTip() == str(png)
    assert window.status_timing.text().startswith("Last: ")
    assert window.panel.generate_button.isEnabled()
    screenshot(window, "result")


def test_first_run_opens_ready_to_generate_with_the_bundled_model(qtbot, data_dir, tmp_path,
                                                                 monkeypatch):
    """Fresh settings, no models of the user's: the bundled model is picked, the window says
    what it knows, nothing modal is in the way, and the defaults make an image at its native
    size."""
    from PySide6.QtWidgets import QApplication

    from app.viewmodels.settings import Settings
    from app.widgets.window import MainWindow

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    win = MainWindow(Settings())
    qtbot.addWidget(win)
    win.show()
    qtbot.waitUntil(lambda: win.panel.current_model() is not None, timeout=10_000)
    model = win.panel.current_model()
    assert (model.source, model.family.key) == ("bundled", "linea-tiny")
    assert QApplication.activeModalWidget() is None
    assert model.family.knows in win.panel.model_note.text()
    assert (win.panel.width_box.value(), win.panel.height_box.value()) == (256, 256)
    from app.widgets.controls import guidance_tip

    assert win.panel.guidance.toolTip() == guidance_tip(model.family)
    # The bundled model picks among candidates with its prompt judge; the box says so.
    assert model.judge and win.panel.candidates.isEnabled()
    assert win.panel.candidates.value() == model.family.candidates > 1
    assert "prompt judge" in win.panel.candidates.toolTip()
    win.panel.prompt.setPlainText("a red circle to the left of a blue square")
    win.panel.seed.setText("7")
    win.panel.lock_seed.setChecked(True)
    win.generate()
    qtbot.waitUntil(lambda: not win.busy, timeout=WAIT_MS)
    assert win.progress.format() == "Done", win.banner.text()
    with Image.open(win.selected_entry().path) as image:
        assert image.size == (256, 256)
        assert "Model: linea-tiny" in image.text["parameters"]
        assert f"Best of: {model.family.candidates}" in image.text["parameters"]
    # The selected thumbnail shows the image's own colours, not tinted by the selection.
    from PySide6.QtCore import QSize
    from PySide6.QtGui import QIcon

    icon = win.history.list.currentItem().icon()
    side = QSize(64, 64)
    assert (icon.pixmap(side, QIcon.Mode.Selected).toImage()
            == icon.pixmap(side, QIcon.Mode.Normal).toImage())
    screenshot(win, "first_run")
    win.close()


def test_the_guidance_tooltip_says_when_a_model_limits_guidance_to_an_interval(
        sana_tiny, with_interval):
    from app.widgets.controls import guidance_tip
    from runtime import identify

    limited = guidance_tip(identify(with_interval(sana_tiny, [0.2, 0.8])).family)
    assert "only at noise levels 0.2-0.8" in limited
    assert "noise levels" not in guidance_tip(identify(sana_tiny).family)


def test_the_guidance_tooltip_says_what_a_models_contrast_guidance_steers_away_from():
    from app.widgets.controls import guidance_tip
    from runtime import identify
    from tests.test_tiny_model import SHIPPED

    tip = guidance_tip(identify(SHIPPED).family)
    assert "only at noise levels 0.2-0.8" in tip
    assert ("At noise levels 0.8-1 it also steers away from one object more than a count of "
            "two or three asks for; or a second copy of an object the prompt names once") in tip
    # a folder's rule without "about" is described by what it does
    import dataclasses

    from models.families import ContrastGuidance, ContrastRule

    bare = dataclasses.replace(identify(SHIPPED).family, contrast=ContrastGuidance(
        (0.9, 1.0), (ContrastRule(2.0, (("two", "three"), ("pair", "three"))),)))
    assert ("At noise levels 0.9-1 it also steers away from the prompt rewritten ('two' as "
            "'three'; 'pair' as 'three')") in guidance_tip(bare)


def test_ctrl_enter_generates_with_live_previews_and_escape_cancels(qtbot, window):
    select_model(window, "tiny-sana")
    window.panel.prompt.setPlainText("a blue star")
    set_small(window, size=128, steps=100)
    previews = []
    window.session.preview.connect(previews.append)
    window.panel.prompt.setFocus()
    qtbot.keyClick(window.panel.prompt, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    assert window.busy
    qtbot.waitUntil(lambda: len(previews) >= 2, timeout=WAIT_MS)
    assert window.progress.format().startswith("Step ")
    assert window.progress.maximum() == 100
    assert not previews[-1].isNull()
    screenshot(window, "generating")
    qtbot.keyClick(window.panel.prompt, Qt.Key.Key_Escape)
    qtbot.waitUntil(lambda: not window.busy, timeout=WAIT_MS)
    assert window.progress.format() == "Cancelled"
    assert len(previews) < 100
    assert window.history.count() == 0
    assert window.panel.prompt.toPlainText() == "a blue star"


def test_steps_follow_the_model_family_and_the_fast_mode_picks_sprint(qtbot, window):
    panel = window.panel
    select_model(window, "tiny-sana")
    assert panel.steps.value() == 20 and panel.mode.currentText() == "Quality"
    assert panel.mode.isEnabled()
    panel.mode.setCurrentIndex(1)
    model = panel.current_model()
    assert model.name == "tiny-sprint"
    low, high = model.family.step_range
    assert (panel.steps.minimum(), panel.steps.maximum()) == (low, high)
    assert panel.steps.value() == model.family.default_steps <= 4
    assert "at no extra cost" in panel.guidance.toolTip()
    panel.mode.setCurrentIndex(0)
    assert panel.current_model().name == "tiny-sana" and panel.steps.maximum() >= 20
    assert "1 turns it off." in panel.guidance.toolTip()
    assert "noise levels" not in panel.guidance.toolTip()  # this model guides every step


def test_best_of_is_offered_only_for_a_model_with_a_prompt_judge(qtbot, window):
    panel = window.panel
    select_model(window, "tiny-sana")
    assert not panel.current_model().judge
    assert not panel.candidates.isEnabled() and panel.candidates.value() == 1
    assert "no prompt judge" in panel.candidates.toolTip()
    assert panel.request().candidates is None


def test_model_list_says_whether_each_model_fits_the_device(qtbot, window):
    qtbot.waitUntil(lambda: bool(window.panel.fits), timeout=WAIT_MS)
    assert set(window.panel.fits) == {str(m.path) for m in window.panel.models}
    assert "Fits this device" in window.panel.model_note.text()
    assert window.status_device.text().startswith("Device: ")
    assert "GiB free" in window.status_memory.text()
    assert window.status_plan.text().startswith("Plan: ")


def test_unlocked_seeds_change_and_the_last_seed_can_be_reused(qtbot, window):
    window.panel.count.setValue(2)
    generate(qtbot, window, prompt="a small house", steps=2, size=64)
    assert window.history.count() == 2
    seeds = [e.record["seed"] for e in window.history.entries()]
    assert len(set(seeds)) == 2
    window.panel.lock_seed.setChecked(False)
    window.panel.count.setValue(1)
    generate(qtbot, window, prompt="a small house", steps=2, size=64)
    newest = window.selected_entry().record["seed"]
    assert newest not in seeds
    window.panel.seed.setText("1")
    window.panel.reuse_seed.click()
    assert int(window.panel.seed.text()) == newest and window.panel.lock_seed.isChecked()
    generate(qtbot, window, prompt="a small house", steps=2, size=64)
    assert window.selected_entry().record["seed"] == newest
