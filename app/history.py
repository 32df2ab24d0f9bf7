"""Every image made, with its settings, kept across restarts.

history.json is rewritten atomically after each change. If it is ever unreadable it is kept aside
and the history is rebuilt from the PNGs in the output folder, which carry their own settings.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from app.storage import read_json, write_json_atomic
from runtime import GenerationRequest
from runtime.output import LINEA_KEY
from runtime.paths import user_data_dir

log = logging.getLogger(__name__)
THUMB_SIDE = 160


@dataclass(frozen=True)
class HistoryEntry:
    id: str
    path: str
    thumb: str
    record: dict[str, Any]
    created: float
    seconds: float

    @property
    def request(self) -> GenerationRequest:
        return GenerationRequest.from_dict(self.record["request"])

    @property
    def title(self) -> str:
        prompt = self.record.get("prompt", "")
        return prompt if len(prompt) <= 60 else prompt[:57] + "..."

    @property
    def summary(self) -> str:
        r = self.record
        return (f"{r.get('width')}x{r.get('height')}, {r.get('steps')} steps, "
                f"{r.get('sampler_label', '')}, CFG {r.get('guidance_scale')}, "
                f"seed {r.get('seed')}, {r.get('model', '')}, {self.seconds:.2f} s")


def _make_thumbnail(image: Image.Image, target: Path) -> None:
    thumb = image.copy()
    thumb.thumbnail((THUMB_SIDE, THUMB_SIDE))
    temp = target.with_name(f".{target.name}.tmp")
    thumb.save(temp, format="PNG")
    os.replace(temp, target)


class History:
    def __init__(self, folder: Path | None = None) -> None:
        self.folder = folder or user_data_dir()
        self.file = self.folder / "history.json"
        self.thumbs = self.folder / "thumbs"
        self.entries: list[HistoryEntry] = []

    def load(self, output_dir: Path | None = None) -> list[HistoryEntry]:
        damaged = self.file.is_file() and not self._readable()
        data = read_json(self.file, [])
        self.entries = []
        for item in data if isinstance(data, list) else []:
            with contextlib.suppress(TypeError, KeyError):
                self.entries.append(HistoryEntry(**item))
        self.entries = [e for e in self.entries if Path(e.path).is_file()]
        if damaged and output_dir is not None:
            self.rebuild_from(output_dir)
        return self.entries

    def _readable(self) -> bool:
        try:
            json.loads(self.file.read_text(encoding="utf-8"))
            return True
        except (OSError, ValueError):
            return False

    def rebuild_from(self, output_dir: Path) -> None:
        """Recover entries from the PNGs Linea wrote into `output_dir`."""
        known = {e.path for e in self.entries}
        for png in sorted(output_dir.glob("*.png")) if output_dir.is_dir() else []:
            if str(png) in known:
                continue
            try:
                with Image.open(png) as image:
                    record = json.loads(image.text[LINEA_KEY])
                    entry = self._entry(image, png, record, png.stat().st_mtime)
            except (OSError, KeyError, ValueError, AttributeError):
                continue
            self.entries.append(entry)
        self.entries.sort(key=lambda e: e.created)
        self._save()

    def _entry(self, image: Image.Image, path: Path, record: dict, created: float) -> HistoryEntry:
        entry_id = uuid.uuid4().hex
        self.thumbs.mkdir(parents=True, exist_ok=True)
        thumb = self.thumbs / f"{entry_id}.png"
        _make_thumbnail(image, thumb)
        return HistoryEntry(entry_id, str(path), str(thumb), record, created,
                            float(record.get("seconds", 0.0)))

    def add(self, image: Image.Image, path: Path, record: dict[str, Any]) -> HistoryEntry:
        entry = self._entry(image, path, record, time.time())
        self.entries.append(entry)
        self._save()
        return entry

    def remove(self, entry: HistoryEntry, delete_file: bool = True) -> None:
        self.entries = [e for e in self.entries if e.id != entry.id]
        self._save()
        for path in (entry.thumb, entry.path if delete_file else None):
            if path:
                with contextlib.suppress(FileNotFoundError):
                    Path(path).unlink()

    def _save(self) -> None:
        write_json_atomic(self.file, [asdict(e) for e in self.entries])
