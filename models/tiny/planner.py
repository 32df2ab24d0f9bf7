"""A layout planner for the tiny model's world: where each object a prompt names should go.

The runtime can give parts of the image their own prompt (`runtime.regions`): the image tokens
inside a region read the region's text beside the whole prompt. This planner reads a prompt in
the world's grammar (`parse_prompt`), lays its objects out as the world's scenes are laid out
(`scenes.layout`: sizes, no overlaps, the relation held) and gives each object its own region,
"a small red circle" in a box around where it should stand. The plan is drawn from the image's
seed, so each seed (and each candidate of a best-of-N pick) gets its own layout. A prompt outside
the world (no shape named) or one whose objects do not fit gets no plan, and the image is drawn
from the prompt alone.

Layout-planned regional prompting is what LLM-grounded diffusion (Lian et al. 2023) does with a
language model as the planner; here the world's own grammar is the planner.
"""

from __future__ import annotations

import random
import re

from models.tiny.captions import PLURALS, SIZE_WORDS, PromptError, parse_prompt
from models.tiny.scenes import SceneError, layout
from runtime.regions import Region

_SIZE_OF = {word: size for size, words in SIZE_WORDS.items() for word in words}
_SHAPE_WORDS = {*PLURALS, *PLURALS.values()}
_WORD = re.compile(r"[a-z]+")


def _sizes(prompt: str) -> list[str | None]:
    """For each shape word of `prompt` in order, the size word just before it (since the last
    shape word), as "small" or "large"; None when there is none."""
    sizes: list[str | None] = []
    pending = None
    for word in _WORD.findall(prompt.lower()):
        if word in _SIZE_OF:
            pending = _SIZE_OF[word]
        elif word in _SHAPE_WORDS:
            sizes.append(pending)
            pending = None
    return sizes


def _phrase(shape: str, colour: str | None, size: str | None, background: str | None) -> str:
    words = " ".join(w for w in (size, colour, shape) if w)
    text = ("an " if words[0] in "aeiou" else "a ") + words
    return text + (f" on a {background} background" if background else "")


def plan(prompt: str, seed: int) -> tuple[Region, ...] | None:
    """One region per object `prompt` asks for, laid out by `seed`; None when the prompt is
    outside the world or its objects cannot be laid out."""
    try:
        composition = parse_prompt(prompt)
    except PromptError:
        return None
    sizes = _sizes(prompt)
    objects = tuple(
        spec.__class__(spec.shape, spec.colour, spec.count, sizes[i] if i < len(sizes) else None)
        for i, spec in enumerate(composition.objects))
    composition = composition.__class__(composition.category, objects, composition.relation,
                                        composition.background)
    try:
        scene = layout(composition, random.Random(seed))
    except SceneError:
        return None
    regions = []
    placed = iter(scene.objects)
    for spec in composition.objects:
        text = _phrase(spec.shape, spec.colour, spec.size, composition.background)
        for _ in range(spec.count):
            item = next(placed)
            box = (item.x - item.radius, item.y - item.radius,
                   item.x + item.radius, item.y + item.radius)
            regions.append(Region(text, box))
    return tuple(regions)
