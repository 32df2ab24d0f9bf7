"""A deterministic GenEval-style judge: read an image, find its objects, check them against a
prompt.

Objects are found by colour: the world's object colours are saturated and well apart in hue, its
backgrounds are not, so saturated pixels grouped by nearest palette hue and connected form the
objects. Each object's shape is the template (rendered outline, bounding box scaled to a square)
it overlaps best; its position is its centroid. The rules per category follow GenEval:
single object present; colour right; exact count; both objects present; relation holds.
"""

from __future__ import annotations

import dataclasses
import functools
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from models.tiny.captions import parse_prompt
from models.tiny.render import shape_distance
from models.tiny.scenes import CATEGORIES, COLOURS, SHAPES, Composition

WORK_SIZE = 192  # images are judged at this side: enough for the smallest objects, still quick
TEMPLATE_SIDE = 24
MIN_SATURATION = 0.4
MIN_VALUE = 0.3
MIN_AREA = 0.0015  # of the image: smaller specks are noise, not objects
MIN_SHAPE_SCORE = 0.5
RELATION_MARGIN = 0.05  # centres must differ by this fraction of the side on the relation's axis


@dataclass(frozen=True)
class Detection:
    shape: str | None  # None: a coloured blob that matches no shape well
    colour: str
    x: float
    y: float
    area: float


@dataclass(frozen=True)
class Verdict:
    category: str
    passed: bool
    reason: str
    # Objects detected beyond the number the prompt asks for (GenEval's rules for single, colour,
    # two objects and position do not look at them; `summarise(..., exact=True)` does).
    extra: int = 0


def _hue_saturation_value(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rgb = rgb.astype(np.float32) / 255.0
    high, low = rgb.max(-1), rgb.min(-1)
    chroma = high - low
    safe = np.where(chroma > 0, chroma, 1.0)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    hue = np.where(high == r, (g - b) / safe % 6, np.where(high == g, (b - r) / safe + 2,
                                                          (r - g) / safe + 4)) * 60.0
    saturation = np.where(high > 0, chroma / np.where(high > 0, high, 1.0), 0.0)
    return hue, saturation, high


@functools.cache
def _palette_hues() -> np.ndarray:
    colours = np.array(list(COLOURS.values()), dtype=np.uint8).reshape(1, -1, 3)
    return _hue_saturation_value(colours)[0][0]


@functools.cache
def _templates() -> dict[str, tuple[np.ndarray, float]]:
    """Each shape's filled outline, cropped to its bounding box and scaled to a square."""
    side = 96
    coords = (torch.arange(side, dtype=torch.float32) + 0.5) / side * 2.2 - 1.1
    v, u = torch.meshgrid(coords, coords, indexing="ij")
    found = {}
    for shape in SHAPES:
        mask = (shape_distance(shape, u, v) < 0).numpy()
        found[shape] = (_square_crop(mask), _aspect(mask))
    return found


def _aspect(mask: np.ndarray) -> float:
    rows, cols = np.nonzero(mask)
    return (cols.max() - cols.min() + 1) / (rows.max() - rows.min() + 1)


def _square_crop(mask: np.ndarray) -> np.ndarray:
    rows, cols = np.nonzero(mask)
    crop = mask[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    scaled = Image.fromarray(crop.astype(np.uint8) * 255).resize(
        (TEMPLATE_SIDE, TEMPLATE_SIDE), Image.Resampling.BOX
    )
    return np.asarray(scaled, dtype=np.float32) / 255.0


def _classify_shape(mask: np.ndarray) -> str | None:
    crop, aspect = _square_crop(mask), _aspect(mask)
    best, best_score = None, MIN_SHAPE_SCORE
    for shape, (template, template_aspect) in _templates().items():
        overlap = np.minimum(crop, template).sum() / np.maximum(crop, template).sum()
        score = overlap - 0.5 * abs(np.log(aspect / template_aspect))
        if score > best_score:
            best, best_score = shape, score
    return best


def _components(classes: np.ndarray) -> np.ndarray:
    """Label 4-connected regions of equal class (class -1 is background, label -1)."""
    h, w = classes.shape
    labels = np.where(classes >= 0, np.arange(h * w).reshape(h, w), h * w)
    while True:
        before = labels
        for axis, shift in ((0, 1), (0, -1), (1, 1), (1, -1)):
            neighbour = np.roll(labels, shift, axis)
            same = np.roll(classes, shift, axis) == classes
            edge = np.zeros_like(same)  # np.roll wraps around: forbid joining across the border
            index = [slice(None), slice(None)]
            index[axis] = slice(0, 1) if shift == 1 else slice(-1, None)
            edge[tuple(index)] = True
            labels = np.where(same & ~edge & (classes >= 0), np.minimum(labels, neighbour), labels)
        flat = labels.ravel()
        fg = flat < h * w
        flat[fg] = flat[flat[fg]]  # pointer jumping: adopt the label's own label
        labels = flat.reshape(h, w)
        if np.array_equal(labels, before):
            return np.where(labels < h * w, labels, -1)


def detect(image: np.ndarray | Image.Image) -> list[Detection]:
    """The objects in an RGB image, largest first."""
    picture = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))
    rgb = np.asarray(
        picture.convert("RGB").resize((WORK_SIZE, WORK_SIZE), Image.Resampling.BOX)
    )
    hue, saturation, value = _hue_saturation_value(rgb)
    distance = np.abs((hue[..., None] - _palette_hues() + 180) % 360 - 180)
    classes = np.where((saturation > MIN_SATURATION) & (value > MIN_VALUE),
                       distance.argmin(-1), -1)
    labels = _components(classes)
    names = list(COLOURS)
    found = []
    for label in np.unique(labels[labels >= 0]):
        mask = labels == label
        area = mask.sum() / mask.size
        if area < MIN_AREA:
            continue
        rows, cols = np.nonzero(mask)
        colour = names[int(classes[rows[0], cols[0]])]
        found.append(Detection(_classify_shape(mask), colour, (cols.mean() + 0.5) / WORK_SIZE,
                               (rows.mean() + 0.5) / WORK_SIZE, float(area)))
    return sorted(found, key=lambda d: -d.area)


def _relation_holds(a: Detection, b: Detection, relation: str) -> bool:
    offset = {"left of": b.x - a.x, "right of": a.x - b.x, "above": b.y - a.y,
              "below": a.y - b.y}[relation]
    return bool(offset > RELATION_MARGIN)


def judge(detections: list[Detection], composition: Composition) -> Verdict:
    """Whether detected objects satisfy a composition, by its category's rule, and how many
    objects it holds beyond those asked."""
    verdict = _judge(detections, composition)
    extra = max(0, len(detections) - sum(spec.count for spec in composition.objects))
    return dataclasses.replace(verdict, extra=extra)


def _judge(detections: list[Detection], composition: Composition) -> Verdict:
    by_shape: dict[str, list[Detection]] = defaultdict(list)
    for d in detections:
        if d.shape:
            by_shape[d.shape].append(d)
    category = composition.category

    def matching(index: int) -> list[Detection]:
        spec = composition.objects[index]
        return [d for d in by_shape[spec.shape] if spec.colour in (None, d.colour)]

    first = composition.objects[0]
    if category == "single":
        ok = bool(by_shape[first.shape])
        return Verdict(category, ok, "" if ok else f"no {first.shape}")
    if category == "colour":
        wrong = [d.colour for d in by_shape[first.shape] if d.colour != first.colour]
        ok = bool(matching(0)) and not wrong
        return Verdict(category, ok, "" if ok else f"{first.shape} colours {wrong or 'none'}")
    if category == "count":
        shapes = by_shape[first.shape]
        ok = len(shapes) == first.count and len(matching(0)) == first.count
        return Verdict(category, ok, "" if ok else f"{len(shapes)} {first.shape}")
    a, b = matching(0), matching(1)
    if not a or not b:
        return Verdict(category, False, "missing " + ("first" if not a else "second") + " object")
    if category == "two_objects":
        return Verdict(category, True, "")
    ok = _relation_holds(a[0], b[0], composition.relation or "")
    return Verdict(category, bool(ok), "" if ok else f"not {composition.relation}")


def check(image: np.ndarray | Image.Image, prompt: str | Composition) -> Verdict:
    """Judge one image against its prompt (text or composition)."""
    composition = parse_prompt(prompt) if isinstance(prompt, str) else prompt
    return judge(detect(image), composition)


def summarise(verdicts: list[Verdict], exact: bool = False) -> dict[str, float]:
    """Accuracy per category and overall (the mean of the categories present), GenEval-style;
    `exact` counts a pass only when the image holds no object beyond those asked."""
    scores = {}
    for category in CATEGORIES:
        chosen = [v.passed and not (exact and v.extra) for v in verdicts
                  if v.category == category]
        if chosen:
            scores[category] = float(sum(chosen) / len(chosen))
    scores["overall"] = sum(scores.values()) / len(scores) if scores else 0.0
    return scores
