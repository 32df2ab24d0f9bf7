"""What a person asks for: one immutable request describes a whole generation."""

from __future__ import annotations

import dataclasses
import json
import random
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from models.families import MAX_CANDIDATES, candidate_count
from runtime.errors import RequestError

MAX_SEED = 2**32 - 1
MAX_STEPS = 100
MAX_COUNT = 16
SIZE_MULTIPLE = 32


class Sampler(StrEnum):
    FLOW_DPM_SOLVER = "flow-dpm-solver"
    FLOW_EULER = "flow-euler"
    SCM = "scm"

    @property
    def label(self) -> str:
        return {
            Sampler.FLOW_DPM_SOLVER: "Flow-DPM-Solver",
            Sampler.FLOW_EULER: "Flow-Euler",
            Sampler.SCM: "SCM",
        }[self]


# SANA's aspect-ratio presets at 1024px (width, height): the buckets it was trained on, rounded
# to the multiples of 32 the model accepts.
ASPECT_PRESETS_1024: dict[str, tuple[int, int]] = {
    "1:1": (1024, 1024),
    "4:3": (1152, 896),
    "3:4": (896, 1152),
    "3:2": (1216, 832),
    "2:3": (832, 1216),
    "16:9": (1344, 768),
    "9:16": (768, 1344),
    "21:9": (1536, 640),
    "9:21": (640, 1536),
}


def aspect_presets(native_size: int) -> dict[str, tuple[int, int]]:
    """The presets scaled to a model's native resolution, kept on multiples of 32."""
    scale = native_size / 1024
    presets = {}
    for name, (w, h) in ASPECT_PRESETS_1024.items():
        presets[name] = (
            max(SIZE_MULTIPLE, round(w * scale / SIZE_MULTIPLE) * SIZE_MULTIPLE),
            max(SIZE_MULTIPLE, round(h * scale / SIZE_MULTIPLE) * SIZE_MULTIPLE),
        )
    return presets


def random_seed() -> int:
    return random.SystemRandom().randint(0, MAX_SEED)


@dataclass(frozen=True)
class GenerationRequest:
    """Everything needed to reproduce an image. Defaults of None mean "the model's default"."""

    prompt: str
    negative_prompt: str = ""
    width: int | None = None
    height: int | None = None
    steps: int | None = None
    guidance_scale: float | None = None
    seed: int = 0
    count: int = 1
    sampler: Sampler | None = None
    complex_human_instruction: bool | None = None
    model: str = ""
    control_image: str | None = None
    control_scale: float = 1.0
    # Images drawn per image asked for, the best kept by the model's prompt judge; None: the
    # model's own choice (linea.json), 1: no choosing.
    candidates: int | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    def with_changes(self, **changes: Any) -> GenerationRequest:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["sampler"] = self.sampler.value if self.sampler else None
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GenerationRequest:
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        if "prompt" not in values:
            raise RequestError("The saved settings have no prompt.", "Pick an image made by Linea.")
        if values.get("sampler"):
            try:
                values["sampler"] = Sampler(values["sampler"])
            except ValueError as exc:
                raise RequestError(
                    f"Unknown sampler {values['sampler']!r} in the saved settings.",
                    f"Use one of: {', '.join(s.value for s in Sampler)}.",
                ) from exc
        return cls(**values)


@dataclass(frozen=True)
class ResolvedRequest:
    """A request with every default filled in from the model and checked against its limits."""

    request: GenerationRequest
    prompt: str
    width: int
    height: int
    steps: int
    guidance_scale: float
    sampler: Sampler
    complex_human_instruction: bool
    seeds: tuple[int, ...]
    warnings: tuple[str, ...] = ()
    # The prompt the model's contrast guidance steers away from (models.families), if any, and
    # how hard (the scale of the rule that wrote it).
    contrast_prompt: str | None = None
    contrast_scale: float = 0.0
    candidates: int = 1


def check_size(width: int, height: int, max_side: int) -> None:
    for name, value in (("width", width), ("height", height)):
        if not isinstance(value, int) or value <= 0:
            raise RequestError(f"The {name} {value!r} is not a positive whole number.",
                               "Give a size in pixels, for example 1024.")
        if value % SIZE_MULTIPLE:
            lower = max(SIZE_MULTIPLE, value // SIZE_MULTIPLE * SIZE_MULTIPLE)
            raise RequestError(
                f"The {name} {value} is not a multiple of {SIZE_MULTIPLE}.",
                f"Use {lower} or {lower + SIZE_MULTIPLE}.",
            )
        if value > max_side:
            raise RequestError(
                f"The {name} {value} is larger than this model's limit of {max_side} pixels.",
                f"Use a {name} of at most {max_side}.",
            )


def check_steps(steps: int, low: int, high: int, sampler: Sampler) -> None:
    if not isinstance(steps, int) or not low <= steps <= high:
        raise RequestError(
            f"{steps!r} steps is out of range for the {sampler.label} sampler.",
            f"Use between {low} and {high} steps.",
        )


def check_common(request: GenerationRequest) -> str:
    """Checks that do not depend on the model. Returns the cleaned prompt."""
    prompt = (request.prompt or "").strip()
    if not prompt:
        raise RequestError("The prompt is empty.", "Describe the image you want.")
    if not isinstance(request.seed, int) or not 0 <= request.seed <= MAX_SEED:
        raise RequestError(f"The seed {request.seed!r} is out of range.",
                           f"Use a whole number from 0 to {MAX_SEED}.")
    if not isinstance(request.count, int) or not 1 <= request.count <= MAX_COUNT:
        raise RequestError(f"The image count {request.count!r} is out of range.",
                           f"Ask for 1 to {MAX_COUNT} images.")
    if not 0.0 <= request.control_scale <= 2.0:
        raise RequestError(f"The control scale {request.control_scale} is out of range.",
                           "Use a value between 0 and 2; 1.0 follows the sketch closely.")
    if request.guidance_scale is not None and not 0.0 <= request.guidance_scale <= 30.0:
        raise RequestError(f"The guidance scale {request.guidance_scale} is out of range.",
                           "Use a value between 0 and 30; 4.5 is typical.")
    if request.candidates is not None:
        try:
            candidate_count(request.candidates)
        except ValueError as exc:
            raise RequestError(f"The candidate count {request.candidates!r} is out of range.",
                               f"Ask for 1 to {MAX_CANDIDATES} candidates per image (1 draws "
                               f"one and keeps it).") from exc
    return prompt


def image_seeds(seed: int, count: int) -> tuple[int, ...]:
    """Image k of a batch uses seed + k, so any single image can be remade on its own."""
    return tuple((seed + k) % (MAX_SEED + 1) for k in range(count))


def candidate_seeds(seed: int, candidates: int) -> tuple[int, ...]:
    """The seeds drawn for one image when its model picks among `candidates`: the image's own
    seed first (one candidate is the image without choosing), then seeds far from any batch
    neighbour's (image k of a batch uses seed + k)."""
    return tuple((seed + k * 0x9E3779B1) % (MAX_SEED + 1) for k in range(candidates))
