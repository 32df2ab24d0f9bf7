"""The tiny model: its parts, its folder, its checkpoints, and the shipped weights' quality."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from models.tiny import build, checkpoint, quality

SHIPPED = Path(__file__).resolve().parent.parent / "assets" / "models" / "linea-tiny"
MAX_SHIPPED_BYTES = 30 * 1024 * 1024


def test_tokenizer_pads_with_zero_and_prepends_bos():
    tokenizer = build.build_tokenizer()
    encoded = tokenizer(["a red circle", ""], padding="max_length", max_length=8)
    assert tokenizer.pad_token_id == 0
    assert encoded.input_ids[0][:1] == [tokenizer.bos_token_id]
    assert encoded.input_ids[0][4:] == [0, 0, 0, 0]
    assert encoded.attention_mask[1] == [1, 0, 0, 0, 0, 0, 0, 0]
    assert tokenizer.unk_token_id not in encoded.input_ids[0]
    assert build.build_tokenizer().get_vocab() == tokenizer.get_vocab()


def test_folder_loads_and_generates_through_diffusers(tmp_path):
    from diffusers import SanaPipeline

    torch.manual_seed(0)
    tokenizer = build.build_tokenizer()
    folder = build.save_folder(
        tmp_path / "tiny", tokenizer, build.build_text_encoder(len(tokenizer)),
        build.build_transformer(), build.build_vae(), flow_shift=2.0, steps=2, guidance=4.5,
    )
    linea = json.loads((folder / "linea.json").read_text())
    assert linea["family"] == "linea-tiny" and linea["complex_human_instruction"] is False
    assert linea["native_size"] == 256
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "SanaPipeline"
    assert not list(folder.rglob("*.bin")) and list(folder.rglob("*.safetensors"))
    pipe = SanaPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    images = quality.generate(pipe, ["a red circle"], [0], quality.Sampler(2, 4.5))
    assert images[0].shape == (256, 256, 3)


def test_guidance_interval_is_written_and_both_sampling_paths_follow_it(tmp_path):
    """A folder that guides only noise levels 0.2-0.8: the runtime (reading linea.json) and the
    evaluation's module path give the same images, unlike guidance at every step."""
    from diffusers import SanaPipeline

    from runtime import Engine

    torch.manual_seed(0)
    tokenizer = build.build_tokenizer()
    folder = build.save_folder(
        tmp_path / "tiny", tokenizer, build.build_text_encoder(len(tokenizer)),
        build.build_transformer(), build.build_vae(), flow_shift=2.0, steps=6, guidance=4.5,
        guidance_interval=(0.2, 0.8))
    sampler = quality.Sampler.of_folder(folder)
    assert sampler == quality.Sampler(6, 4.5, (0.2, 0.8))
    engine = Engine(folder, device="cpu", precision="fp32", quantize_text_encoder=False)
    assert engine.family.guidance_interval == (0.2, 0.8)
    pipe = SanaPipeline.from_pretrained(folder, torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    prompts, seeds = ["a red circle", "two blue stars"], [3, 4]
    ours = quality.generate(engine, prompts, seeds, sampler)
    modules = quality.generate(pipe, prompts, seeds, sampler)
    everywhere = quality.generate(pipe, prompts, seeds, quality.Sampler(6, 4.5))
    for a, b, c in zip(ours, modules, everywhere, strict=True):
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 1
        assert np.abs(a.astype(int) - c.astype(int)).max() > 1
    with pytest.raises(ValueError, match=r"linea\.json"):
        quality.generate(engine, prompts, seeds, quality.Sampler(6, 4.5))
    # Loaded in the folder's own dtypes (bf16 text encoder, fp16 transformer) the module path
    # still runs: the caption is cast to the transformer's dtype, as SanaPipeline does.
    native = SanaPipeline.from_pretrained(folder)
    native.set_progress_bar_config(disable=True)
    assert native.text_encoder.dtype == torch.bfloat16
    half = quality.generate(native, prompts[:1], seeds[:1], sampler)
    assert np.abs(half[0].astype(int) - ours[0].astype(int)).mean() < 2


def test_contrast_guidance_is_written_and_both_sampling_paths_follow_it(tmp_path):
    """A folder with count contrast guidance: the runtime and the evaluation's module path give
    the same images; a count prompt is drawn differently than without it, a prompt with no
    count word exactly the same, and the PNG's metadata says what it was steered from."""
    import shutil

    from diffusers import SanaPipeline

    from runtime import Engine
    from runtime.output import a1111_parameters

    torch.manual_seed(0)
    tokenizer = build.build_tokenizer()
    rule = build.contrast(4.0, 1.0)
    folder = build.save_folder(
        tmp_path / "tiny", tokenizer, build.build_text_encoder(len(tokenizer)),
        build.build_transformer(), build.build_vae(), flow_shift=2.0, steps=6, guidance=4.5,
        guidance_interval=(0.2, 0.8), contrast=rule)
    plain = tmp_path / "plain"
    shutil.copytree(folder, plain)
    linea = json.loads((plain / "linea.json").read_text())
    assert linea.pop("contrast_guidance")["rules"][0]["rewrites"][0] == ["a pair of", "three"]
    (plain / "linea.json").write_text(json.dumps(linea))
    sampler = quality.Sampler.of_folder(folder)
    assert sampler == quality.Sampler(6, 4.5, (0.2, 0.8), rule)
    assert quality.Sampler.of_folder(plain) == quality.Sampler(6, 4.5, (0.2, 0.8))

    engine = Engine(folder, device="cpu", precision="fp32", quantize_text_encoder=False)
    without = Engine(plain, device="cpu", precision="fp32", quantize_text_encoder=False)
    pipe = SanaPipeline.from_pretrained(folder, torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    # one batch of the module path: the count rule (scale 4), the copies rule (1), neither
    prompts, seeds = ["three red circles", "a red circle", "four red circles"], [3, 4, 5]
    ours = quality.generate(engine, prompts, seeds, sampler)
    modules = quality.generate(pipe, prompts, seeds, sampler)
    plain_images = quality.generate(without, prompts, seeds, quality.Sampler.of_folder(plain))
    for a, b in zip(ours, modules, strict=True):
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 1
    for steered, unsteered in zip(ours[:2], plain_images[:2], strict=True):
        assert np.abs(steered.astype(int) - unsteered.astype(int)).max() > 1
    assert (ours[2] == plain_images[2]).all()
    with pytest.raises(ValueError, match="contrast guidance"):
        quality.generate(without, prompts, seeds, sampler)

    from runtime import GenerationRequest

    record = engine.generate(GenerationRequest("A pair of red circles", seed=1),
                             previews=False).record(0)
    assert record["contrast_prompt"] == "three red circles"
    assert record["contrast_scale"] == 4.0 and record["contrast_interval"] == [0.8, 1.0]
    assert "Contrast guidance: 4 at 0.8-1" in a1111_parameters(record)
    record = engine.generate(GenerationRequest("a big red circle", seed=1),
                             previews=False).record(0)
    assert record["contrast_prompt"] == "two big red circles"
    assert "Contrast guidance: 1 at 0.8-1" in a1111_parameters(record)
    record = engine.generate(GenerationRequest("four red circles", seed=1),
                             previews=False).record(0)
    assert "contrast_prompt" not in record and "Contrast" not in a1111_parameters(record)


def test_contrast_prompts_of_the_worlds_captions_ask_for_one_object_more():
    """On every phrasing the captions use: a count of two or three is raised by one (scale 4),
    four is left alone, and each object named once is asked for twice (scale 1)."""
    import dataclasses
    import random

    from models.tiny.captions import caption, parse_prompt
    from models.tiny.split import training_composition

    guidance, rng = build.contrast(4.0, 1.0), random.Random(5)
    seen = set()
    for _ in range(3000):
        composition = training_composition(rng)
        text = caption(composition, rng)
        asked = parse_prompt(text).objects
        found = guidance.contrast(text)
        counts = [spec.count for spec in asked]
        if composition.category == "count":
            if counts == [4]:
                assert found is None, text
                continue
            expected = (dataclasses.replace(asked[0], count=counts[0] + 1),)
            assert found[1] == 4.0, text
        else:
            assert counts in ([1], [1, 1]), text
            expected = tuple(dataclasses.replace(spec, count=2) for spec in asked)
            assert found[1] == 1.0, text
        assert parse_prompt(found[0]).objects == expected, (text, found)
        seen.add(composition.category)
    assert seen == {"single", "colour", "count", "two_objects", "position"}


def test_shipped_folder_has_its_recipes_contrast_guidance():
    from models.tiny.train import RECIPES
    from runtime import identify

    recipe = RECIPES["cpu-deep12-lay"]
    assert recipe.count_contrast > 0 and recipe.duplicate_contrast > 0
    assert identify(SHIPPED).family.contrast == build.contrast(recipe.count_contrast,
                                                               recipe.duplicate_contrast)


def test_autoencoder_is_f8_and_transformer_sees_8x8_tokens():
    vae, transformer = build.build_vae(), build.build_transformer()
    assert type(vae).__name__ == "AutoencoderDC" and vae.spatial_compression_ratio == 8
    with torch.no_grad():
        latent = vae.encode(torch.zeros(1, 3, 64, 64)).latent
    assert latent.shape == (1, build.LATENT_CHANNELS, 8, 8)
    side = build.NATIVE_SIZE // vae.spatial_compression_ratio
    assert transformer.config.sample_size == side
    assert side // transformer.config.patch_size == 8


def test_checkpoint_shards_round_trip_with_optimizer(tmp_path):
    model = torch.nn.Linear(300, 300)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.randn(2, 300)).sum().backward()
    optimizer.step()
    names = {id(p): n for n, p in model.named_parameters()}
    big = {f"w{i}": torch.randn(1000, 1000) for i in range(5)}  # 20 MB: more than one shard
    checkpoint.save_tensors(tmp_path, "big", big)
    assert len(list(tmp_path.glob("big-*.safetensors"))) >= 2
    assert all(torch.equal(big[k], v) for k, v in checkpoint.load_tensors(tmp_path, "big").items())
    checkpoint.save_tensors(tmp_path, "opt", checkpoint.optimizer_tensors(optimizer, names))
    fresh = torch.optim.AdamW(model.parameters())
    checkpoint.restore_optimizer(fresh, names, checkpoint.load_tensors(tmp_path, "opt"))
    for param in model.parameters():
        assert torch.equal(fresh.state[param]["exp_avg"], optimizer.state[param]["exp_avg"])
    with pytest.raises(checkpoint.CheckpointError, match="train from scratch"):
        checkpoint.load_tensors(tmp_path, "missing")


def test_shipped_folder_is_small_and_complete():
    sizes = sum(f.stat().st_size for f in SHIPPED.rglob("*") if f.is_file())
    assert sizes <= MAX_SHIPPED_BYTES
    for part in ("model_index.json", "linea.json", "transformer", "vae", "text_encoder",
                 "tokenizer", "scheduler", "judge/config.json", "judge/model.safetensors"):
        assert (SHIPPED / part).exists(), part


SHIPPED_PER_CATEGORY = 8  # the README grid's 40 held-out prompts: half a minute on a CPU
BAR_OVERALL = 0.80
BAR_SINGLE = 0.95


@pytest.fixture(scope="module")
def shipped_pipe():
    """The shipped folder as the app runs it: found by the catalogue, loaded by the runtime's
    engine on the CPU (8-bit text encoder)."""
    from runtime import Engine, identify

    model = identify(SHIPPED)
    assert model.family.key == "linea-tiny" and model.native_size == 256
    engine = Engine(model, device="cpu")
    engine.load()
    assert engine.precision.quantize_text_encoder
    return engine


def _shipped_sampler() -> quality.Sampler:
    return quality.Sampler.of_folder(SHIPPED)


def test_shipped_model_generates_the_same_image_for_the_same_seed(shipped_pipe):
    sampler = _shipped_sampler()
    first = quality.generate(shipped_pipe, ["a red circle above a blue square"], [3], sampler)[0]
    again = quality.generate(shipped_pipe, ["a red circle above a blue square"], [3], sampler)[0]
    other = quality.generate(shipped_pipe, ["a red circle above a blue square"], [4], sampler)[0]
    assert first.shape == (256, 256, 3)
    assert (first == again).all()
    assert not (first == other).all()
    assert first.std() > 5  # a picture, not a flat fill


def test_prompt_outside_its_world_still_makes_an_image_and_the_model_says_what_it_knows(
        shipped_pipe):
    from runtime import GenerationRequest

    result = shipped_pipe.generate(GenerationRequest("a photograph of a cat asleep on a sofa"))
    image = np.asarray(result.images[0])
    assert image.shape == (256, 256, 3) and image.std() > 5
    knows = shipped_pipe.model.family.knows
    assert "circle" in knows and "left of" in knows and "colours" in knows


@pytest.mark.xfail(
    strict=True,
    reason="the shipped weights are an under-trained CPU checkpoint: held-out overall 0.713, "
    "single 0.875 with the best of 4 candidates (0.688 / 0.969 with one) on all 160 prompts "
    "(models/tiny/README.md); bar 0.80 / 0.95",
)
def test_shipped_model_meets_the_bar_on_held_out_prompts(shipped_pipe):
    # The first prompts of each category with the full evaluation's seeds (each prompt's index
    # among the 160), so these are the images of the README's grid and of `bench.eval_tiny`.
    # (Twenty prompts with seeds 0..19 were too few to stand for the bar: they scored 0.800
    # where all 160 score 0.688.)
    everything = quality.held_out()
    seeds = quality.subset_indices(everything, SHIPPED_PER_CATEGORY)
    prompts = [everything[i] for i in seeds]
    assert prompts == quality.held_out(SHIPPED_PER_CATEGORY)
    scores, _, _ = quality.score(shipped_pipe, prompts, _shipped_sampler(), seeds=seeds)
    assert scores["single"] >= BAR_SINGLE, scores
    assert scores["overall"] >= BAR_OVERALL, scores


def test_diagnosis_tells_a_model_that_reads_its_caption_from_one_that_cannot(tmp_path):
    """The caption gap is zero for a transformer whose cross-attention output is zeroed (it
    cannot read the caption) and not zero for the same one that can; the entropies are those of
    a softmax over the caption's tokens."""
    from models.tiny.diagnose import diagnose

    torch.manual_seed(0)
    tokenizer = build.build_tokenizer()
    text_encoder, transformer, vae = (build.build_text_encoder(len(tokenizer)),
                                      build.build_transformer(), build.build_vae())
    hearing = build.save_folder(
        tmp_path / "hearing", tokenizer, copy.deepcopy(text_encoder), copy.deepcopy(transformer),
        copy.deepcopy(vae), flow_shift=2.0, steps=2, guidance=4.5)
    gaps = diagnose(hearing, scenes=8)["relative_gap"][0.9]
    assert gaps["shuffled"] != 0.0 and gaps["relation"] != 0.0 and gaps["count"] != 0.0
    for block in transformer.transformer_blocks:
        torch.nn.init.zeros_(block.attn2.to_out[0].weight)
        torch.nn.init.zeros_(block.attn2.to_out[0].bias)
    folder = build.save_folder(
        tmp_path / "deaf", tokenizer, text_encoder, transformer, vae, flow_shift=2.0, steps=2,
        guidance=4.5)
    report = diagnose(folder, scenes=8)
    # Seed 5's first 8 scenes include position captions and one with two triangles.
    assert report["relation_scenes"] > 0 and report["count_scenes"] > 0
    for sigma, gaps in report["relative_gap"].items():
        assert gaps == {"shuffled": 0.0, "empty": 0.0, "shape": 0.0, "colour": 0.0,
                        "relation": 0.0, "count": 0.0}, sigma
        assert 0 < report["cross_attention_entropy"][sigma] <= math.log(build.MAX_CAPTION_TOKENS)
    assert report["loss"][0.9]["right"] > 0


def test_swapped_captions_change_every_shape_or_colour_word_and_nothing_else():
    from models.tiny.captions import parse_prompt
    from models.tiny.diagnose import swapped
    from models.tiny.split import training_examples

    assert swapped("three small crosses, all red", "shape") == "three small squares, all red"
    assert swapped("a red star left of a blue heart", "colour") == (
        "a green star left of a red heart")
    for example in training_examples(200, 7):
        before = parse_prompt(example.caption)
        for kind in ("shape", "colour"):
            after = parse_prompt(swapped(example.caption, kind))
            assert after.relation == before.relation and len(after.objects) == len(before.objects)
            for a, b in zip(before.objects, after.objects, strict=True):
                assert a.count == b.count and a.size == b.size
                if kind == "shape":
                    assert b.shape != a.shape and b.colour == a.colour
                else:
                    assert b.shape == a.shape and (b.colour != a.colour or a.colour is None)


def test_a_flipped_relation_names_the_opposite_one_and_changes_nothing_else():
    from models.tiny.captions import parse_prompt
    from models.tiny.diagnose import swapped
    from models.tiny.scenes import OPPOSITE
    from models.tiny.split import training_examples

    assert swapped("a red star to the left of a blue heart", "relation") == (
        "a red star to the right of a blue heart")
    assert swapped("two circles beneath a square", "relation") == "two circles above a square"
    flipped = 0
    for example in training_examples(300, 7):
        before = parse_prompt(example.caption)
        after = parse_prompt(swapped(example.caption, "relation"))
        assert after.objects == before.objects
        if before.relation is None:
            assert swapped(example.caption, "relation") == example.caption
        else:
            assert after.relation == OPPOSITE[before.relation]
            flipped += 1
    assert flipped > 50


def test_a_swapped_count_names_the_next_one_and_changes_nothing_else():
    from models.tiny.captions import parse_prompt
    from models.tiny.diagnose import swapped
    from models.tiny.split import training_examples

    assert swapped("two red stars over four hearts", "count") == "three red stars over two hearts"
    assert swapped("a pair of squares and one cross", "count") == "a pair of squares and one cross"
    following = {2: 3, 3: 4, 4: 2}
    changed = 0
    for example in training_examples(300, 7):
        caption = example.caption
        before, after = parse_prompt(caption), parse_prompt(swapped(caption, "count"))
        assert after.relation == before.relation
        for a, b in zip(before.objects, after.objects, strict=True):
            assert (a.shape, a.colour, a.size) == (b.shape, b.colour, b.size)
            named = a.count > 1 and "pair" not in caption.split()
            assert b.count == (following[a.count] if named else a.count), caption
        changed += swapped(caption, "count") != caption
    assert changed > 30
