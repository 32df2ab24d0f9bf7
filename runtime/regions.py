"""Regional prompting: parts of the image read their own prompt as well as the whole one.

A plan is a tuple of `Region`s, each a text and a box. The transformer's cross-attention is
given the whole prompt's tokens followed by every region's, and a mask: each image token reads
the whole prompt, and a token whose cell lies in a region's box (grown by `margin` cells) reads
that region's text too. The self-attention between image tokens is left as it is, so the image
stays one picture. A model folder asks for it in linea.json's `layout` with the planner that
writes its plans (models.families.LayoutSettings); only the in-house model has one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from models.families import KNOWN_PLANNERS

# A planner: (prompt, seed) -> the plan for the image drawn from that seed, or None when it has
# none for the prompt (the image is then drawn from the prompt alone).
Planner = Callable[[str, int], "tuple[Region, ...] | None"]
PLANNERS = KNOWN_PLANNERS
MASKED = -10000.0  # the attention bias of a token an image token must not read (as diffusers)


@dataclass(frozen=True)
class Region:
    """A part of the image and what belongs there. `box` is (left, top, right, bottom) as
    fractions of the width and height."""

    text: str
    box: tuple[float, float, float, float]

    def __post_init__(self) -> None:
        left, top, right, bottom = self.box
        if not (left < right and top < bottom):
            raise ValueError(f"a region's box must have left < right and top < bottom, "
                             f"got {self.box}")
        if not self.text.strip():
            raise ValueError("a region needs a text")

    def to_dict(self) -> dict:
        return {"text": self.text, "box": [round(v, 4) for v in self.box]}


def planner(name: str) -> Planner:
    """The planner a model folder names (one of `PLANNERS`)."""
    if name == "shapes-world":
        from models.tiny.planner import plan

        return plan
    raise ValueError(f"unknown layout planner {name!r}; Linea knows {', '.join(PLANNERS)}")


def region_texts(plans: Sequence[tuple[Region, ...]]) -> list[str]:
    """The distinct texts of `plans`, in the order they first appear."""
    texts: list[str] = []
    for plan in plans:
        for region in plan:
            if region.text not in texts:
                texts.append(region.text)
    return texts


def cells(box: tuple[float, float, float, float], rows: int, cols: int,
          margin: float) -> torch.Tensor:
    """(rows * cols,) bool: the image-token cells whose centre lies in `box` grown by `margin`
    cells on every side; at least the cell under the box's centre."""
    left, top, right, bottom = box
    ys = (torch.arange(rows) + 0.5) / rows
    xs = (torch.arange(cols) + 0.5) / cols
    inside_y = (ys >= top - margin / rows) & (ys <= bottom + margin / rows)
    inside_x = (xs >= left - margin / cols) & (xs <= right + margin / cols)
    found = inside_y[:, None] & inside_x[None, :]
    if not found.any():
        row = min(max(int((top + bottom) / 2 * rows), 0), rows - 1)
        col = min(max(int((left + right) / 2 * cols), 0), cols - 1)
        found[row, col] = True
    return found.flatten()


def reading_mask(plans: Sequence[tuple[Region, ...]], texts: Sequence[str],
                 prompt_mask: torch.Tensor, text_masks: torch.Tensor, rows: int, cols: int,
                 margin: float) -> torch.Tensor:
    """(len(plans), rows * cols, (1 + len(texts)) * T) bool: which text tokens each image token
    reads, for the text sequence [prompt, texts[0], texts[1], ...] (each T tokens, `prompt_mask`
    (T,) and `text_masks` (len(texts), T) marking the real ones)."""
    tokens = prompt_mask.shape[-1]
    allowed = torch.zeros(len(plans), rows * cols, 1 + len(texts), tokens, dtype=torch.bool)
    allowed[:, :, 0] = prompt_mask.bool()
    for index, plan in enumerate(plans):
        for region in plan:
            slot = 1 + texts.index(region.text)
            inside = cells(region.box, rows, cols, margin)
            allowed[index, inside, slot] = text_masks[slot - 1].bool()
    return allowed.flatten(2)


def attention_bias(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A reading mask as the additive bias the transformer's cross-attention takes."""
    return torch.where(allowed, 0.0, MASKED).to(dtype)
