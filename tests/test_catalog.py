"""Finding models: user folder, added folders, offline Hugging Face cache snapshots, families."""

import dataclasses
import json
import shutil

from runtime import find_models, identify, resolve_model
from runtime.device import (
    GIB,
    DeviceInfo,
    MemoryPlan,
    choose_plan,
    detect_device,
    estimate_bytes,
)


def test_family_size_and_native_resolution_are_read_from_the_folder(sana_tiny, sprint_tiny):
    sana, sprint = identify(sana_tiny), identify(sprint_tiny)
    assert (sana.family.key, sprint.family.key) == ("sana", "sana-sprint")
    assert sana.family.default_steps == 20 and sprint.family.step_range == (1, 4)
    assert sana.native_size == sprint.native_size > 0
    assert sana.transformer_params > 0 and sana.component_params["text_encoder"] > 0


def test_linea_json_overrides_the_family_defaults(sana_tiny, tmp_path):
    folder = tmp_path / "house"
    shutil.copytree(sana_tiny, folder)
    (folder / "linea.json").write_text(json.dumps({
        "family": "linea-tiny", "complex_human_instruction": False, "default_steps": 12,
        "native_size": 256, "knows": "shapes"}))
    model = identify(folder)
    assert model.family.key == "linea-tiny"
    assert model.family.complex_human_instruction is False
    assert model.family.default_steps == 12 and model.native_size == 256


def test_guidance_interval_is_read_from_linea_json_and_a_bad_one_is_a_clear_error(
        sana_tiny, tmp_path):
    import pytest

    from runtime import ModelFolderError

    folder = tmp_path / "house"
    shutil.copytree(sana_tiny, folder)
    assert identify(folder).family.guidance_interval == (0.0, 1.0)
    (folder / "linea.json").write_text(json.dumps({"guidance_interval": [0.2, 0.8]}))
    assert identify(folder).family.guidance_interval == (0.2, 0.8)
    for bad in ([0.8, 0.2], [0.2], "0.2-0.8", [0.2, 1.5], [True, 1]):
        (folder / "linea.json").write_text(json.dumps({"guidance_interval": bad}))
        with pytest.raises(ModelFolderError, match="guidance_interval must be two noise levels"):
            identify(folder)


def test_a_guidance_interval_on_a_model_without_guidance_is_refused(sprint_tiny, with_interval):
    import pytest

    from runtime import ModelFolderError

    # SANA-Sprint samples without classifier-free guidance: an interval there would be ignored.
    with pytest.raises(ModelFolderError, match="SANA-Sprint model takes none, so remove the entry"):
        identify(with_interval(sprint_tiny, [0.2, 0.8]))


def test_contrast_guidance_is_read_from_linea_json_and_a_bad_one_is_a_clear_error(
        sana_tiny, sprint_tiny, tmp_path):
    import pytest

    from models.families import ContrastGuidance, ContrastRule
    from runtime import ModelFolderError

    folder = tmp_path / "house"
    shutil.copytree(sana_tiny, folder)
    assert identify(folder).family.contrast is None
    count = {"scale": 4, "rewrites": [["a pair of", "three"], ["two", "three"]]}
    copies = {"scale": 1, "rewrites": [[r"a (red )?(circle|star)", r"two \1\2s"]],
              "about": " a second one "}
    value = {"interval": [0.8, 1.0], "rules": [count, copies]}
    (folder / "linea.json").write_text(json.dumps({"contrast_guidance": value}))
    assert identify(folder).family.contrast == ContrastGuidance((0.8, 1.0), (
        ContrastRule(4.0, (("a pair of", "three"), ("two", "three"))),
        ContrastRule(1.0, ((r"a (red )?(circle|star)", r"two \1\2s"),), "a second one")))
    # The first form (one rule, plain phrases) is still read: its phrases are not patterns.
    first = {"scale": 4, "interval": [0.8, 1.0], "rewrites": [["a (pair) of", "three"]],
             "about": " one too many "}
    (folder / "linea.json").write_text(json.dumps({"contrast_guidance": first}))
    contrast = identify(folder).family.contrast
    assert contrast.about == "one too many" and contrast.interval == (0.8, 1.0)
    assert contrast.contrast("a (pair) of  stars") == ("three stars", 4.0)
    assert contrast.contrast("a pair of stars") is None
    bad = [([], "not \\[\\]"), ({**first, "scale": 0}, "its scale is 0"),
           ({**first, "scale": True}, "its scale is True"),
           ({**first, "interval": [1.0, 0.8]}, "its interval"),
           ({**first, "rewrites": []}, "it has no rewrites"),
           ({**first, "rewrites": [["two"]]}, "each rewrite is two non-empty texts"),
           ({**first, "rewrites": [["two", " "]]}, "each rewrite is two non-empty texts"),
           ({**first, "extra": 1}, "contrast_guidance must be"),
           ({**first, "about": 3}, "its about is 3"),
           ({**value, "rules": []}, "its rules are \\[\\]"),
           ({**value, "rules": [{**count, "interval": [0, 1]}]}, "contrast_guidance must be"),
           ({**value, "extra": 1}, "contrast_guidance must be"),
           ({**value, "rules": [{**count, "scale": -1}]}, "its scale is -1"),
           ({**value, "rules": [{"scale": 1, "rewrites": [["a (red", "x"]]}]},
            "'a \\(red' is not a regular expression"),
           ({**value, "rules": [{"scale": 1, "rewrites": [["(red)?", "x"]]}]},
            "matches empty text"),
           ({**value, "rules": [{"scale": 1, "rewrites": [["a (red)", r"\2"]]}]},
            "does not fit the pattern")]
    for value_, message in bad:
        (folder / "linea.json").write_text(json.dumps({"contrast_guidance": value_}))
        with pytest.raises(ModelFolderError, match=message):
            identify(folder)
    # SANA-Sprint's consistency sampler has no steps to steer this way.
    sprint = tmp_path / "sprint"
    shutil.copytree(sprint_tiny, sprint)
    (sprint / "linea.json").write_text(json.dumps({"contrast_guidance": value}))
    with pytest.raises(ModelFolderError, match="applies to flow-sampled models"):
        identify(sprint)


def test_contrast_rules_rewrite_every_match_in_one_pass_and_the_first_rule_that_applies_wins():
    from models.families import ContrastGuidance, ContrastRule

    count = ContrastRule(4.0, (("a pair of", "three"), ("two", "three"), ("three", "four")))
    assert count.rewrite("three red circles") == "four red circles"
    assert count.rewrite("A Pair  Of blue stars") == "three blue stars"
    # every match, each rewritten once: "two" becomes "three", never "four"
    assert count.rewrite("three hearts and two stars") == "four hearts and three stars"
    assert count.rewrite("Two hearts") == "three hearts"
    for untouched in ("four stars", "twofold circle", "a red circle", "network", ""):
        assert count.rewrite(untouched) is None
    copies = ContrastRule(1.0, ((r"(?:a|one) ((?:red |big )*)(circle|star)", r"two \1\2s"),
                                (r"(?:a|one) ((?:red |big )*)(cross)", r"two \1\2es")))
    assert (copies.rewrite("a big red circle left of One cross on a dark background")
            == "two big red circles left of two crosses on a dark background")
    assert copies.rewrite("a picture of a starfish") is None
    guidance = ContrastGuidance((0.8, 1.0), (count, copies))
    assert guidance.contrast("two red circles") == ("three red circles", 4.0)
    assert guidance.contrast("a red star") == ("two red stars", 1.0)
    assert guidance.contrast("four red stars") is None
    assert guidance.about == ""  # a rule that does not say leaves it to the rewrites
    said = ContrastGuidance((0.8, 1.0), (ContrastRule(4.0, count.rewrites, "one more"),
                                         ContrastRule(1.0, copies.rewrites, "a copy")))
    assert said.about == "one more; or a copy"


def test_models_are_found_in_user_added_and_hf_cache_folders(sana_tiny, sprint_tiny, tmp_path,
                                                             data_dir, monkeypatch):
    shutil.copytree(sana_tiny, data_dir / "models" / "mine")
    added = tmp_path / "added"
    shutil.copytree(sprint_tiny, added / "fast")
    (added / "broken").mkdir()
    (added / "broken" / "model_index.json").write_text("{not json")
    snapshot = tmp_path / "hub" / "models--org--sana" / "snapshots" / "abc123"
    shutil.copytree(sana_tiny, snapshot)
    (tmp_path / "hub" / "models--org--sana" / "refs").mkdir()
    (tmp_path / "hub" / "models--org--sana" / "refs" / "main").write_text("abc123")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    models, problems = find_models([added])
    by_source = {m.source: m for m in models if m.source != "bundled"}
    assert by_source["user"].name == "mine"
    assert by_source["added"].name == "fast"
    assert by_source["hf-cache"].path == snapshot.resolve()
    assert [p.path.name for p in problems] == ["broken"]
    assert resolve_model("fast", (added,)).family.key == "sana-sprint"


def test_memory_plans_get_leaner_and_smaller_gpus_get_leaner_plans(sana_tiny):
    # The tiny replica's folder with SANA-0.6B's real parameter counts (DESIGN.md).
    model = dataclasses.replace(
        identify(sana_tiny), embedding_params=590_000_000,
        component_params={"text_encoder": 2_614_000_000, "transformer": 591_700_000,
                          "vae": 312_000_000})
    estimates = [estimate_bytes(model, plan, 1024, 1024) for plan in MemoryPlan]
    assert estimates == sorted(estimates, reverse=True)
    assert 5 * GIB < estimates[0] < 6 * GIB  # 8-bit Gemma ~3 GiB + fp16 DiT + bf16 DC-AE

    def gpu(free_gib: float) -> DeviceInfo:
        return DeviceInfo("cuda", "GPU", 16 * GIB, int(free_gib * GIB), True, 2)

    assert choose_plan(gpu(15), model, 1024, 1024) is MemoryPlan.RESIDENT
    assert choose_plan(gpu(4.5), model, 1024, 1024) is MemoryPlan.RELEASE_ENCODER
    assert choose_plan(gpu(2), model, 1024, 1024) is MemoryPlan.CPU_OFFLOAD
    assert choose_plan(detect_device("cpu"), model, 1024, 1024) is MemoryPlan.RESIDENT


def test_with_no_model_anywhere_a_stand_in_replica_is_written_and_labelled(
        data_dir, tmp_path, monkeypatch):
    import runtime.catalog as catalog

    monkeypatch.setattr(catalog, "bundled_models_dir", lambda: tmp_path / "no-bundle")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "no-hub"))
    model = catalog.default_model()
    assert model.path == (data_dir / "models" / "stand-in-replica").resolve()
    assert "noise" in model.family.knows
    assert catalog.default_model().path == model.path  # written once, then found
