"""Atomic JSON files: written to a temporary file beside the target, flushed, then renamed over
it, so a crash at any moment leaves either the old file or the new one, never half of each."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def write_json_atomic(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as fh:
            json.dump(data, fh, ensure_ascii=False, indent=1)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(temp_name, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp_name)


def remove_stale_temporaries(path: Path, older_than_s: float = 60.0) -> int:
    """Delete the temporary files a killed process left beside `path` (a live writer's is
    younger than `older_than_s`, and is left alone); how many were removed."""
    removed = 0
    now = time.time()
    for temp in path.parent.glob(f".{path.name}.*.tmp"):
        with contextlib.suppress(OSError):
            if now - temp.stat().st_mtime > older_than_s:
                temp.unlink()
                removed += 1
    return removed


def read_json(path: Path, default: Any) -> Any:
    """The file's content; `default` when it is missing. A damaged file is kept aside (never
    deleted) and `default` is returned, so the app always starts."""
    if not path.is_file():
        return default
    try:
        with path.open(encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError) as exc:
        aside = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
        with contextlib.suppress(OSError):
            path.replace(aside)
        log.warning("%s was unreadable (%s); kept as %s", path, exc, aside.name)
        return default
