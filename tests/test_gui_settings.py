"""Settings: the dialog round trip, what each choice changes, the About box and the log."""

import logging

from app.about import about_text
from app.viewmodels.settings import Settings
from app.widgets.settings_dialog import SettingsDialog
from tests.gui_fixtures import (  # noqa: F401  (fixtures)
    control_window_fixture,
    generate,
    models_dir_fixture,
    screenshot,
    window_fixture,
)


def test_settings_dialog_round_trip_and_a_damaged_file(qtbot, window, data_dir):
    dialog = SettingsDialog(window.settings, window)
    qtbot.addWidget(dialog)
    dialog.theme.setCurrentIndex(dialog.theme.findData("dark"))
    dialog.performance.setCurrentIndex(dialog.performance.findData("low"))
    dialog.show()
    screenshot(dialog, "settings")
    settings = dialog.result_settings()
    settings.save()
    again = Settings.load()
    assert (again.theme, again.performance) == ("dark", "low")
    (data_dir / "settings.json").write_text("{broken")
    assert Settings.load().theme == "system"


def test_accepted_settings_apply_to_the_next_job(qtbot, window, data_dir, tmp_path):
    jobs = []
    window.session.worker_thread.submit.connect(jobs.append)
    dialog = window.open_settings()
    output = tmp_path / "my pictures"
    dialog.output.setText(str(output))
    dialog.performance.setCurrentIndex(dialog.performance.findData("medium"))
    dialog.precision.setCurrentIndex(dialog.precision.findData("fp32"))
    dialog.theme.setCurrentIndex(dialog.theme.findData("dark"))
    dialog.accept()
    assert "release the text encoder" in window.status_plan.text().lower()
    assert window.palette().window().color().lightness() < 100
    qtbot.waitUntil(lambda: window.panel.current_model() is not None, timeout=10_000)
    generate(qtbot, window, prompt="a dark room")
    assert window.progress.format() == "Done", window.banner.text()
    job = jobs[-1]
    assert (job.plan, job.precision, job.output_dir) == ("release-encoder", "fp32", output)
    assert window.selected_entry().path.startswith(str(output))
    assert Settings.load().output_dir == str(output)
    screenshot(window, "result-dark")


def test_about_lists_the_versions_and_the_log_file_is_written(window, data_dir):
    text = about_text()
    assert "Linea 0.1.0" in text and "diffusers 0." in text and "torch 2." in text
    from app.main import setup_logging

    handler = setup_logging()
    try:
        logging.getLogger("linea.test").warning("a line for the log")
        handler.flush()
        assert "a line for the log" in (data_dir / "logs" / "linea.log").read_text()
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()


def test_window_carries_the_shipped_icon(window):
    from PIL import Image

    from runtime.paths import assets_dir

    assert not window.windowIcon().isNull()
    assert window.windowIcon().availableSizes()  # the PNG was read, not an empty icon
    with Image.open(assets_dir() / "icons" / "linea.ico") as ico:
        assert {(16, 16), (32, 32), (48, 48), (256, 256)} <= set(ico.info["sizes"])
