"""The procedural world Linea's tiny model knows: shapes, colours, sizes, backgrounds and layouts.

A `Composition` is what a caption asks for (which objects, how many, in which colour, in which
relation); a `Scene` is one concrete picture of it (where each object sits, how big it is, which
background). Positions and sizes are fractions of the image side, so a scene renders at any
resolution (see render.py).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

SHAPES = ("circle", "square", "triangle", "star", "diamond", "hexagon", "cross", "heart")

# Saturated colours with well separated hues, so an image can be read back by hue alone; every
# background is kept far less saturated (see `BACKGROUND_MAX_SATURATION`).
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (225, 40, 40),
    "orange": (245, 135, 20),
    "yellow": (240, 215, 30),
    "green": (40, 175, 60),
    "cyan": (30, 200, 215),
    "blue": (40, 80, 225),
    "purple": (140, 60, 210),
    "pink": (240, 90, 180),
}

# Object radius (half its bounding box side) as a fraction of the image side.
SIZES: dict[str, tuple[float, float]] = {
    "small": (0.065, 0.08),
    "medium": (0.095, 0.115),
    "large": (0.135, 0.16),
}

RELATIONS = ("left of", "right of", "above", "below")
OPPOSITE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
BACKGROUNDS = ("dark", "light", "gradient")
CATEGORIES = ("single", "colour", "count", "two_objects", "position")
BACKGROUND_MAX_SATURATION = 0.2
MAX_COUNT = 4

RGB = tuple[float, float, float]


class SceneError(ValueError):
    """A composition or scene that the world cannot hold (unknown word, too many objects)."""


@dataclass(frozen=True)
class ObjectSpec:
    """One group of identical objects a caption asks for; None leaves the choice to the scene."""

    shape: str
    colour: str | None = None
    count: int = 1
    size: str | None = None


@dataclass(frozen=True)
class Composition:
    """What a caption says: one or two object groups, an optional relation and background.

    `relation` reads as "objects[0] <relation> objects[1]".
    """

    category: str
    objects: tuple[ObjectSpec, ...]
    relation: str | None = None
    background: str | None = None

    def __post_init__(self) -> None:
        if self.category not in CATEGORIES:
            raise SceneError(f"unknown category {self.category!r}; use one of {CATEGORIES}")
        for spec in self.objects:
            if spec.shape not in SHAPES:
                raise SceneError(f"unknown shape {spec.shape!r}; use one of {SHAPES}")
            if spec.colour is not None and spec.colour not in COLOURS:
                raise SceneError(f"unknown colour {spec.colour!r}; use one of {tuple(COLOURS)}")
            if not 1 <= spec.count <= MAX_COUNT:
                raise SceneError(f"count must be 1 to {MAX_COUNT}, got {spec.count}")
        if self.relation is not None and (
            self.relation not in RELATIONS or len(self.objects) != 2
        ):
            raise SceneError(f"a relation needs two objects and one of {RELATIONS}")


@dataclass(frozen=True)
class PlacedObject:
    shape: str
    colour: str
    x: float
    y: float
    radius: float


@dataclass(frozen=True)
class Background:
    """A plain colour (start == end) or a linear gradient along `direction` (dx, dy)."""

    start: RGB
    end: RGB
    direction: tuple[float, float] = (0.0, 1.0)


@dataclass(frozen=True)
class Scene:
    objects: tuple[PlacedObject, ...]
    background: Background


def _muted(rng: random.Random, low: float, high: float) -> RGB:
    """A low-saturation colour with value in [low, high]: grey with a faint tint."""
    value = rng.uniform(low, high)
    saturation = rng.uniform(0.0, BACKGROUND_MAX_SATURATION * 0.9)
    tint = [rng.random() for _ in range(3)]
    top = max(tint)
    # Scale the tint so the brightest channel is `value` and the dimmest is value*(1-saturation).
    span = top - min(tint) or 1.0
    return tuple(value * (1 - saturation * (top - t) / span) for t in tint)  # type: ignore[return-value]


def sample_background(kind: str | None, rng: random.Random) -> Background:
    kind = kind or rng.choice(BACKGROUNDS)
    if kind == "dark":
        colour = _muted(rng, 0.06, 0.22)
        return Background(colour, colour)
    if kind == "light":
        colour = _muted(rng, 0.78, 0.95)
        return Background(colour, colour)
    if kind != "gradient":
        raise SceneError(f"unknown background {kind!r}; use one of {BACKGROUNDS}")
    dark, light = _muted(rng, 0.08, 0.3), _muted(rng, 0.6, 0.92)
    start, end = (dark, light) if rng.random() < 0.5 else (light, dark)
    angle = rng.choice((0.0, 45.0, 90.0, 135.0))
    direction = (math.cos(math.radians(angle)), math.sin(math.radians(angle)))
    return Background(start, end, direction)


def _relation_holds(a: tuple[float, float], b: tuple[float, float], relation: str) -> bool:
    """The layout rule for a relation: clear separation on its axis, little drift across it."""
    dx, dy = b[0] - a[0], b[1] - a[1]
    main, across = {
        "left of": (dx, dy),
        "right of": (-dx, dy),
        "above": (dy, dx),
        "below": (-dy, dx),
    }[relation]
    return main >= 0.22 and abs(across) <= 0.5 * main


def layout(
    composition: Composition,
    rng: random.Random,
    colour_for: dict[str, tuple[str, ...]] | None = None,
) -> Scene:
    """A concrete scene for `composition`: sizes, colours and non-overlapping positions.

    `colour_for` maps a shape to the colours it may take when the caption leaves colour open
    (the training split passes one that leaves out the held-out colour-shape pairs).
    """
    groups: list[tuple[ObjectSpec, str, str]] = []
    for spec in composition.objects:
        allowed = (colour_for or {}).get(spec.shape, tuple(COLOURS))
        colour = spec.colour or rng.choice(allowed)
        size = spec.size or rng.choice(("small", "medium", "large") if spec.count < 3 else
                                       ("small", "medium"))
        groups.extend((spec, colour, size) for _ in range(spec.count))
    for attempt in range(200):
        # Shrink crowded scenes a little on repeated failures rather than giving up.
        shrink = 1.0 - 0.002 * attempt
        placed: list[PlacedObject] = []
        for spec, colour, size in groups:
            radius = rng.uniform(*SIZES[size]) * shrink
            margin = radius + 0.02
            x, y = rng.uniform(margin, 1 - margin), rng.uniform(margin, 1 - margin)
            placed.append(PlacedObject(spec.shape, colour, x, y, radius))
        if _fits(placed) and (
            composition.relation is None
            or _relation_holds(
                (placed[0].x, placed[0].y), (placed[-1].x, placed[-1].y), composition.relation
            )
        ):
            return Scene(tuple(placed), sample_background(composition.background, rng))
    raise SceneError(f"could not lay out {composition}; ask for fewer or smaller objects")


def _fits(placed: list[PlacedObject]) -> bool:
    for i, a in enumerate(placed):
        for b in placed[i + 1 :]:
            if math.hypot(a.x - b.x, a.y - b.y) < (a.radius + b.radius) * 1.15 + 0.03:
                return False
    return True
