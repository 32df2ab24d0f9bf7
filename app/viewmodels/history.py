"""Every image made, with its settings, kept across restarts.

history.json is rewritten atomically after each change, so killing the app at any moment leaves
the previous complete list. If the file is ever unreadable it is kept aside and the history is
rebuilt from the PNGs in the output folder, which carry their own settings.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from app.viewmodels.storage import read_json, remove_stale_temporaries, write_json_atomic
from runtime import GenerationRequest, LineaError, read_request
from runtime.paths import user_data_dir

log = logging.getLogger(__name__)
THUMB_SIDE = 160
IMAGE_STEM = "linea"  # output files are linea-00001.png, ...


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
        prompt = " ".join(str(self.record.get("prompt", "")).split())
        return prompt if len(prompt) <= 60 else prompt[:57] + "..."

    @property
    def summary(self) -> str:
        r = self.record
        parts = [f"{r.get('width')}x{r.get('height')}", f"{r.get('steps')} steps",
                 r.get("sampler_label") or "", f"CFG {r.get('guidance_scale')}",
                 f"seed {r.get('seed')}", r.get("model") or ""]
        if self.seconds:
            parts.append(f"{self.seconds:.2f} s")
        return ", ".join(p for p in parts if p)


def thumbs_dir() -> Path:
    return user_data_dir() / "thumbs"


def make_thumbnail(image: Image.Image, folder: Path | None = None) -> tuple[str, Path]:
    """A new entry id and its thumbnail file. Safe on any thread: the worker calls it so that
    resizing never runs on the UI thread."""
    entry_id = uuid.uuid4().hex
    folder = folder or thumbs_dir()
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{entry_id}.png"
    thumb = image.convert("RGB")
    thumb.thumbnail((THUMB_SIDE, THUMB_SIDE))
    temp = target.with_name(f".{target.name}.tmp")
    thumb.save(temp, format="PNG")
    os.replace(temp, target)
    return entry_id, target


def record_from_request(request: GenerationRequest) -> dict[str, Any]:
    """The history record of an image whose full record is lost: what its PNG's settings say."""
    return {"request": request.to_dict(), "prompt": request.prompt,
            "negative_prompt": request.negative_prompt, "width": request.width,
            "height": request.height, "steps": request.steps,
            "sampler_label": request.sampler.label if request.sampler else "",
            "guidance_scale": request.guidance_scale, "seed": request.seed,
            "model": request.model}


def _entry_from(entry_id: str, path: Path, thumb: Path, record: dict, created: float
                ) -> HistoryEntry:
    return HistoryEntry(entry_id, str(path), str(thumb), record, created,
                        float(record.get("seconds") or 0.0))


class History:
    def __init__(self, folder: Path | None = None) -> None:
        self.folder = folder or user_data_dir()
        self.file = self.folder / "history.json"
        self.thumbs = self.folder / "thumbs"
        self.entries: list[HistoryEntry] = []

    def load(self, output_dir: Path | None = None) -> list[HistoryEntry]:
        """The entries whose image still exists, oldest first. A damaged file is recovered from:
        every PNG Linea wrote in `output_dir` comes back with its settings."""
        remove_stale_temporaries(self.file)
        existed = self.file.is_file()
        data = read_json(self.file, None)
        damaged = existed and not isinstance(data, list)
        self.entries = []
        for item in data if isinstance(data, list) else []:
            with contextlib.suppress(TypeError, KeyError, ValueError):
                entry = HistoryEntry(**item)
                entry.request  # noqa: B018  (an entry must restore its settings to be kept)
                self.entries.append(entry)
        self.entries = [e for e in self.entries if Path(e.path).is_file()]
        if damaged and output_dir is not None:
            self.rebuild_from(output_dir)
        return self.entries

    def rebuild_from(self, output_dir: Path) -> int:
        """Recover entries from the PNGs Linea wrote into `output_dir`; how many came back."""
        known = {e.path for e in self.entries}
        found = 0
        pngs = sorted(output_dir.glob(f"{IMAGE_STEM}*.png")) if output_dir.is_dir() else []
        for png in pngs:
            if str(png) in known:
                continue
            try:
                request = read_request(png)
                with Image.open(png) as image:
                    entry_id, thumb = make_thumbnail(image, self.thumbs)
            except (LineaError, OSError, ValueError):
                continue
            self.entries.append(_entry_from(entry_id, png, thumb, record_from_request(request),
                                            png.stat().st_mtime))
            found += 1
        self.entries.sort(key=lambda e: e.created)
        self._save()
        log.info("history rebuilt from %s: %d image(s) recovered", output_dir, found)
        return found

    def add(self, entry_id: str, path: Path, thumb: Path, record: dict[str, Any]) -> HistoryEntry:
        entry = _entry_from(entry_id, path, thumb, record, time.time())
        self.entries.append(entry)
        self._save()
        return entry

    def remove(self, entry: HistoryEntry, delete_file: bool = True) -> None:
        """Forget the entry first, then delete its files: a crash between the two leaves a
        stray file, never an entry pointing at nothing."""
        self.entries = [e for e in self.entries if e.id != entry.id]
        self._save()
        for path in (entry.thumb, entry.path if delete_file else None):
            if path:
                with contextlib.suppress(FileNotFoundError):
                    Path(path).unlink()

    def _save(self) -> None:
        write_json_atomic(self.file, [asdict(e) for e in self.entries])
