"""The training and held-out splits of the tiny world.

Held out from training entirely (never in a training caption, never drawn in a training image):
eight colour-shape pairs, one per colour and one per shape. Held out from training captions: six
spatial relations between two shapes, in both phrasings ("A left of B" and "B right of A").
The held-out prompts are built from exactly these, so their score measures generalisation.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from models.tiny.captions import caption
from models.tiny.scenes import (
    BACKGROUNDS,
    CATEGORIES,
    COLOURS,
    OPPOSITE,
    RELATIONS,
    SHAPES,
    Composition,
    ObjectSpec,
    Scene,
    layout,
)

HELD_OUT_PAIRS: frozenset[tuple[str, str]] = frozenset({
    ("red", "star"), ("orange", "hexagon"), ("yellow", "square"), ("green", "heart"),
    ("cyan", "cross"), ("blue", "triangle"), ("purple", "circle"), ("pink", "diamond"),
})

_HELD_OUT_RELATION_LIST = (
    ("circle", "left of", "square"), ("triangle", "above", "star"),
    ("heart", "right of", "hexagon"), ("diamond", "below", "cross"),
    ("star", "left of", "heart"), ("square", "above", "triangle"),
)
# Both phrasings of each held-out relation: "A left of B" says the same as "B right of A".
HELD_OUT_RELATIONS: frozenset[tuple[str, str, str]] = frozenset(
    {r for a, rel, b in _HELD_OUT_RELATION_LIST for r in ((a, rel, b), (b, OPPOSITE[rel], a))}
)

# Category mix of training captions: relations and counts are the hard parts, so they get more.
TRAINING_MIX = {"single": 0.12, "colour": 0.2, "count": 0.2, "two_objects": 0.2, "position": 0.28}
HELD_OUT_PER_CATEGORY = 32


@dataclass(frozen=True)
class Example:
    """One captioned scene."""

    composition: Composition
    caption: str
    scene: Scene


def training_colours() -> dict[str, tuple[str, ...]]:
    """For each shape, the colours it may take in training."""
    return {s: tuple(c for c in COLOURS if (c, s) not in HELD_OUT_PAIRS) for s in SHAPES}


def _size(rng: random.Random) -> str | None:
    return rng.choice((None, None, "small", "large"))


def _background(rng: random.Random) -> str | None:
    return rng.choice((None, None, *BACKGROUNDS))


def training_composition(rng: random.Random) -> Composition:
    """A random composition from the training split."""
    category = rng.choices(list(TRAINING_MIX), weights=list(TRAINING_MIX.values()))[0]
    allowed = training_colours()

    def spec(shape: str, count: int = 1, colour_optional: bool = False) -> ObjectSpec:
        colour = None if colour_optional and rng.random() < 0.3 else rng.choice(allowed[shape])
        return ObjectSpec(shape, colour, count, _size(rng) if count < 3 else None)

    if category == "single":
        objects: tuple[ObjectSpec, ...] = (ObjectSpec(rng.choice(SHAPES), None, 1, _size(rng)),)
        return Composition(category, objects, None, _background(rng))
    if category == "colour":
        return Composition(category, (spec(rng.choice(SHAPES)),), None, _background(rng))
    if category == "count":
        objects = (spec(rng.choice(SHAPES), rng.randint(2, 4), colour_optional=True),)
        return Composition(category, objects, None, _background(rng))
    first, second = rng.sample(SHAPES, 2)
    objects = (spec(first, colour_optional=True), spec(second, colour_optional=True))
    if category == "two_objects":
        return Composition(category, objects, None, _background(rng))
    relation = rng.choice(
        [r for r in RELATIONS if (first, r, second) not in HELD_OUT_RELATIONS]
    )
    return Composition(category, objects, relation, _background(rng))


def training_examples(count: int, seed: int) -> list[Example]:
    """`count` captioned training scenes, the same for the same seed."""
    rng = random.Random(seed)
    allowed = training_colours()
    examples = []
    for _ in range(count):
        composition = training_composition(rng)
        scene = layout(composition, rng, allowed)
        examples.append(Example(composition, caption(composition, rng), scene))
    return examples


def held_out_compositions() -> list[Composition]:
    """The fixed held-out compositions, `HELD_OUT_PER_CATEGORY` per category, in a fixed order."""
    rng = random.Random(20250)
    pairs = sorted(HELD_OUT_PAIRS)
    relations = sorted(HELD_OUT_RELATIONS)
    allowed = training_colours()
    found: dict[str, list[Composition]] = {c: [] for c in CATEGORIES}
    for i in range(HELD_OUT_PER_CATEGORY):
        colour, shape = pairs[i % len(pairs)]
        found["single"].append(Composition("single", (ObjectSpec(SHAPES[i % len(SHAPES)]),)))
        found["colour"].append(Composition("colour", (ObjectSpec(shape, colour),)))
        count = 2 + i % 3
        found["count"].append(Composition("count", (ObjectSpec(shape, colour, count),)))
        other = rng.choice([s for s in SHAPES if s != shape])
        other_colour = rng.choice([c for c in COLOURS if c != colour and (c, other) not in
                                   HELD_OUT_PAIRS])
        two = (ObjectSpec(shape, colour), ObjectSpec(other, other_colour))
        found["two_objects"].append(Composition("two_objects", two if i % 2 else two[::-1]))
        a, relation, b = relations[i % len(relations)]
        # Colours from the training pairs, so these prompts test the relation alone.
        colour_a = rng.choice(allowed[a])
        colour_b = rng.choice([c for c in allowed[b] if c != colour_a])
        objects = (ObjectSpec(a, colour_a), ObjectSpec(b, colour_b))
        found["position"].append(Composition("position", objects, relation))
    return [c for category in CATEGORIES for c in found[category]]


def held_out_prompts() -> list[tuple[str, Composition]]:
    """Held-out prompts with the compositions they describe, in a fixed order."""
    rng = random.Random(7)
    return [(caption(c, rng), c) for c in held_out_compositions()]
