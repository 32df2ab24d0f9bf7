"""Regional prompting from a layout planner: the world's planner, the reading mask, linea.json's
`layout` entry, layout guidance in the flow loop, and the engine end to end."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from models.families import (
    FULL_INTERVAL,
    LayoutSettings,
    layout_json,
    layout_settings,
)
from models.tiny.planner import plan
from runtime import regions
from runtime.regions import Region
from runtime.sampling import FlowSettings, flow_sample

SHIPPED = Path(__file__).resolve().parent.parent / "assets" / "models" / "linea-tiny"


def _centre(region: Region) -> tuple[float, float]:
    left, top, right, bottom = region.box
    return (left + right) / 2, (top + bottom) / 2


def test_planner_gives_each_object_its_region_and_holds_the_relation():
    for seed in range(20):
        found = plan("a red circle to the left of a blue square", seed)
        assert [r.text for r in found] == ["a red circle", "a blue square"]
        assert _centre(found[0])[0] < _centre(found[1])[0] - 0.1
        below = plan("a green star below a yellow heart on a dark background", seed)
        assert [r.text for r in below] == ["a green star on a dark background",
                                           "a yellow heart on a dark background"]
        assert _centre(below[0])[1] > _centre(below[1])[1] + 0.1
        for region in (*found, *below):
            assert all(0.0 <= v <= 1.0 for v in region.box)


def test_planner_counts_sizes_and_seeds():
    three = plan("three small yellow stars on a light background", 4)
    assert [r.text for r in three] == ["a small yellow star on a light background"] * 3
    boxes = [r.box for r in three]
    for i, a in enumerate(boxes):  # laid out apart, as the world's scenes are
        for b in boxes[i + 1:]:
            assert abs(a[0] - b[0]) + abs(a[1] - b[1]) > 0.05
    assert plan("three small yellow stars on a light background", 4) == three
    assert plan("three small yellow stars on a light background", 5) != three
    big = plan("a big orange hexagon", 0)[0]
    small = plan("a tiny orange hexagon", 0)[0]
    assert big.text == "a large orange hexagon" and small.text == "a small orange hexagon"
    assert big.box[2] - big.box[0] > small.box[2] - small.box[0]
    assert [r.text for r in plan("an orange cross and a pair of cyan hearts", 1)] == [
        "an orange cross", "a cyan heart", "a cyan heart"]


def test_planner_has_no_plan_outside_its_world():
    assert plan("a cat on a sofa", 0) is None
    assert plan("", 0) is None


def test_region_rejects_an_empty_box_or_text():
    with pytest.raises(ValueError, match="left < right"):
        Region("a red circle", (0.5, 0.1, 0.4, 0.3))
    with pytest.raises(ValueError, match="needs a text"):
        Region("  ", (0.1, 0.1, 0.4, 0.3))


def test_cells_cover_the_grown_box_and_at_least_its_centre():
    left_half = regions.cells((0.0, 0.0, 0.5, 1.0), 4, 4, 0.0).view(4, 4)
    assert left_half[:, :2].all() and not left_half[:, 2:].any()
    grown = regions.cells((0.0, 0.0, 0.5, 1.0), 4, 4, 1.0).view(4, 4)
    assert grown[:, :3].all() and not grown[:, 3].any()
    speck = regions.cells((0.70, 0.20, 0.72, 0.22), 4, 4, 0.0).view(4, 4)
    assert speck.sum() == 1 and speck[0, 2]


def test_reading_mask_lets_only_a_regions_cells_read_its_text():
    plans = [(Region("a red circle", (0.0, 0.0, 0.5, 0.5)),
              Region("a blue square", (0.5, 0.5, 1.0, 1.0))), ()]
    texts = regions.region_texts(plans)
    assert texts == ["a red circle", "a blue square"]
    prompt_mask = torch.tensor([1, 1, 1, 0])
    text_masks = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0]])
    allowed = regions.reading_mask(plans, texts, prompt_mask, text_masks, 2, 2, 0.0)
    assert allowed.shape == (2, 4, 12)
    allowed = allowed.view(2, 4, 3, 4)
    assert (allowed[:, :, 0] == prompt_mask.bool()).all()  # the prompt: every cell, no padding
    assert allowed[0, 0, 1].tolist() == [True, True, False, False]  # top-left reads the circle
    assert not allowed[0, 1:, 1].any()
    assert allowed[0, 3, 2].tolist() == [True, True, True, False]  # bottom-right, the square
    assert not allowed[0, :3, 2].any()
    assert not allowed[1, :, 1:].any()  # an empty plan reads the prompt alone
    bias = regions.attention_bias(allowed.flatten(2), torch.float16)
    assert bias.dtype == torch.float16 and set(bias.unique().tolist()) == {0.0, regions.MASKED}


def test_layout_entry_is_read_checked_and_written_back():
    settings = layout_settings({"planner": "shapes-world", "margin": 1, "scale": 3,
                                "interval": [0.5, 1.0]})
    assert settings == LayoutSettings("shapes-world", 1.0, 3.0, (0.5, 1.0))
    assert layout_settings(layout_json(settings)) == settings
    assert layout_settings({"planner": "shapes-world"}) == LayoutSettings(
        "shapes-world", 1.0, 1.0, FULL_INTERVAL)
    for bad, says in [({"planner": "llm"}, "planner"), ({"margin": 1}, "layout must be"),
                      ({"planner": "shapes-world", "margin": 9}, "margin"),
                      ({"planner": "shapes-world", "scale": -1}, "scale"),
                      ({"planner": "shapes-world", "scale": True}, "scale"),
                      ({"planner": "shapes-world", "interval": [0.9, 0.1]}, "interval"),
                      ({"planner": "shapes-world", "grid": 8}, "layout must be"),
                      ("shapes-world", "layout must be")]:
        with pytest.raises(ValueError, match=says):
            layout_settings(bad)


def test_flow_loop_takes_the_layout_denoiser_only_in_its_interval():
    from diffusers import FlowMatchEulerDiscreteScheduler

    seen: dict[str, list[float]] = {"plain": [], "layout": []}

    def named(name):
        def denoise(x, t, _g):
            seen[name].append(float(t[0]) / 1000)
            return torch.zeros_like(x)
        return denoise

    settings = FlowSettings(8, 1.0, layout_interval=(0.5, 1.0))
    flow_sample(named("plain"), FlowMatchEulerDiscreteScheduler(shift=3.0),
                torch.zeros(1, 4, 4, 4), settings, [torch.Generator().manual_seed(0)],
                lambda *_: None, layout=named("layout"))
    assert seen["layout"] and seen["plain"]
    assert all(s >= 0.5 for s in seen["layout"]) and all(s < 0.5 for s in seen["plain"])
    assert len(seen["layout"]) + len(seen["plain"]) == 8


@pytest.fixture(scope="module")
def planned_folder(tmp_path_factory) -> Path:
    """The shipped folder with a layout planner and one candidate (quick)."""
    folder = tmp_path_factory.mktemp("planned") / "linea-tiny"
    shutil.copytree(SHIPPED, folder)
    linea = json.loads((folder / "linea.json").read_text())
    linea.update(candidates=1, layout={"planner": "shapes-world", "margin": 1, "scale": 3,
                                       "interval": [0.5, 1.0]})
    (folder / "linea.json").write_text(json.dumps(linea))
    return folder


def test_engine_plans_the_layout_records_it_and_can_go_without(planned_folder, tmp_path):
    from runtime import Engine, GenerationRequest
    from runtime.output import a1111_parameters, save_png

    engine = Engine(planned_folder, device="cpu")
    request = GenerationRequest("two red circles", seed=3, steps=6)
    planned = engine.generate(request, previews=False)
    record = planned.record(0)
    assert [r["text"] for r in record["layout"]] == ["a red circle"] * 2
    assert record["layout"] == [r.to_dict() for r in plan("two red circles", 3)]
    assert record["layout_planner"] == "shapes-world"
    assert "contrast_prompt" not in record  # the plan places the objects; no contrast
    assert "Layout: 2 regions planned" in a1111_parameters(record)
    path = save_png(planned.images[0], tmp_path / "planned.png", record)
    assert json.loads(Image.open(path).text["linea"])["layout"] == record["layout"]

    alone = engine.generate(request.with_changes(layout=False), previews=False)
    record_alone = alone.record(0)
    assert "layout" not in record_alone
    assert record_alone["contrast_prompt"] == "three red circles"
    difference = np.abs(np.asarray(planned.images[0], dtype=np.int16)
                        - np.asarray(alone.images[0], dtype=np.int16))
    assert difference.mean() > 1.0

    again = engine.generate(request, previews=False)
    assert np.array_equal(np.asarray(again.images[0]), np.asarray(planned.images[0]))

    outside = engine.generate(GenerationRequest("a cat on a sofa", seed=1, steps=4),
                              previews=False)
    assert "layout" not in outside.record(0)


def test_engine_refuses_a_layout_the_model_cannot_plan(sana_tiny):
    from runtime import Engine, GenerationRequest
    from runtime.request import RequestError

    engine = Engine(sana_tiny, device="cpu")
    with pytest.raises(RequestError, match="no layout planner"):
        engine.resolve(GenerationRequest("a red circle", layout=True))
    with pytest.raises(RequestError, match="not true or false"):
        engine.resolve(GenerationRequest("a red circle", layout="yes"))
    assert engine.resolve(GenerationRequest("a red circle")).layout is False
