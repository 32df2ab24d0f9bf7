"""Killing the app at any moment loses at most the image in flight: a child process records
images into the history and rewrites the settings as fast as it can, and is killed with SIGKILL
at several moments; the history and the settings must then load whole, with every entry the
child had finished, and the app's files must be usable."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from app.viewmodels.history import History
from app.viewmodels.settings import Settings
from app.viewmodels.storage import remove_stale_temporaries

CHILD = textwrap.dedent("""
    import sys
    from pathlib import Path

    from app.viewmodels.history import History, record_from_request
    from app.viewmodels.settings import Settings
    from runtime import GenerationRequest

    folder, out = Path(sys.argv[1]), Path(sys.argv[2])
    history = History(folder)
    start = len(history.load())
    settings = Settings.load()
    for i in range(start, start + 100000):
        image = out / f"linea-{i:05d}.png"
        image.write_bytes(b"png " * 200)  # stands in for the image; the history needs a file
        thumb = folder / "thumbs" / f"{i}.png"
        thumb.parent.mkdir(parents=True, exist_ok=True)
        thumb.write_bytes(b"thumb")
        history.add(f"id{i}", image, thumb,
                    record_from_request(GenerationRequest(f"prompt {i}", seed=i)))
        settings.output_dir = str(out) + "/" * (i % 2)
        settings.save()
        print(i + 1, flush=True)  # entries that are on disk now
""")


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
def test_a_kill_at_any_moment_keeps_every_finished_entry(data_dir, tmp_path):
    folder, out = data_dir, tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    finished = 0
    for more in (1, 3, 5, 8, 13, 21):
        target = finished + more
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(folder), str(out)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 env=env)
        while True:
            line = child.stdout.readline()
            assert line, child.stderr.read()
            finished = int(line)
            if finished >= target:
                break
        time.sleep(0.001 * more)  # somewhere inside the next image's writes
        child.send_signal(signal.SIGKILL)
        child.wait()
        # Lines the child printed before it died and that were not read yet: entries it had
        # also finished (on a busy machine it runs ahead of this loop).
        printed = child.stdout.read().split()
        finished = int(printed[-1]) if printed else finished
        child.stdout.close()
        child.stderr.close()

        entries = History(folder).load()
        assert finished <= len(entries) <= finished + 1  # nothing earlier lost
        assert [e.record["prompt"] for e in entries] == [f"prompt {i}"
                                                         for i in range(len(entries))]
        assert [e.request.seed for e in entries] == list(range(len(entries)))
        settings = Settings.load()
        assert settings.output_dir.rstrip("/") == str(out)
        assert not list(folder.glob("*.damaged-*"))  # no file was ever half-written
        finished = len(entries)


def test_stale_temporaries_are_removed_and_live_ones_kept(tmp_path):
    target = tmp_path / "history.json"
    stale, live = tmp_path / ".history.json.a1.tmp", tmp_path / ".history.json.b2.tmp"
    stale.write_text("[")
    live.write_text("[")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    assert remove_stale_temporaries(target) == 1
    assert not stale.exists() and live.exists()
