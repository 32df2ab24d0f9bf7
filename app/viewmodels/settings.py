"""The user's settings: declared once with their defaults, persisted as JSON."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.viewmodels.storage import read_json, remove_stale_temporaries, write_json_atomic
from runtime.paths import default_output_dir, user_data_dir

PERFORMANCE_PRESETS = {
    "auto": "Automatic (by free GPU memory)",
    "high": "High: everything resident",
    "medium": "Medium: release the text encoder after encoding",
    "low": "Low: tiled decoding, models on the GPU only while used",
}
PRESET_PLANS = {"auto": None, "high": "resident", "medium": "release-encoder",
                "low": "cpu-offload"}
THEMES = {"system": "Follow the system", "light": "Light", "dark": "Dark"}


@dataclass
class Settings:
    output_dir: str = ""
    extra_model_dirs: list[str] = field(default_factory=list)
    device: str = "auto"
    precision: str = "auto"
    performance: str = "auto"
    theme: str = "system"
    last_model: str = ""

    @property
    def output_path(self) -> Path:
        return Path(self.output_dir) if self.output_dir else default_output_dir()

    @property
    def model_dirs(self) -> tuple[Path, ...]:
        return tuple(Path(p) for p in self.extra_model_dirs)

    @staticmethod
    def file() -> Path:
        return user_data_dir() / "settings.json"

    @classmethod
    def load(cls) -> Settings:
        remove_stale_temporaries(cls.file())
        data = read_json(cls.file(), {})
        known = {f.name: f for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        if isinstance(data, dict):
            for key, value in data.items():
                if key in known and isinstance(value, type(getattr(cls(), key))):
                    values[key] = value
        settings = cls(**values)
        if settings.performance not in PERFORMANCE_PRESETS:
            settings.performance = "auto"
        if settings.theme not in THEMES:
            settings.theme = "system"
        return settings

    def save(self) -> None:
        write_json_atomic(self.file(), dataclasses.asdict(self))
