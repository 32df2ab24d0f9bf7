"""The tiny model's training command: a run broken by a checkpoint continues exactly."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from models.tiny import build, checkpoint
from models.tiny.train import RECIPES, Trainer, noise_levels

SHIPPED = Path(__file__).resolve().parent.parent / "assets" / "models" / "linea-tiny"
START = RECIPES["cpu-shift"].dit_start
# The shipped folder's depth: the recipes below continue it at that depth (a recipe shallower than
# the folder it starts from is refused).
SHIPPED_TRANSFORMER = json.loads((SHIPPED / "transformer" / "config.json").read_text())
SHIPPED_LAYERS = SHIPPED_TRANSFORMER["num_layers"]


def _recipe(steps: int):
    # The shipped run's continued recipe (shifted noise levels, object weighting), made small.
    return dataclasses.replace(
        RECIPES["cpu-shift"], scenes=12, dit_batch=4, dit_steps=START + steps,
        dit_schedule_steps=START + 4, warmup=2, eval_every=1000, eval_per_category=1,
        gap_scenes=4, checkpoint_every=1000, layers=SHIPPED_LAYERS)


def _trainer(out: Path, steps: int) -> Trainer:
    return Trainer(_recipe(steps), out, torch.device("cpu"), math.inf, math.inf)


def _unbroken_and_resumed(recipe, tmp_path: Path):
    """The transformer stage's tensors after 3 steps from the shipped folder in one run
    (tmp_path/unbroken), and after 2 steps, stopped, then resumed for the third
    (tmp_path/broken); `recipe(steps)` gives the recipe of a run of that many steps."""
    unbroken = Trainer(recipe(3), tmp_path / "unbroken", torch.device("cpu"), math.inf, math.inf)
    unbroken.init_from(SHIPPED)
    unbroken.train_transformer(resume=False)
    first = Trainer(recipe(2), tmp_path / "broken", torch.device("cpu"), math.inf, math.inf)
    first.init_from(SHIPPED)
    first.train_transformer(resume=False)
    second = Trainer(recipe(3), tmp_path / "broken", torch.device("cpu"), math.inf, math.inf)
    second.load()
    second.train_transformer(resume=True)
    assert second.state["dit_step"] == recipe(3).dit_steps
    return (checkpoint.load_tensors(tmp_path / "unbroken" / "checkpoint", "dit"),
            checkpoint.load_tensors(tmp_path / "broken" / "checkpoint", "dit"))


def _small_stage(base):
    """`steps` -> `base` (a stage continuing the shipped folder) made small: 16 scenes, batch 8,
    `steps` transformer steps from its start."""
    def recipe(steps: int):
        return dataclasses.replace(
            base, scenes=16, dit_batch=8, dit_steps=base.dit_start + steps,
            dit_schedule_steps=base.dit_start + 4, warmup=2, eval_every=1000,
            eval_per_category=1, gap_scenes=4, checkpoint_every=1000)
    return recipe


def _assert_the_runtime_draws_from(folder: Path) -> None:
    """A written folder loads through Linea's runtime and draws an image at its native size."""
    from runtime import Engine, GenerationRequest

    result = Engine(folder, device="cpu").generate(GenerationRequest("a red circle", seed=1),
                                                  previews=False)
    assert result.images[0].size == (256, 256)


def _exported(recipe, out: Path) -> Path:
    """The folder a run's checkpoint exports."""
    trainer = Trainer(recipe, out, torch.device("cpu"), math.inf, math.inf)
    trainer.load()
    return trainer.export()


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
                                 sampler_per_category=1, count_contrast=3.0)
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
        recipe.sampler_steps, best["guidance"], tuple(best["interval"]),
        build.contrast(3.0))
    assert identify(folder).family.guidance_interval == tuple(best["interval"])


def test_label_maps_mark_each_cell_with_the_shape_and_colour_covering_it():
    from models.tiny.render import label_maps
    from models.tiny.scenes import COLOURS, SHAPES, Background, PlacedObject, Scene

    plain = Background((0.1, 0.1, 0.1), (0.1, 0.1, 0.1))
    circle = PlacedObject("circle", "red", 0.25, 0.5, 0.125)  # 8 cells across at 32 x 32
    star = PlacedObject("star", "blue", 0.75, 0.25, 0.1)
    speck = PlacedObject("square", "green", 0.5, 0.9, 0.005)  # smaller than a cell
    late = PlacedObject("square", "pink", 0.3, 0.5, 0.05)  # drawn over the circle's right half
    maps = label_maps([Scene((circle, star, speck), plain), Scene((circle, late), plain)], 32)
    assert maps.shape == (2, 2, 32, 32) and maps.dtype == torch.int64
    shape_of = {name: SHAPES.index(name) + 1 for name in SHAPES}
    colour_of = {name: list(COLOURS).index(name) + 1 for name in COLOURS}
    first = maps[0]
    assert (first[0, 16, 8], first[1, 16, 8]) == (shape_of["circle"], colour_of["red"])
    assert (first[0, 8, 24], first[1, 8, 24]) == (shape_of["star"], colour_of["blue"])
    assert (first[0, 28, 16], first[1, 28, 16]) == (shape_of["square"], colour_of["green"])
    assert first[0, 2, 2] == first[1, 2, 2] == 0  # background
    circle_cells = int((first[0] == shape_of["circle"]).sum())
    assert abs(circle_cells - math.pi * 4**2) <= 6  # radius 4 cells
    star_cells = int((first[0] == shape_of["star"]).sum())
    assert 0 < star_cells < circle_cells * 0.6  # a star fills far less of its box than a disc
    # Painting order: the later square covers part of the circle.
    second = maps[1]
    assert (second[0, 16, 9], second[1, 16, 9]) == (shape_of["square"], colour_of["pink"])
    assert (second[0, 16, 5], second[1, 16, 5]) == (shape_of["circle"], colour_of["red"])


def test_the_auxiliary_loss_reads_tokens_in_the_transformers_patch_order():
    from models.tiny import build
    from models.tiny.scenes import COLOURS, SHAPES

    classes = len(SHAPES) + 1 + len(COLOURS) + 1
    patch, grid = build.PATCH_SIZE, 8
    gen = torch.Generator().manual_seed(0)
    labels = torch.stack([torch.randint(0, len(SHAPES) + 1, (2, 32, 32), generator=gen),
                          torch.randint(0, len(COLOURS) + 1, (2, 32, 32), generator=gen)], 1)
    one_hot = torch.cat([F.one_hot(labels[:, 0], len(SHAPES) + 1),
                         F.one_hot(labels[:, 1], len(COLOURS) + 1)], -1).float()  # B, H, W, C
    # Patchify as SanaTransformer2DModel's output is unpatchified: token (i, j) in row-major
    # order holds its (row-in-patch, column-in-patch, channel) values.
    tokens = one_hot.view(2, grid, patch, grid, patch, classes).permute(0, 1, 3, 2, 4, 5)
    hidden = 20 * tokens.reshape(2, grid * grid, patch * patch * classes)
    head = torch.nn.Linear(hidden.shape[-1], hidden.shape[-1])
    with torch.no_grad():
        head.weight.copy_(torch.eye(hidden.shape[-1]))
        head.bias.zero_()
    weight = torch.ones(2, 32, 32)
    right = Trainer._aux_loss(head, hidden, labels, weight)
    assert float(right) < 1e-3
    # The same logits read with the patch's rows and columns swapped score badly.
    wrong = Trainer._aux_loss(head, hidden, labels.transpose(-1, -2), weight)
    assert float(wrong) > 5


def test_the_auxiliary_head_trains_resumes_and_stays_out_of_the_shipped_folder(tmp_path):
    from diffusers import SanaTransformer2DModel

    def recipe(steps: int):
        return dataclasses.replace(
            RECIPES["cpu-aux"], scenes=12, dit_batch=4, dit_steps=RECIPES["cpu-aux"].dit_start
            + steps, dit_schedule_steps=RECIPES["cpu-aux"].dit_start + 4, warmup=2,
            eval_every=1000, eval_per_category=1, gap_scenes=4, checkpoint_every=1000,
            layers=SHIPPED_LAYERS)

    a, b = _unbroken_and_resumed(recipe, tmp_path)
    assert a.keys() == b.keys() and "aux.weight" in a
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert float(a["aux.weight"].abs().max()) > 0  # zero-initialised, then trained
    # The scenes' label maps are kept with the latents.
    scenes = checkpoint.load_tensors(tmp_path / "broken" / "checkpoint", "scenes")
    assert scenes["labels"].shape == (12, 2, 32, 32) and scenes["labels"].dtype == torch.uint8
    # Exported from the checkpoint, the folder holds SANA's transformer alone.
    folder = _exported(recipe(3), tmp_path / "broken")
    transformer = SanaTransformer2DModel.from_pretrained(folder / "transformer")
    assert not any("aux" in name for name in transformer.state_dict())


def test_a_stage_with_its_own_scenes_seed_trains_on_scenes_the_earlier_stages_never_drew(
        tmp_path):
    from models.tiny.split import training_examples

    def captions(examples):
        return [(e.caption, repr(e.scene)) for e in examples]

    earlier = _trainer(tmp_path / "earlier", 1)._examples()
    assert captions(earlier) == captions(training_examples(12, RECIPES["cpu-shift"].seed + 1))
    fresh_recipe = dataclasses.replace(_recipe(1), scenes_seed=RECIPES["cpu-fresh"].scenes_seed)
    fresh = Trainer(fresh_recipe, tmp_path / "fresh", torch.device("cpu"), math.inf,
                    math.inf)._examples()
    assert len(fresh) == 12
    before = RECIPES["cpu-aux-more"]  # the scenes every stage drew until then
    assert before.scenes_seed is None
    assert not set(captions(fresh)) & set(captions(training_examples(before.scenes,
                                                                     before.seed + 1)))


def test_encoded_scenes_are_reused_only_by_a_recipe_that_draws_the_same_scenes(tmp_path):
    first = _trainer(tmp_path / "run", 1)
    first.init_from(SHIPPED)
    latents = first.encode_scenes()[0]
    first.save()

    def resumed(recipe):
        trainer = Trainer(recipe, tmp_path / "run", torch.device("cpu"), math.inf, math.inf)
        trainer.load()
        again = trainer.encode_scenes()[0]
        return trainer.state["log"][-1].get("cached", False), again

    cached, again = resumed(_recipe(1))
    assert cached and torch.equal(again, latents)
    cached, again = resumed(dataclasses.replace(_recipe(1), scenes_seed=5))
    assert not cached and not torch.equal(again, latents)


def test_the_shipped_chain_continues_each_recipe_where_the_one_before_stopped():
    from models.tiny.train import AVERAGES, CHAINS

    chain = CHAINS["shipped"]
    names = [n for n in chain if n not in AVERAGES]
    assert RECIPES[names[0]].dit_start == 0
    for before, after in itertools.pairwise(names):
        assert RECIPES[after].dit_start == RECIPES[before].dit_steps, (before, after)
    # An averaged folder's members are written earlier in the same chain.
    for position, name in enumerate(chain):
        if name in AVERAGES:
            assert set(AVERAGES[name]) <= set(chain[:position]), name


def test_one_chain_command_runs_the_stages_in_order_and_a_rerun_resumes_it(tmp_path, monkeypatch):
    import pytest
    from safetensors.torch import load_file, save_file

    from models.tiny import train
    from runtime import identify

    first = dataclasses.replace(
        RECIPES["cpu"], ae_steps=2, ae_schedule_steps=0, ae_batch=2, ae_crop=32,
        ae_eval_every=1000, ae_check_per_category=1, scenes=8, dit_steps=2, dit_schedule_steps=0,
        dit_batch=4, warmup=1, eval_every=1000, eval_per_category=1, gap_scenes=2,
        checkpoint_every=1000, guidances=(3.0,), sampler_steps=2, sampler_per_category=1)
    second = dataclasses.replace(first, scenes_seed=5, dit_start=2, dit_steps=4, aux_weight=0.25)
    monkeypatch.setitem(train.RECIPES, "tiny-a", first)
    monkeypatch.setitem(train.RECIPES, "tiny-b", second)
    out = tmp_path / "chain"
    cpu = torch.device("cpu")

    # Stopped after its first recipe (here: a chain of that one alone) ...
    assert train.run_chain(("tiny-a",), out, cpu) == out / "tiny-a" / "linea-tiny"
    a_state = (out / "tiny-a" / "checkpoint" / "state.json").read_text()
    # ... a chain that has run out of time stops at the next recipe and says so ...
    assert train.run_chain(("tiny-a", "tiny-b"), out, cpu, max_seconds=0) is None
    # ... and the same command again skips what is done and runs the rest.
    folder = train.run_chain(("tiny-a", "tiny-b"), out, cpu)
    assert folder == out / "tiny-b" / "linea-tiny"
    assert (out / "tiny-a" / "checkpoint" / "state.json").read_text() == a_state
    state = checkpoint.load_state(out / "tiny-b" / "checkpoint")
    assert state["init_from"] == str(out / "tiny-a" / "linea-tiny")
    assert state["dit_step"] == 4 and state["stage"] == "done"
    assert identify(folder).family.default_steps == 2

    # The same as the two commands by hand: the second recipe started from the first's folder.
    by_hand = Trainer(second, tmp_path / "by-hand", cpu, math.inf, math.inf)
    by_hand.init_from(out / "tiny-a" / "linea-tiny")
    assert train.run_stages(by_hand, resume=False) == "done"
    a = checkpoint.load_tensors(out / "tiny-b" / "checkpoint", "ema")
    b = checkpoint.load_tensors(tmp_path / "by-hand" / "checkpoint", "ema")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    # A name in AVERAGES after them: the chain skips both recipes and writes their folders' mean.
    monkeypatch.setitem(train.AVERAGES, "tiny-a+b", ("tiny-a", "tiny-b"))
    mean_folder = train.run_chain(("tiny-a", "tiny-b", "tiny-a+b"), out, cpu)
    assert mean_folder == out / "tiny-a+b" / "linea-tiny"
    assert not (out / "tiny-a+b" / "linea-tiny.partial").exists()
    assert (out / "tiny-a" / "checkpoint" / "state.json").read_text() == a_state
    file = Path("transformer") / "diffusion_pytorch_model.safetensors"
    a, b, mean = (load_file(out / name / "linea-tiny" / file)
                  for name in ("tiny-a", "tiny-b", "tiny-a+b"))
    assert mean.keys() == a.keys()
    changed = 0
    for key, tensor in mean.items():
        assert tensor.dtype == a[key].dtype
        expected = ((a[key].float() + b[key].float()) / 2).to(tensor.dtype)
        assert torch.equal(tensor, expected), key
        changed += not torch.equal(a[key], b[key])
    assert changed > 0  # the two stages differ, so the mean is neither of them
    assert identify(mean_folder).family.default_steps == 2  # a model folder the runtime takes

    # A rerun keeps the mean's folder; members of different architectures are refused.
    before = (mean_folder / file).stat().st_mtime_ns
    assert train.run_chain(("tiny-a", "tiny-b", "tiny-a+b"), out, cpu) == mean_folder
    assert (mean_folder / file).stat().st_mtime_ns == before
    save_file(dict(list(b.items())[1:]), out / "tiny-b" / "linea-tiny" / file)
    with pytest.raises(ValueError, match="not one architecture"):
        train.average_folders([out / "tiny-a" / "linea-tiny", out / "tiny-b" / "linea-tiny"],
                              tmp_path / "refused")
    assert not (tmp_path / "refused").exists()
    assert not (tmp_path / "refused.partial").exists()


def test_a_chain_command_refuses_single_recipe_options(capsys):
    import pytest

    from models.tiny import train

    with pytest.raises(SystemExit) as exit_info:
        train.main(["--device", "cpu", "--chain", "shipped", "--recipe", "cpu", "--dit-steps", "9"])
    assert exit_info.value.code == 2
    assert "drop --recipe, --dit-steps" in capsys.readouterr().err


def test_a_deeper_recipe_grows_the_folder_it_starts_from_without_changing_what_it_draws(tmp_path):
    from diffusers import SanaTransformer2DModel

    from models.tiny import build
    from models.tiny.train import grow_blocks

    # An 8-block folder (the depth cpu-deep12 grew): the shipped one with a seeded 8-block
    # transformer in place of its own.
    eight = tmp_path / "eight"
    shutil.copytree(SHIPPED, eight)
    shutil.rmtree(eight / "transformer")
    torch.manual_seed(0)
    build.build_transformer(8).save_pretrained(eight / "transformer", safe_serialization=True)
    deep = RECIPES["cpu-deep12"]
    recipe = dataclasses.replace(
        deep, scenes=12, dit_batch=4, dit_steps=deep.dit_start + 2,
        dit_schedule_steps=deep.dit_start + 4, warmup=1, eval_every=1000, eval_per_category=1,
        gap_scenes=4, checkpoint_every=1000)
    trainer = Trainer(recipe, tmp_path / "deep", torch.device("cpu"), math.inf, math.inf)
    trainer.init_from(eight)
    shipped = SanaTransformer2DModel.from_pretrained(eight / "transformer").float().eval()
    grown = trainer.transformer.eval()
    assert (len(shipped.transformer_blocks), len(grown.transformer_blocks)) == (8, 12)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 32, 32, generator=gen)
    caption = torch.randn(2, 6, 128, generator=gen)
    kwargs = dict(encoder_hidden_states=caption, encoder_attention_mask=torch.ones(2, 6),
                  timestep=torch.tensor([300.0, 900.0]))
    with torch.no_grad():
        expected = shipped(x, **kwargs).sample
        assert torch.allclose(grown(x, **kwargs).sample, expected, atol=1e-5)
    # The new blocks (2, 5, 8, 11) start with zeroed outputs; training moves them.
    new_block = grown.transformer_blocks[2]
    assert float(new_block.attn1.to_out[0].weight.abs().max()) == 0
    trainer.train_transformer(resume=False)
    assert float(new_block.attn1.to_out[0].weight.abs().max()) > 0
    assert float(new_block.ff.conv_point.weight.abs().max()) > 0
    # Resumed and exported at its own depth.
    again = Trainer(recipe, tmp_path / "deep", torch.device("cpu"), math.inf, math.inf)
    again.load()
    folder = again.export()
    exported = SanaTransformer2DModel.from_pretrained(folder / "transformer")
    assert exported.config.num_layers == 12
    # A folder deeper than the recipe is refused, not cut.
    weights = dict(shipped.state_dict())
    with pytest.raises(SystemExit, match="8 blocks, more than the recipe's 6"):
        grow_blocks(weights, 6)
    assert grow_blocks(weights, 8) is weights


def test_the_gpu_recipe_from_scratch_builds_the_shipped_folders_transformer_on_8_channels(
        tmp_path):
    # A folder the GPU recipe writes replaces the shipped one: same depth, same config, but for
    # the latent channels (8: its autoencoder keeps small shapes better).
    recipe = RECIPES["cuda"]
    assert recipe.dit_start == 0 and recipe.latent_channels == 8
    trainer = Trainer(recipe, tmp_path / "gpu", torch.device("cpu"), math.inf, math.inf)
    # Every setting the folder's config.json holds (tuples written as lists, as there).
    built = json.loads(json.dumps(dict(trainer.transformer.config)))
    public = {k: v for k, v in SHIPPED_TRANSFORMER.items() if not k.startswith("_")}
    assert {k: built.get(k) for k in public} == {**public, "in_channels": 8, "out_channels": 8}
    assert trainer.vae.config.latent_channels == 8
    # Its label-map head reads a block inside the transformer.
    assert 0 <= recipe.aux_block < len(trainer.transformer.transformer_blocks)


def test_a_recipe_with_8_latent_channels_trains_from_scratch_into_a_folder_the_runtime_runs(
        tmp_path):
    from models.tiny import train

    recipe = dataclasses.replace(
        RECIPES["cpu"], ae_steps=2, ae_schedule_steps=0, ae_batch=2, ae_crop=32,
        ae_eval_every=1000, ae_check_per_category=1, scenes=8, dit_steps=2, dit_schedule_steps=0,
        dit_batch=4, warmup=1, eval_every=1000, eval_per_category=1, gap_scenes=2,
        checkpoint_every=1000, guidances=(3.0,), sampler_steps=2, sampler_per_category=1,
        aux_weight=0.25, latent_channels=8)
    trainer = Trainer(recipe, tmp_path / "eight", torch.device("cpu"), math.inf, math.inf)
    assert train.run_stages(trainer, resume=False) == "done"
    folder = trainer.export()
    vae = json.loads((folder / "vae" / "config.json").read_text())
    transformer = json.loads((folder / "transformer" / "config.json").read_text())
    assert vae["latent_channels"] == 8
    assert transformer["in_channels"] == transformer["out_channels"] == 8
    _assert_the_runtime_draws_from(folder)
    # A stage cannot continue a folder of another latent count: a clear stop, nothing loaded.
    four = Trainer(_recipe(1), tmp_path / "four", torch.device("cpu"), math.inf, math.inf)
    with pytest.raises(SystemExit, match="8 latent channels, this recipe 4"):
        four.init_from(folder)
    assert four.state["stage"] == "ae"


def test_relation_targets_name_each_captions_relation_from_its_relation_word_on():
    from models.tiny import build
    from models.tiny.train import relation_targets

    tokenizer = build.build_tokenizer()
    captions = ["a red circle to the left of a blue square", "a star over two hearts",
                "three green crosses", "a heart beneath a diamond on a dark background", ""]
    tokens = tokenizer(captions, padding="max_length", max_length=build.MAX_CAPTION_TOKENS,
                       return_tensors="pt")
    relation, after = relation_targets(tokens.input_ids, tokenizer)
    assert relation[:2].tolist() == [0, 2] and relation[3] == 3  # left of, above, below
    words = [tokenizer.convert_ids_to_tokens(row[mask]) for row, mask in
             zip(tokens.input_ids, after, strict=True)]
    assert words[0] == ["left", "of", "a", "blue", "square"]
    assert words[1] == ["over", "two", "hearts"]
    assert words[2] == [] and words[4] == []  # no relation, and the empty caption
    assert words[3][0] == "beneath" and words[3][-1] == "background"


@pytest.mark.parametrize(("name", "probe"), [("cpu-deep12-rel", "relation"),
                                             ("cpu-deep12-cnt", "count")])
def test_a_text_encoder_probe_trains_resumes_and_stays_out_of_the_shipped_folder(
        tmp_path, name, probe):
    from diffusers import SanaTransformer2DModel
    from transformers import Gemma2Model

    recipe = _small_stage(RECIPES[name])
    a, b = _unbroken_and_resumed(recipe, tmp_path)
    assert a.keys() == b.keys() and f"{probe}.weight" in a
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert float(a[f"{probe}.weight"].abs().max()) > 0  # zero-initialised, then trained
    folder = _exported(recipe(3), tmp_path / "broken")
    text_encoder = Gemma2Model.from_pretrained(folder / "text_encoder")
    transformer = SanaTransformer2DModel.from_pretrained(folder / "transformer")
    assert not any(probe in n for n in [*text_encoder.state_dict(),
                                        *transformer.state_dict()])


def test_encoded_scenes_are_adopted_only_from_a_run_with_the_same_scenes_and_autoencoder(
        tmp_path):
    donor = _trainer(tmp_path / "donor", 1)
    donor.init_from(SHIPPED)
    latents = donor.encode_scenes()[0]
    donor.save()

    adopter = _trainer(tmp_path / "adopter", 1)
    adopter.init_from(SHIPPED)
    adopter.adopt_scenes(tmp_path / "donor")
    assert torch.equal(adopter.encode_scenes()[0], latents)
    assert adopter.state["log"][-1].get("cached") is True

    other_scenes = Trainer(dataclasses.replace(_recipe(1), scenes_seed=5), tmp_path / "seed5",
                           torch.device("cpu"), math.inf, math.inf)
    other_scenes.init_from(SHIPPED)
    with pytest.raises(SystemExit, match="this recipe draws"):
        other_scenes.adopt_scenes(tmp_path / "donor")
    other_vae = _trainer(tmp_path / "other_vae", 1)
    other_vae.init_from(SHIPPED)
    with torch.no_grad():
        next(other_vae.vae.parameters()).add_(1e-3)
    with pytest.raises(SystemExit, match="another autoencoder"):
        other_vae.adopt_scenes(tmp_path / "donor")
    with pytest.raises(SystemExit, match="holds no encoded scenes"):
        other_vae.adopt_scenes(tmp_path / "nowhere")
    assert not checkpoint.has_tensors(tmp_path / "other_vae" / "checkpoint", "scenes")


def test_relation_rows_give_the_batchs_first_share_to_relation_scenes_at_high_noise():
    recipe = dataclasses.replace(RECIPES["cpu-deep12-pos"], dit_batch=8)
    related = torch.tensor([3, 5, 11])
    pick = torch.arange(100, 108)
    sigma = torch.full((8,), 0.3)

    def rows(seed: int):
        gen = torch.Generator().manual_seed(seed)
        return Trainer._relation_rows(recipe, gen, related, pick, sigma)

    new_pick, new_sigma = rows(0)
    k = round(recipe.relation_share * 8)
    assert k == 2
    assert set(new_pick[:k].tolist()) <= {3, 5, 11} and torch.equal(new_pick[k:], pick[k:])
    assert bool((new_sigma[:k] >= recipe.relation_noise).all() and (new_sigma[:k] <= 1).all())
    assert torch.equal(new_sigma[k:], sigma[k:])
    same_pick, same_sigma = rows(0)
    assert torch.equal(new_pick, same_pick) and torch.equal(new_sigma, same_sigma)
    # Many draws cover every relation scene and spread over the high noise levels.
    gen = torch.Generator().manual_seed(1)
    drawn = [Trainer._relation_rows(recipe, gen, related, pick, sigma) for _ in range(50)]
    assert set(torch.cat([p[:k] for p, _ in drawn]).tolist()) == {3, 5, 11}
    levels = torch.cat([s[:k] for _, s in drawn])
    assert float(levels.min()) < recipe.relation_noise + 0.03 and float(levels.max()) > 0.97


def _rows_of_16(name: str):
    """Recipe `name` with a batch of 16, relation scenes 3, 5 and 11 among 40 scenes, the batch's
    usual rows (scenes 100-115 at noise 0.3) and a seeded generator."""
    recipe = dataclasses.replace(RECIPES[name], dit_batch=16)
    return (recipe, torch.tensor([3, 5, 11]), torch.arange(40), torch.arange(100, 116),
            torch.full((16,), 0.3), torch.Generator().manual_seed(0))


def test_layout_rows_follow_the_relation_rows_with_scenes_of_every_kind_at_high_noise():
    recipe, related, scenes, pick, sigma, gen = _rows_of_16("cpu-deep12-lay")
    rel_pick, rel_sigma = Trainer._relation_rows(recipe, gen, related, pick, sigma)
    new_pick, new_sigma = Trainer._layout_rows(recipe, gen, scenes, rel_pick, rel_sigma)
    k = round(recipe.relation_share * 16)
    end = k + round(recipe.layout_share * 16)
    assert (k, end) == (2, 6)
    # The relation rows and the usual rows after the layout rows are kept as they were.
    assert torch.equal(new_pick[:k], rel_pick[:k]) and torch.equal(new_sigma[:k], rel_sigma[:k])
    assert torch.equal(new_pick[end:], pick[end:]) and torch.equal(new_sigma[end:], sigma[end:])
    assert bool(((new_pick[k:end] >= 0) & (new_pick[k:end] < 40)).all())
    layout = new_sigma[k:end]
    assert bool(((layout >= recipe.relation_noise) & (layout <= 1)).all())
    # Over many draws the layout rows reach every scene, not only relation scenes.
    drawn = [Trainer._layout_rows(recipe, gen, scenes, pick, sigma) for _ in range(100)]
    assert set(torch.cat([p[k:end] for p, _ in drawn]).tolist()) == set(range(40))
    # A share that would run past the batch stops at its end.
    over = dataclasses.replace(recipe, relation_share=0.75, layout_share=0.5)
    full_pick, full_sigma = Trainer._layout_rows(over, gen, scenes, pick, sigma)
    assert len(full_pick) == 16 and torch.equal(full_pick[:12], pick[:12])
    assert bool((full_sigma[12:] >= recipe.relation_noise).all())


@pytest.mark.parametrize("name", ["cpu-deep12-pos", "cpu-deep12-lay", "cpu-deep12-cnt"])
def test_a_stage_with_high_noise_shares_trains_and_resumes_bit_identically(tmp_path, name):
    recipe = _small_stage(RECIPES[name])
    a, b = _unbroken_and_resumed(recipe, tmp_path)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    shipped = Trainer(recipe(0), tmp_path / "shipped", torch.device("cpu"), math.inf, math.inf)
    shipped.init_from(SHIPPED)
    moved = [k for k, v in shipped.transformer.state_dict().items()
             if not torch.equal(v.float(), a["transformer." + k].float())]
    assert moved  # the three steps changed the transformer


def test_count_targets_name_each_tokens_count_from_its_number_word_to_the_next():
    from models.tiny import build
    from models.tiny.train import count_targets

    tokenizer = build.build_tokenizer()
    captions = ["two red stars and three hearts", "a pair of blue squares", "a red circle",
                "one cyan cross left of four stars on a dark background", ""]
    tokens = tokenizer(captions, padding="max_length", max_length=build.MAX_CAPTION_TOKENS,
                       return_tensors="pt")
    count, where = count_targets(tokens.input_ids, tokenizer)
    named = [list(zip(tokenizer.convert_ids_to_tokens(row[mask]), (c[mask] + 1).tolist(),
                      strict=True))
             for row, c, mask in zip(tokens.input_ids, count, where, strict=True)]
    assert named[0] == [("two", 2), ("red", 2), ("stars", 2), ("and", 2), ("three", 3),
                        ("hearts", 3)]
    assert named[1] == [("pair", 2), ("of", 2), ("blue", 2), ("squares", 2)]
    assert named[2] == [] and named[4] == []  # no number word, and the empty caption
    assert named[3][:3] == [("one", 1), ("cyan", 1), ("cross", 1)]
    assert ("four", 4) in named[3] and named[3][-1] == ("background", 4)
    assert int(count[~where].abs().sum()) == 0  # no target outside the mask


def test_count_rows_follow_the_layout_rows_with_scenes_of_several_objects_at_high_noise():
    recipe, related, scenes, pick, sigma, gen = _rows_of_16("cpu-deep12-cnt")
    several = torch.tensor([7, 20])
    rel_pick, rel_sigma = Trainer._relation_rows(recipe, gen, related, pick, sigma)
    lay_pick, lay_sigma = Trainer._layout_rows(recipe, gen, scenes, rel_pick, rel_sigma)
    new_pick, new_sigma = Trainer._count_rows(recipe, gen, several, lay_pick, lay_sigma)
    start = round(recipe.relation_share * 16) + round(recipe.layout_share * 16)
    end = start + round(recipe.count_share * 16)
    assert (start, end) == (4, 6)
    # The rows before (relation, layout) and the usual rows after are kept as they were.
    assert torch.equal(new_pick[:start], lay_pick[:start])
    assert torch.equal(new_sigma[:start], lay_sigma[:start])
    assert torch.equal(new_pick[end:], pick[end:]) and torch.equal(new_sigma[end:], sigma[end:])
    assert set(new_pick[start:end].tolist()) <= {7, 20}
    assert bool(((new_sigma[start:end] >= recipe.relation_noise)
                 & (new_sigma[start:end] <= 1)).all())
    drawn = [Trainer._count_rows(recipe, gen, several, pick, sigma) for _ in range(30)]
    assert set(torch.cat([p[start:end] for p, _ in drawn]).tolist()) == {7, 20}
    # A share that would run past the batch stops at its end.
    over = dataclasses.replace(recipe, relation_share=0.5, layout_share=0.375, count_share=0.5)
    full_pick, full_sigma = Trainer._count_rows(over, gen, several, pick, sigma)
    assert len(full_pick) == 16 and torch.equal(full_pick[:14], pick[:14])
    assert set(full_pick[14:].tolist()) <= {7, 20}
    assert bool((full_sigma[14:] >= recipe.relation_noise).all())


# Scenes seed 5 draws no relation in its first three scenes, and no count of two or more in its
# first five ("one pink cross" is one; the fifth is a relation scene, so only the count is missing).
@pytest.mark.parametrize(("name", "scenes", "message"), [
    ("cpu-deep12-pos", 3, "none of the recipe's 3 scenes names a relation"),
    ("cpu-deep12-cnt", 5, "none of the recipe's 5 scenes names two or more of a shape"),
])
def test_a_high_noise_share_without_its_scenes_stops_with_a_clear_error(tmp_path, name, scenes,
                                                                        message):
    recipe = dataclasses.replace(_small_stage(RECIPES[name])(3), scenes=scenes, scenes_seed=5)
    trainer = Trainer(recipe, tmp_path / "run", torch.device("cpu"), math.inf, math.inf)
    trainer.init_from(SHIPPED)
    with pytest.raises(SystemExit, match=message):
        trainer.train_transformer(resume=False)
    assert not checkpoint.has_tensors(tmp_path / "run" / "checkpoint", "dit")


def test_a_wider_recipe_widens_the_folder_it_starts_from_without_changing_what_it_draws(
        tmp_path):
    from diffusers import AutoencoderDC, SanaTransformer2DModel

    from models.tiny import train

    wide = RECIPES["cpu-deep12-wide"]
    assert wide.latent_channels == 8 and wide.ae_anchor > 0
    recipe = dataclasses.replace(
        wide, ae_steps=2, ae_batch=2, ae_crop=32, ae_eval_every=1000, ae_check_per_category=1,
        scenes=8, dit_batch=4, dit_steps=wide.dit_start + 2, dit_schedule_steps=0, warmup=1,
        eval_every=1000, eval_per_category=1, gap_scenes=2, checkpoint_every=1,
        sampler_steps=2, sampler_per_category=1)
    trainer = Trainer(recipe, tmp_path / "wide", torch.device("cpu"), math.inf, math.inf)
    trainer.init_from(SHIPPED)
    assert trainer.state["stage"] == "ae" and trainer.state["widened_from"] == 4
    vae = AutoencoderDC.from_pretrained(SHIPPED / "vae").float().eval()
    shipped = SanaTransformer2DModel.from_pretrained(SHIPPED / "transformer").float().eval()
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, 64, 64, generator=gen) * 2 - 1
    with torch.no_grad():
        before = vae.encode(images).latent
        after = trainer.vae.eval().encode(images).latent
        assert after.shape[1] == 8
        assert torch.allclose(after[:, :4], before, atol=1e-4)
        # The decoder reads the first channels as the folder's did, whatever the new ones hold.
        anything = torch.cat([before, 5 * torch.randn(2, 4, 8, 8, generator=gen)], 1)
        assert torch.allclose(trainer.vae.decode(anything).sample, vae.decode(before).sample,
                              atol=1e-4)
        # The transformer predicts the first channels as the folder's did and 0 for the new.
        x = torch.randn(2, 8, 32, 32, generator=gen)
        kwargs = dict(encoder_hidden_states=torch.randn(2, 6, 128, generator=gen),
                      encoder_attention_mask=torch.ones(2, 6),
                      timestep=torch.tensor([300.0, 900.0]))
        out = trainer.transformer.eval()(x, **kwargs).sample
        assert torch.allclose(out[:, :4], shipped(x[:, :4], **kwargs).sample, atol=1e-5)
        assert float(out[:, 4:].abs().max()) == 0
    # The autoencoder stage, then a stop; resumed, the run goes on to a folder the runtime
    # generates from.
    assert train.run_stages(trainer, resume=False, ae_only=True) == "dit"
    drifts = [e["drift"] for e in trainer.state["log"] if e.get("stage") == "ae"]
    assert drifts and all(0 <= d < 1 for d in drifts)
    resumed = Trainer(recipe, tmp_path / "wide", torch.device("cpu"), math.inf, math.inf)
    resumed.load()
    assert train.run_stages(resumed, resume=True) == "done"
    folder = tmp_path / "wide" / "linea-tiny"
    assert json.loads((folder / "vae" / "config.json").read_text())["latent_channels"] == 8
    _assert_the_runtime_draws_from(folder)
    # Widening only goes to a multiple of the folder's count.
    six = Trainer(dataclasses.replace(recipe, latent_channels=6), tmp_path / "six",
                  torch.device("cpu"), math.inf, math.inf)
    with pytest.raises(SystemExit, match="4 latent channels, this recipe 6"):
        six.init_from(SHIPPED)
    with pytest.raises(ValueError, match="cannot widen 4 latent channels to 6"):
        train.widen_autoencoder(vae, 6, gen)


def test_a_widened_run_stopped_in_its_autoencoder_stage_needs_the_folder_it_widened(tmp_path):
    wide = RECIPES["cpu-deep12-wide"]
    recipe = dataclasses.replace(wide, ae_steps=4, ae_batch=2, ae_crop=32, ae_eval_every=1000,
                                 checkpoint_every=1)
    folder = tmp_path / "folder"
    shutil.copytree(SHIPPED, folder)
    trainer = Trainer(recipe, tmp_path / "run", torch.device("cpu"), math.inf, math.inf)
    trainer.init_from(folder)
    trainer.deadline = 0  # out of time at once: checkpointed at step 0 of the autoencoder
    trainer.train_autoencoder(resume=False)
    assert trainer.state["stage"] == "ae"
    resumed = Trainer(recipe, tmp_path / "run", torch.device("cpu"), math.inf, math.inf)
    resumed.load()
    assert resumed.anchor is not None  # the folder's autoencoder anchors the rest of the stage
    assert torch.equal(resumed.anchor.encoder.conv_out.weight,
                       trainer.anchor.encoder.conv_out.weight)
    shutil.rmtree(folder)
    again = Trainer(recipe, tmp_path / "run", torch.device("cpu"), math.inf, math.inf)
    with pytest.raises(SystemExit, match="which is gone"):
        again.load()


def test_smoothing_brings_the_widened_channels_roughness_down_to_the_old_channels(tmp_path):
    from models.tiny import train

    smooth = RECIPES["cpu-deep12-smooth"]
    assert smooth.ae_smooth > 0 and smooth.ae_anchor > 0 and smooth.latent_channels == 8
    gen = torch.Generator().manual_seed(3)
    # The measure: 0 for a field constant over the cells, about 1 for independent cells.
    flat = torch.randn(64, 8, 1, 1, generator=gen).expand(64, 8, 6, 6)
    noise = torch.randn(64, 8, 6, 6, generator=gen)
    assert torch.allclose(Trainer._roughness(flat), torch.zeros(8), atol=1e-6)
    assert torch.allclose(Trainer._roughness(noise), torch.ones(8), atol=0.15)

    def widened(weight: float):
        recipe = dataclasses.replace(
            smooth, ae_smooth=weight, ae_steps=12, ae_batch=8, ae_crop=64, warmup=1,
            ae_eval_every=1000, ae_check_per_category=1, checkpoint_every=1000)
        run = Trainer(recipe, tmp_path / str(weight), torch.device("cpu"), math.inf, math.inf)
        run.init_from(SHIPPED)
        # New channels rough from the start: the encoder's last convolution's rows for them
        # replaced by noise, the same in both runs.
        with torch.no_grad():
            rows = run.vae.encoder.conv_out.weight[4:]
            rows.copy_(torch.randn(rows.shape, generator=torch.Generator().manual_seed(5)))
        run.check_autoencoder = lambda step: {}  # the held-out check is not what this reads
        return run

    # Only new channels rougher than the old ones' mean count.
    probe = widened(1.0)
    excess, rough = probe._excess_roughness(torch.cat([flat[:, :4], noise[:, 4:]], 1))
    assert float(excess) == pytest.approx(1, abs=0.15) and float(rough) == float(excess)
    assert float(probe._excess_roughness(torch.cat([noise[:, :4], flat[:, 4:]], 1))[0]) == 0
    crops, whole = probe._ae_crops(torch.Generator().manual_seed(11))
    assert whole.shape == (train.SMOOTH_SCENES, 3, 256, 256) and crops.shape[-1] == 64
    measured = {}
    for weight in (0.0, 10.0):
        run = widened(weight)
        with torch.no_grad():
            before = float(run._excess_roughness(run.vae.eval().encode(whole).latent)[0])
        run.vae.train()
        run.train_autoencoder(resume=False)
        assert run.state["stage"] == "dit"
        with torch.no_grad():
            measured[weight] = float(run._excess_roughness(run.vae.eval().encode(whole).latent)[0])
        logged = [e for e in run.state["log"] if e.get("stage") == "ae"]
        assert logged and all(("excess" in e) == (weight > 0) for e in logged)
    assert before > 0.1
    assert measured[10.0] < 0.5 * measured[0.0], measured
    # Only a widened run has new channels to smooth.
    same = Trainer(dataclasses.replace(smooth, latent_channels=4, ae_steps=1), tmp_path / "same",
                   torch.device("cpu"), math.inf, math.inf)
    with pytest.raises(SystemExit, match="ae_smooth smooths the latent channels"):
        same.train_autoencoder(resume=False)


def test_balancing_rescales_the_new_latent_channels_to_the_old_ones_spread_and_draws_the_same(
        tmp_path):
    from models.tiny import train

    # An 8-channel folder: the shipped one widened and written as it starts.
    widening = Trainer(dataclasses.replace(RECIPES["cpu-deep12-wide"], ae_steps=0),
                       tmp_path / "widen", torch.device("cpu"), math.inf, math.inf)
    widening.init_from(SHIPPED)
    widening.ema = torch.nn.ModuleDict({"text_encoder": widening.text_encoder,
                                        "transformer": widening.transformer})
    folder = widening.export()
    bal = RECIPES["cpu-deep12-wide-bal"]
    assert bal.balance_channels == 4 and bal.latent_channels == 8
    recipe = dataclasses.replace(
        bal, scenes=8, dit_batch=4, dit_steps=bal.dit_start + 2, dit_schedule_steps=0, warmup=1,
        eval_every=1000, eval_per_category=1, gap_scenes=2, checkpoint_every=1000,
        sampler_steps=2, sampler_per_category=1)
    trainer = Trainer(recipe, tmp_path / "bal", torch.device("cpu"), math.inf, math.inf)
    trainer.init_from(folder)
    factors = torch.tensor([e for e in trainer.state["log"] if e.get("stage") == "balance"][-1][
        "factors"])
    assert torch.equal(factors[:4], torch.ones(4))
    assert bool((factors[4:] > 1.5).all())  # the widened channels started at a tenth
    # Measured again on the same scenes, the balanced channels spread like the old ones.
    again = trainer._balance(4)
    assert torch.allclose(again, torch.ones(8), atol=1e-3), again
    # Same images: the balanced latents are the folder's scaled, and decode to the same.
    written = trainer._folder_vae(folder, 8)
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, 64, 64, generator=gen) * 2 - 1
    with torch.no_grad():
        before = written.encode(images).latent
        after = trainer.vae.eval().encode(images).latent
        assert torch.allclose(after, before * factors[None, :, None, None], atol=1e-4)
        assert torch.allclose(trainer.vae.decode(after).sample, written.decode(before).sample,
                              atol=1e-4)
    assert train.run_stages(trainer, resume=False) == "done"
    _assert_the_runtime_draws_from(tmp_path / "bal" / "linea-tiny")
    # Every channel balanced leaves none to match: a clear stop.
    every = Trainer(dataclasses.replace(recipe, balance_channels=8), tmp_path / "every",
                    torch.device("cpu"), math.inf, math.inf)
    with pytest.raises(SystemExit, match="balance_channels=8: give fewer than"):
        every.init_from(folder)
    with pytest.raises(ValueError, match="give 8 positive factors"):
        train.balance_autoencoder(trainer.vae, torch.tensor([1.0, -1.0] * 4))


def test_a_killed_run_keeps_the_seconds_its_checkpointed_steps_took(tmp_path):
    recipe = dataclasses.replace(_recipe(2), checkpoint_every=1, eval_every=2)
    trainer = Trainer(recipe, tmp_path, torch.device("cpu"), math.inf, math.inf)
    trainer.init_from(SHIPPED)

    def killed(step):
        raise KeyboardInterrupt  # the run dies after its first step's checkpoint

    trainer.evaluate = killed
    with pytest.raises(KeyboardInterrupt):
        trainer.train_transformer(resume=False)
    state = checkpoint.load_state(tmp_path / "checkpoint")
    assert state["dit_step"] == START + 1
    assert state["seconds"]["dit"] > 0
