"""Sketch to image in the window, for models with a ControlNet: dropped files and image data,
the sketch pad, and live mode."""

import shutil
from pathlib import Path

from PIL import Image, ImageDraw
from PySide6.QtCore import QMimeData, QPoint
from PySide6.QtGui import QImage

from runtime import read_request
from tests.gui_fixtures import (  # noqa: F401  (fixtures)
    WAIT_MS,
    control_window_fixture,
    drop_file,
    drop_mime,
    models_dir_fixture,
    open_window,
    screenshot,
    select_model,
    set_small,
    window_fixture,
)


def _sketch_file(path: Path) -> Path:
    sketch = Image.new("RGB", (300, 200), "white")
    ImageDraw.Draw(sketch).ellipse((60, 30, 240, 170), outline="black", width=5)
    sketch.save(path)
    return path


def test_dropped_sketch_file_and_image_data_steer_a_controlnet_model(qtbot, control_window,
                                                                     tmp_path):
    win = control_window
    assert win.panel.control.isVisibleTo(win.panel)
    drop_file(win, _sketch_file(tmp_path / "sketch.jpg"))
    assert win.panel.control.path.endswith("sketch.jpg")
    # the line map preview is drawn off the UI thread and follows
    qtbot.waitUntil(lambda: "sketch" in win.panel.control.note.text(), timeout=WAIT_MS)
    assert not win.panel.control.preview.pixmap().isNull()
    mime = QMimeData()
    mime.setImageData(QImage(str(tmp_path / "sketch.jpg")))
    drop_mime(win, mime)
    assert Path(win.panel.control.path).parent.name == "controls"
    win.panel.control.scale.setValue(0.6)
    win.panel.prompt.setPlainText("a round window")
    set_small(win, size=128, steps=2)
    win.generate()
    qtbot.waitUntil(lambda: not win.busy, timeout=WAIT_MS)
    assert win.progress.format() == "Done", win.banner.text()
    request = read_request(Path(win.selected_entry().path))
    assert request.control_scale == 0.6 and request.control_image == win.panel.control.path
    screenshot(win, "sketch")
    win.panel.control.clear()
    win.use_settings()
    assert win.panel.control.path == request.control_image


def test_a_model_without_controlnet_refuses_a_dropped_photo(qtbot, window, tmp_path):
    drop_file(window, _sketch_file(tmp_path / "photo.jpg"))
    assert "carries no generation settings" in window.banner.text()
    assert "pick a model with a ControlNet" in window.banner.text()


def test_sketch_pad_undo_redo_and_line_map(qtbot, control_window):
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
    qtbot.waitUntil(lambda: "sketch" in control_window.panel.control.note.text(),
                    timeout=WAIT_MS)
    screenshot(pad, "sketch-pad")
    pad.close()


def test_live_mode_coalesces_quick_strokes(qtbot, control_window):
    win = control_window
    win.panel.prompt.setPlainText("a round window")
    set_small(win, size=64, steps=2)
    win.panel.control.live.setChecked(True)
    runs = []
    win.session.worker_thread.submit.connect(lambda job: runs.append(job.request.control_image))
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


def test_live_mode_on_sprint_with_a_controlnet_is_fast_and_keeps_the_seed(qtbot, data_dir,
                                                                        replica_dir, tmp_path):
    folder = tmp_path / "sprint-models"
    shutil.copytree(replica_dir("sprint-controlnet-600m"), folder / "tiny-sprint-cn")
    win = open_window(qtbot, folder)
    try:
        select_model(win, "tiny-sprint-cn")
        model = win.panel.current_model()
        assert model.controlnet
        assert win.panel.control.isVisibleTo(win)  # a Sprint model with a ControlNet takes sketches
        win.panel.prompt.setPlainText("a round window")
        set_small(win, size=64, steps=4)
        win.panel.count.setValue(3)
        win.panel.lock_seed.setChecked(False)
        win.panel.control.live.setChecked(True)
        jobs = []
        win.session.worker_thread.submit.connect(lambda job: jobs.append(job.request))
        canvas = win.panel.control.open_pad().canvas
        for k in range(2):
            canvas.draw_stroke([QPoint(30 + 200 * k, 60), QPoint(60 + 200 * k, 400)])
            qtbot.waitUntil(lambda n=k: len(jobs) > n and not win.busy, timeout=WAIT_MS)
        assert [(r.steps, r.count) for r in jobs] == [(2, 1), (2, 1)]
        assert jobs[0].seed == jobs[1].seed  # only the sketch changed the image
        assert jobs[0].control_image and jobs[1].control_image
        win.panel.control.pad.close()
        # A plain Generate keeps the panel's own steps and count.
        win.panel.control.live.setChecked(False)
        request = win.panel.request()
        assert (request.steps, request.count) == (4, 3)
    finally:
        win.close()


def test_line_map_preview_is_drawn_off_the_ui_thread_and_the_newest_image_wins(
        qtbot, control_window, tmp_path):
    import numpy as np

    box = control_window.panel.control
    rng = np.random.default_rng(0)
    photo = tmp_path / "photo.png"
    pixels = rng.integers(0, 255, (240, 320, 3)).astype(np.uint8) // 4
    pixels += np.linspace(0, 180, 320).astype(np.uint8)[None, :, None]
    Image.fromarray(pixels).save(photo)
    shown = []
    box.preview_ready.connect(lambda: shown.append(box.kind))
    assert box.set_image(photo) and box.set_image(_sketch_file(tmp_path / "sketch.png"))
    assert box.path.endswith("sketch.png")  # taken at once; the preview follows
    assert box.wait_for_preview()
    qtbot.waitUntil(lambda: bool(shown), timeout=WAIT_MS)
    qtbot.wait(100)
    assert shown == ["sketch"]  # the photo's preview, now stale, was never shown
    box.clear()
    assert box.set_image(photo) and box.wait_for_preview()
    qtbot.waitUntil(lambda: len(shown) == 2, timeout=WAIT_MS)
    assert shown[-1] == "photo" and "edge" in box.note.text().lower()
