"""The tiny model's training command: a run broken by a checkpoint continues exactly."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import torch

from models.tiny import checkpoint
from models.tiny.train import RECIPES, Trainer, noise_levels

SHIPPED = Path(__file__).resolve().parent.parent / "assets" / "models" / "linea-tiny"
START = RECIPES["cpu-shift"].dit_start


def _recipe(steps: int):
    # The shipped run's continued recipe (shifted noise levels, object weighting), made small.
    return dataclasses.replace(
        RECIPES["cpu-shift"], scenes=12, dit_batch=4, dit_steps=START + steps,
        dit_schedule_steps=START + 4, warmup=2, eval_every=1000, eval_per_category=1,
        gap_scenes=4, checkpoint_every=1000)


def _trainer(out: Path, steps: int) -> Trainer:
    return Trainer(_recipe(steps), out, torch.device("cpu"), math.inf, math.inf)


def test_resumed_transformer_stage_matches_an_unbroken_one_and_reuses_the_encoded_scenes(
    tmp_path,
):
    unbroken = _trainer(tmp_path / "unbroken", 4)
    unbroken.init_from(SHIPPED)
    unbroken.train_transformer(resume=False)

    first = _trainer(tmp_path / "broken", 2)
    first.init_from(SHIPPED)
    first.train_transformer(resume=False)
    assert first.state["dit_step"] == START + 2
    second = _trainer(tmp_path / "broken", 4)
    second.load()
    second.train_transformer(resume=True)

    assert second.state["dit_step"] == unbroken.state["dit_step"] == START + 4
    assert any(e.get("stage") == "encode" and e.get("cached") for e in second.state["log"])
    assert second.state["recipes_before"][-1]["dit_steps"] == START + 2
    # The evaluation at the end logs held-out scores and the caption gaps.
    gaps = [e for e in second.state["log"] if e.get("stage") == "caption_gap"]
    assert gaps and set(gaps[-1]) >= {"shuffled@0.9", "empty@0.9"}
    for stem in ("dit", "ema"):
        a = checkpoint.load_tensors(tmp_path / "unbroken" / "checkpoint", stem)
        b = checkpoint.load_tensors(tmp_path / "broken" / "checkpoint", stem)
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), stem
    # ... and it moved away from the folder it started from.
    start = _trainer(tmp_path / "start", 0)
    start.init_from(SHIPPED)
    name = "transformer.proj_out.weight"
    assert not torch.equal(a[name], start.transformer.proj_out.weight)


def test_training_noise_levels_are_shifted_like_the_sampler():
    def share_above(recipe, level: float) -> float:
        gen = torch.Generator().manual_seed(0)
        sigma = noise_levels(recipe, 200_000, gen, torch.device("cpu"))
        assert float(sigma.min()) > 0 and float(sigma.max()) < 1
        return float((sigma > level).float().mean())

    assert abs(share_above(RECIPES["cpu-continue"], 0.8) - 0.083) < 0.005  # unshifted
    assert RECIPES["cpu-shift"].train_shift == 2.0
    assert abs(share_above(RECIPES["cpu-shift"], 0.8) - 0.244) < 0.005


def test_sampler_choice_tries_each_guidance_in_each_interval_and_the_folder_keeps_the_best(
        tmp_path):
    from models.tiny import quality
    from runtime import identify

    recipe = dataclasses.replace(_recipe(1), guidances=(2.0, 4.0),
                                 guidance_intervals=((0.0, 1.0), (0.2, 0.8)),
                                 sampler_per_category=1)
    trainer = Trainer(recipe, tmp_path / "run", torch.device("cpu"), math.inf, math.inf)
    trainer.init_from(SHIPPED)
    trainer.train_transformer(resume=False)
    assert trainer.state["stage"] == "sampler"
    trainer.choose_sampler()
    tried = [e for e in trainer.state["log"] if e.get("stage") == "sampler"]
    assert [(e["guidance"], tuple(e["interval"])) for e in tried] == [
        (2.0, (0.0, 1.0)), (4.0, (0.0, 1.0)), (2.0, (0.2, 0.8)), (4.0, (0.2, 0.8))]
    best = max(tried, key=lambda e: e["validation"])  # the first of equals, as the choice
    assert trainer.state["guidance"] == best["guidance"]
    assert trainer.state["guidance_interval"] == best["interval"]
    folder = trainer.export()
    assert quality.Sampler.of_folder(folder) == quality.Sampler(
        recipe.sampler_steps, best["guidance"], tuple(best["interval"]))
    assert identify(folder).family.guidance_interval == tuple(best["interval"])
