"""Bad input through the window: a clear message, a usable window, an intact history."""

import runtime.engine
from tests.gui_fixtures import (  # noqa: F401  (fixtures)
    control_window_fixture,
    generate,
    models_dir_fixture,
    open_window,
    screenshot,
    window_fixture,
)


def _usable(window) -> bool:
    return not window.busy and window.panel.generate_button.isEnabled()


def test_an_empty_prompt_is_refused_with_a_message(qtbot, window):
    window.panel.prompt.setPlainText("   \n ")
    window.generate()
    assert _usable(window) and window.banner.isVisible()
    assert "prompt is empty" in window.banner.text()
    assert window.progress.format() == "Ready"
    assert window.panel.prompt.hasFocus()


def test_a_broken_model_folder_fails_clearly_and_keeps_the_history(qtbot, window, models_dir):
    generate(qtbot, window, prompt="made before the damage")
    weights = models_dir / "tiny-sana" / "transformer" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    window.settings.device = "cpu"  # a new engine key: the damaged folder is read again
    generate(qtbot, window, prompt="a cat")
    assert window.progress.format() == "Failed"
    text = window.banner.text()
    assert "truncated" in text or "damaged" in text, text
    assert window.history.count() == 1 and _usable(window)
    screenshot(window, "error")
    generate(qtbot, window, prompt="a working sprint", model="tiny-sprint", steps=2)
    assert window.progress.format() == "Done" and window.history.count() == 2
    assert not window.banner.isVisible()


def test_a_crash_in_the_worker_is_reported_and_the_next_run_works(qtbot, window,
                                                                 monkeypatch):
    real = runtime.engine.Engine.generate

    def crash(*args, **kwargs):
        raise ZeroDivisionError("simulated bug")

    monkeypatch.setattr(runtime.engine.Engine, "generate", crash)
    generate(qtbot, window, prompt="a crash")
    assert window.progress.format() == "Failed"
    assert "failed unexpectedly: simulated bug" in window.banner.text()
    assert "log" in window.banner.text() and _usable(window)
    monkeypatch.setattr(runtime.engine.Engine, "generate", real)
    generate(qtbot, window, prompt="after the crash")
    assert window.progress.format() == "Done" and window.history.count() == 1


def test_a_corrupt_history_and_settings_file_still_open_the_window(qtbot, data_dir, models_dir):
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "history.json").write_bytes(b"\x00\xff{not json")
    (data_dir / "settings.json").write_text('{"theme": 3, "performance": "turbo"')
    window = open_window(qtbot, models_dir, saved_settings=True)
    assert window.history.count() == 0 and window.history.empty.isVisibleTo(window.history)
    assert (window.settings.theme, window.settings.performance) == ("system", "auto")
    generate(qtbot, window, prompt="a fresh start")
    assert window.progress.format() == "Done" and window.history.count() == 1
    window.close()


def test_an_output_folder_that_cannot_be_written_is_named_before_any_work(qtbot, window,
                                                                           tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("in the way")
    window.settings.output_dir = str(blocker / "images")  # its parent is a file
    started = []
    window.session.progress.connect(lambda text, *_: started.append(text))
    generate(qtbot, window, prompt="nowhere to go")
    assert window.progress.format() == "Failed" and _usable(window)
    assert "cannot be created" in window.banner.text()
    assert "File > Settings" in window.banner.text()
    assert not any(text.startswith("Step") for text in started)  # refused before generating
    assert window.history.count() == 0


def test_a_save_failing_midway_keeps_the_images_already_written(qtbot, window, monkeypatch,
                                                                  data_dir):
    import app.viewmodels.worker as worker

    real, calls = worker.save_png, []

    def full_disk_on_the_second(image, path, record):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real(image, path, record)

    monkeypatch.setattr(worker, "save_png", full_disk_on_the_second)
    window.panel.count.setValue(3)
    generate(qtbot, window, prompt="three of them")
    assert window.progress.format() == "Failed"
    assert "No space left on device" in window.banner.text()
    assert window.history.count() == 1 and _usable(window)  # the first image kept its entry
    kept = window.session.history.entries[0]
    assert kept.path == str(calls[0]) and calls[0].is_file()
