"""The tiny model's world: renderer, captions, split and evaluator."""

from __future__ import annotations

import dataclasses
import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from models.tiny.captions import PromptError, caption, parse_prompt
from models.tiny.evaluator import check, detect, summarise
from models.tiny.quality import autoencoder_reconstruction
from models.tiny.render import render, render_batch
from models.tiny.scenes import (
    CATEGORIES,
    COLOURS,
    OPPOSITE,
    SHAPES,
    Composition,
    ObjectSpec,
    SceneError,
    layout,
)
from models.tiny.split import (
    HELD_OUT_PAIRS,
    HELD_OUT_RELATIONS,
    held_out_compositions,
    held_out_prompts,
    training_examples,
)


def _images(scenes, size: int = 256) -> np.ndarray:
    batch = render_batch(scenes, size)
    return (batch.permute(0, 2, 3, 1).clamp(0, 1) * 255).round().byte().numpy()


def test_world_is_big_enough():
    assert len(SHAPES) >= 8 and {"circle", "square", "triangle", "star"} <= set(SHAPES)
    assert len(COLOURS) >= 8


def test_training_examples_are_deterministic():
    first, again = training_examples(40, seed=5), training_examples(40, seed=5)
    assert first == again
    assert training_examples(40, seed=6) != first
    assert np.array_equal(render(first[0].scene, 64), render(again[0].scene, 64))
    assert held_out_prompts() == held_out_prompts()


def test_renders_at_any_resolution_with_soft_edges():
    scene = layout(Composition("colour", (ObjectSpec("circle", "red", size="large"),)),
                   random.Random(0))
    for size in (64, 173, 256):
        image = render(scene, size)
        assert image.shape == (size, size, 3)
    # Anti-aliasing: edge pixels lie between the background and the object colour.
    image = render(scene, 256).astype(int)
    red = np.abs(image - np.array(COLOURS["red"])).sum(-1) < 6
    background = np.abs(image - image[0, 0]).sum(-1) < 6
    assert red.any() and background.any()
    assert (~red & ~background).sum() > 50


def test_held_out_compositions_never_appear_in_training():
    for example in training_examples(3000, seed=11):
        for obj in example.scene.objects:
            assert (obj.colour, obj.shape) not in HELD_OUT_PAIRS, example.caption
        composition = example.composition
        if composition.relation:
            a, b = composition.objects
            assert (a.shape, composition.relation, b.shape) not in HELD_OUT_RELATIONS
        # The caption as text says the same: no held-out relation or colour-shape pair.
        parsed = parse_prompt(example.caption)
        for spec in parsed.objects:
            assert (spec.colour, spec.shape) not in HELD_OUT_PAIRS, example.caption
        if parsed.relation:
            triple = (parsed.objects[0].shape, parsed.relation, parsed.objects[1].shape)
            assert triple not in HELD_OUT_RELATIONS, example.caption


def test_held_out_prompts_use_held_out_compositions():
    for composition in held_out_compositions():
        if composition.category in ("colour", "count"):
            spec = composition.objects[0]
            assert (spec.colour, spec.shape) in HELD_OUT_PAIRS
        if composition.category == "two_objects":
            assert any((s.colour, s.shape) in HELD_OUT_PAIRS for s in composition.objects)
        if composition.category == "position":
            a, b = composition.objects
            assert (a.shape, composition.relation, b.shape) in HELD_OUT_RELATIONS


def test_captions_parse_back_to_their_composition():
    rng = random.Random(3)
    for example in training_examples(500, seed=2):
        parsed = parse_prompt(caption(example.composition, rng))
        expected = example.composition
        assert parsed.category == expected.category
        assert parsed.relation == expected.relation
        assert parsed.background == expected.background
        assert [(s.shape, s.colour, s.count) for s in parsed.objects] == [
            (s.shape, s.colour, s.count) for s in expected.objects
        ]


def test_bad_words_raise_typed_errors():
    with pytest.raises(PromptError, match="no shape"):
        parse_prompt("a photo of a cat")
    with pytest.raises(SceneError, match="unknown colour"):
        Composition("colour", (ObjectSpec("circle", "mauve"),))


def test_evaluator_scores_ground_truth_near_one():
    compositions = held_out_compositions()
    rng = random.Random(1)
    images = _images([layout(c, rng) for c in compositions])
    verdicts = [check(image, c) for image, c in zip(images, compositions, strict=True)]
    scores = summarise(verdicts)
    assert scores["overall"] >= 0.98
    assert min(scores.values()) >= 0.95
    # rendered scenes hold exactly what they ask for
    assert summarise(verdicts, exact=True) == scores


def test_exact_scores_do_not_count_a_pass_with_objects_nobody_asked_for():
    rng = random.Random(3)
    pair = Composition("two_objects", (ObjectSpec("star", "yellow"), ObjectSpec("heart", "blue")))
    stars = Composition("count", (ObjectSpec("star", "yellow", count=2),))
    # the asked star and heart, and a red circle nobody asked for
    scene = layout(pair, rng)
    extra = layout(Composition("single", (ObjectSpec("circle", "red"),)), random.Random(9))
    image = render(dataclasses.replace(scene, objects=(*scene.objects, *extra.objects)), 256)
    verdict = check(image, pair)
    assert verdict.passed and verdict.extra == 1
    assert summarise([verdict]) == {"two_objects": 1.0, "overall": 1.0}
    assert summarise([verdict], exact=True) == {"two_objects": 0.0, "overall": 0.0}
    two = check(render(layout(stars, rng), 256), stars)
    assert two.passed and two.extra == 0  # a count of two asks for two objects


def _mismatch(composition: Composition) -> Composition:
    """A prompt the scene of `composition` contradicts."""
    first = composition.objects[0]
    if composition.category == "single":
        other = SHAPES[(SHAPES.index(first.shape) + 1) % len(SHAPES)]
        return dataclasses.replace(composition, objects=(ObjectSpec(other),))
    if composition.category == "colour":
        other = list(COLOURS)[(list(COLOURS).index(first.colour) + 1) % len(COLOURS)]
        return dataclasses.replace(composition, objects=(dataclasses.replace(first, colour=other),))
    if composition.category == "count":
        wrong = first.count % 4 + 1
        return dataclasses.replace(composition, objects=(dataclasses.replace(first, count=wrong),))
    if composition.category == "two_objects":
        present = {s.shape for s in composition.objects}
        absent = next(s for s in SHAPES if s not in present)
        return dataclasses.replace(composition, objects=(first, ObjectSpec(absent)))
    return dataclasses.replace(composition, relation=OPPOSITE[composition.relation])


def test_evaluator_scores_mismatched_prompts_near_zero():
    compositions = held_out_compositions()
    rng = random.Random(2)
    images = _images([layout(c, rng) for c in compositions])
    verdicts = [check(image, _mismatch(c)) for image, c in zip(images, compositions, strict=True)]
    assert summarise(verdicts)["overall"] <= 0.03


def test_detect_reads_back_objects():
    scene = layout(Composition("position", (ObjectSpec("star", "yellow"), ObjectSpec("heart",
                   "blue")), "left of"), random.Random(4))
    found = detect(render(scene, 256))
    assert {(d.shape, d.colour) for d in found} == {("star", "yellow"), ("heart", "blue")}
    star = next(d for d in found if d.shape == "star")
    assert abs(star.x - scene.objects[0].x) < 0.02 and abs(star.y - scene.objects[0].y) < 0.02


class _Autoencoder(torch.nn.Module):
    """Stands in for AutoencoderDC: `decode(encode(x))` gives x back, or a flat grey image."""

    def __init__(self, blank: bool) -> None:
        super().__init__()
        self.blank = blank

    def encode(self, images: torch.Tensor) -> SimpleNamespace:
        return SimpleNamespace(latent=images)

    def decode(self, latents: torch.Tensor) -> SimpleNamespace:
        return SimpleNamespace(sample=torch.zeros_like(latents) if self.blank else latents)


def test_autoencoder_reconstruction_judges_decoded_ground_truth_in_every_layout():
    scores, verdicts = autoencoder_reconstruction(_Autoencoder(blank=False), layouts=(1, 2),
                                                  per_category=4)
    per_layout = 4 * len(CATEGORIES)
    assert len(verdicts) == 2 * per_layout
    assert [v.category for v in verdicts[:per_layout]] == [v.category
                                                           for v in verdicts[per_layout:]]
    assert scores["overall"] >= 0.95
    scores, verdicts = autoencoder_reconstruction(_Autoencoder(blank=True), layouts=(1,),
                                                  per_category=4)
    assert scores["overall"] == 0.0
    assert all("no " in v.reason or "missing" in v.reason or v.reason.startswith("0 ")
               or "colours none" in v.reason for v in verdicts)
