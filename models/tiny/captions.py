"""Captions for compositions in varied natural phrasings, and the parser that reads them back.

Every phrasing is generated from a small grammar, so `parse_prompt(caption(c))` recovers what the
evaluator checks (shapes, colours, counts, relation) for every composition `c`.
"""

from __future__ import annotations

import random
import re

from models.tiny.scenes import (
    BACKGROUNDS,
    COLOURS,
    SHAPES,
    Composition,
    ObjectSpec,
    SceneError,
)

NUMBER_WORDS = {1: "one", 2: "two", 3: "three", 4: "four"}
PLURALS = {shape: shape + ("es" if shape.endswith("s") else "s") for shape in SHAPES}
SIZE_WORDS = {"small": ("small", "little", "tiny"), "large": ("large", "big")}
RELATION_PHRASES = {
    "left of": ("to the left of", "left of", "on the left of"),
    "right of": ("to the right of", "right of", "on the right of"),
    "above": ("above", "over"),
    "below": ("below", "under", "beneath"),
}
# The word of each relation phrase that names it ("left", "over", ...), and that relation.
RELATION_WORDS = {word: relation for relation, phrases in RELATION_PHRASES.items()
                  for phrase in phrases for word in phrase.split()
                  if word not in ("to", "the", "of", "on")}
# The words that name a count ("a pair of" names two), and that count.
COUNT_WORDS = {**{word: count for count, word in NUMBER_WORDS.items()}, "pair": 2}
BACKGROUND_PHRASES = ("on a {bg} background", "against a {bg} background", "with a {bg} background")
FRAMES = ("{}", "{}", "{}", "a picture of {}", "an image of {}", "a drawing of {}")
JOINERS = (" and ", " with ", " and also ")
EXTRA_WORDS = ("all", "pair", "group", "that", "is", "the", "of", "a", "an")


class PromptError(SceneError):
    """A prompt that speaks of nothing in the tiny model's world."""


def _noun_phrase(spec: ObjectSpec, rng: random.Random) -> str:
    size = rng.choice(SIZE_WORDS[spec.size]) + " " if spec.size in SIZE_WORDS else ""
    colour = spec.colour + " " if spec.colour else ""
    if spec.count == 1:
        if spec.colour and not size and rng.random() < 0.15:
            return f"a {spec.shape} that is {spec.colour}"
        article = "an" if (size or colour or spec.shape)[0] in "aeiou" else "a"
        article = "one" if rng.random() < 0.15 else article
        return f"{article} {size}{colour}{spec.shape}"
    plural = PLURALS[spec.shape]
    if spec.colour and not size and rng.random() < 0.15:
        return f"{NUMBER_WORDS[spec.count]} {plural}, all {spec.colour}"
    if spec.count == 2 and rng.random() < 0.15:
        return f"a pair of {size}{colour}{plural}"
    if rng.random() < 0.15:
        return f"a group of {NUMBER_WORDS[spec.count]} {size}{colour}{plural}"
    return f"{NUMBER_WORDS[spec.count]} {size}{colour}{plural}"


def caption(composition: Composition, rng: random.Random) -> str:
    """One natural phrasing of `composition`, chosen by `rng`."""
    phrases = [_noun_phrase(spec, rng) for spec in composition.objects]
    if composition.relation:
        relation = rng.choice(RELATION_PHRASES[composition.relation])
        body = f"{phrases[0]} {relation} {phrases[1]}"
    else:
        body = rng.choice(JOINERS).join(phrases)
    text = rng.choice(FRAMES).format(body)
    if composition.background:
        text += " " + rng.choice(BACKGROUND_PHRASES).format(bg=composition.background)
    return text


def vocabulary() -> list[str]:
    """Every word a caption can contain, in a fixed order."""
    words: list[str] = []
    sources = [
        *SHAPES, *PLURALS.values(), *COLOURS, *NUMBER_WORDS.values(), *BACKGROUNDS,
        *(w for options in SIZE_WORDS.values() for w in options), "background", ",",
        *(w for options in RELATION_PHRASES.values() for p in options for w in p.split()),
        *(w for p in BACKGROUND_PHRASES for w in p.split() if w != "{bg}"),
        *(w for f in FRAMES for w in f.split() if w != "{}"),
        *(w for j in JOINERS for w in j.split()), *EXTRA_WORDS,
    ]
    for word in sources:
        if word not in words:
            words.append(word)
    return words


_WORD = re.compile(r"[a-z]+|,")
_SINGULAR = {plural: shape for shape, plural in PLURALS.items()}
_NUMBERS = {word: n for n, word in NUMBER_WORDS.items()} | {"a": 1, "an": 1, "pair": 2}
_RELATION_WORDS = sorted(
    ((p.split(), rel) for rel, options in RELATION_PHRASES.items() for p in options),
    key=lambda item: -len(item[0]),
)


def parse_prompt(prompt: str) -> Composition:
    """Read a prompt back into the composition it describes (what the evaluator checks)."""
    words = _WORD.findall(prompt.lower())
    specs: list[dict] = []
    relation = background = None
    pending: dict = {}
    i = 0
    while i < len(words):
        word = words[i]
        phrase = next((p for p in _RELATION_WORDS if words[i : i + len(p[0])] == p[0]), None)
        if phrase and specs:
            relation = phrase[1]
            i += len(phrase[0])
            continue
        if word in BACKGROUNDS and i + 1 < len(words) and words[i + 1] == "background":
            background = word
        elif word in _NUMBERS and word not in ("a", "an"):
            pending["count"] = _NUMBERS[word]
        elif word in COLOURS:
            if "shape" in pending or not specs or words[i - 1] not in ("is", "all"):
                pending["colour"] = word
            else:
                specs[-1]["colour"] = word
        elif word in SHAPES or word in _SINGULAR:
            pending["shape"] = _SINGULAR.get(word, word)
            pending.setdefault("count", 2 if word in _SINGULAR else 1)
            specs.append(pending)
            pending = {}
        i += 1
    if not specs:
        raise PromptError(f"no shape found in {prompt!r}; name one of {SHAPES}")
    objects = tuple(ObjectSpec(s["shape"], s.get("colour"), s["count"]) for s in specs[:2])
    return Composition(_category(objects, relation), objects, relation, background)


def _category(objects: tuple[ObjectSpec, ...], relation: str | None) -> str:
    if relation:
        return "position"
    if len(objects) == 2:
        return "two_objects"
    if objects[0].count > 1:
        return "count"
    return "colour" if objects[0].colour else "single"

