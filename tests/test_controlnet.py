"""ControlNet: parity with diffusers' SanaControlNetPipeline (fp32), scale, Sprint, bad input."""

import shutil
from dataclasses import replace

import pytest
import torch
from diffusers import SanaControlNetPipeline
from PIL import Image, ImageDraw

from runtime import Engine, GenerationRequest, ModelFolderError, RequestError

ATOL = 1e-5


@pytest.fixture(scope="module")
def controlnet_tiny(replica_dir):
    return replica_dir("sana-controlnet-600m")


@pytest.fixture(scope="module")
def line_map(tmp_path_factory):
    image = Image.new("RGB", (128, 128), "black")
    draw = ImageDraw.Draw(image)
    draw.ellipse((20, 20, 100, 100), outline="white", width=3)
    draw.line((10, 120, 120, 10), fill="white", width=2)
    path = tmp_path_factory.mktemp("control") / "lines.png"
    image.save(path)
    return path


@pytest.fixture(scope="module")
def engine(controlnet_tiny):
    return Engine(controlnet_tiny, device="cpu", precision="fp32", quantize_text_encoder=False)


def test_controlnet_matches_diffusers(engine, controlnet_tiny, line_map):
    pipe = SanaControlNetPipeline.from_pretrained(controlnet_tiny, torch_dtype=torch.float32)
    request = GenerationRequest("a round window", width=128, height=128, steps=4,
                                guidance_scale=4.5, seed=3, control_image=str(line_map),
                                control_scale=0.8)
    ours = engine.generate(request, previews=False).latents
    reference = pipe(request.prompt, num_inference_steps=4, guidance_scale=4.5, height=128,
                     width=128, generator=[torch.Generator("cpu").manual_seed(3)],
                     control_image=Image.open(line_map), controlnet_conditioning_scale=0.8,
                     output_type="latent", use_resolution_binning=False).images
    torch.testing.assert_close(ours, reference, atol=ATOL, rtol=0)


def test_controlnet_outside_the_guidance_interval_matches_unguided_diffusers(
        controlnet_tiny, line_map, with_interval):
    engine = Engine(with_interval(controlnet_tiny, [0.0, 1e-6]), device="cpu", precision="fp32",
                    quantize_text_encoder=False)
    request = GenerationRequest("a round window", width=128, height=128, steps=4,
                                guidance_scale=4.5, seed=3, control_image=str(line_map),
                                control_scale=0.8)
    ours = engine.generate(request, previews=False).latents
    pipe = SanaControlNetPipeline.from_pretrained(controlnet_tiny, torch_dtype=torch.float32)
    reference = pipe(request.prompt, num_inference_steps=4, guidance_scale=1.0, height=128,
                     width=128, generator=[torch.Generator("cpu").manual_seed(3)],
                     control_image=Image.open(line_map), controlnet_conditioning_scale=0.8,
                     output_type="latent", use_resolution_binning=False).images
    torch.testing.assert_close(ours, reference, atol=ATOL, rtol=0)


def test_control_changes_the_result_and_scale_zero_removes_it(engine, line_map):
    base = GenerationRequest("a round window", width=128, height=128, steps=2, seed=3)
    plain = engine.generate(base, previews=False).latents
    controlled = engine.generate(base.with_changes(control_image=str(line_map)),
                                 previews=False).latents
    zero = engine.generate(base.with_changes(control_image=str(line_map), control_scale=0.0),
                           previews=False).latents
    assert (plain - controlled).abs().max() > 1e-3
    torch.testing.assert_close(zero, plain, atol=ATOL, rtol=0)


def test_sprint_with_a_standalone_controlnet_folder(sprint_tiny, controlnet_tiny, line_map,
                                                    tmp_path):
    standalone = tmp_path / "hed-controlnet"
    shutil.copytree(controlnet_tiny / "controlnet", standalone)
    engine = Engine(sprint_tiny, device="cpu", controlnet=standalone)
    result = engine.generate(GenerationRequest("a round window", width=128, height=128,
                                               steps=2, control_image=str(line_map)),
                             previews=False)
    assert torch.isfinite(result.latents).all() and result.images[0].size == (128, 128)


def test_sprint_folder_with_an_added_controlnet_is_found_and_used(replica_dir, line_map,
                                                                  tmp_path):
    from runtime import identify

    folder = replica_dir("sprint-controlnet-600m")
    model = identify(folder)
    assert model.family.key == "sana-sprint" and model.controlnet
    assert "+ ControlNet" in model.description and model.component_params["controlnet"] > 0
    engine = Engine(model, device="cpu")
    assert engine.controlnet_path == folder / "controlnet"
    request = GenerationRequest("a round window", width=128, height=128, steps=2, seed=3)
    plain = engine.generate(request, previews=False).latents
    controlled = engine.generate(replace(request, control_image=str(line_map)),
                                 previews=False).latents
    assert torch.isfinite(controlled).all() and (plain - controlled).abs().max() > 1e-3

    # A broken added ControlNet is named when the model is opened, not deep in a generation.
    broken = tmp_path / "sprint-broken"
    shutil.copytree(folder, broken)
    (broken / "controlnet" / "config.json").write_text('{"_class_name": "UNet2DModel"}')
    with pytest.raises(ModelFolderError, match="not a SANA ControlNet"):
        Engine(broken, device="cpu")


def test_control_without_a_controlnet_or_with_a_bad_folder(sana_tiny, line_map, tmp_path):
    engine = Engine(sana_tiny, device="cpu")
    with pytest.raises(RequestError, match="has no ControlNet"):
        engine.generate(GenerationRequest("x", width=64, height=64,
                                          control_image=str(line_map)))
    with pytest.raises(ModelFolderError, match="not a ControlNet folder"):
        Engine(sana_tiny, device="cpu", controlnet=tmp_path)
    with pytest.raises(ModelFolderError, match="not a SANA ControlNet"):
        Engine(sana_tiny, device="cpu", controlnet=sana_tiny / "transformer")


def test_unreadable_control_image_is_a_clear_error(engine, tmp_path):
    bad = tmp_path / "sketch.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(RequestError, match="not an image Linea can read") as info:
        engine.generate(GenerationRequest("x", width=64, height=64, control_image=str(bad)))
    assert str(bad) in str(info.value)


def test_command_line_follows_a_sketch(controlnet_tiny, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    from runtime import read_request

    sketch = Image.new("RGB", (200, 150), "white")
    ImageDraw.Draw(sketch).ellipse((40, 30, 160, 120), outline="black", width=4)
    sketch.save(tmp_path / "sketch.jpg")
    out = tmp_path / "follow.png"
    main = Path(__file__).resolve().parent.parent / "main.py"
    done = subprocess.run(
        [sys.executable, str(main), "generate", "a round window", "--model", str(controlnet_tiny),
         "--out", str(out), "--control", str(tmp_path / "sketch.jpg"), "--control-scale", "0.7",
         "--steps", "2", "--width", "128", "--height", "96"],
        capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    request = read_request(out)
    assert request.control_scale == 0.7 and request.control_image.endswith("sketch.jpg")


def test_contrast_guidance_runs_with_a_control_image(controlnet_tiny, line_map, tmp_path):
    """Both halves of a contrast step get the control input: a contrast prompt equal to the
    prompt leaves diffusers' unguided sampling as it is; a different one changes it."""
    import json

    def folder(replacement: str):
        target = tmp_path / f"contrast-{replacement}"
        shutil.copytree(controlnet_tiny, target)
        (target / "linea.json").write_text(json.dumps({
            "guidance_interval": [0.0, 1e-6], "contrast_guidance": {
                "scale": 3.0, "interval": [0.0, 1.0], "rewrites": [["round", replacement]]}}))
        return target

    request = GenerationRequest("a round window", width=128, height=128, steps=4,
                                guidance_scale=4.5, seed=3, control_image=str(line_map),
                                control_scale=0.8)
    same = Engine(folder("round"), device="cpu", precision="fp32", quantize_text_encoder=False)
    made = same.generate(request, previews=False)
    assert made.record(0)["contrast_prompt"] == "a round window"
    pipe = SanaControlNetPipeline.from_pretrained(controlnet_tiny, torch_dtype=torch.float32)
    reference = pipe(request.prompt, num_inference_steps=4, guidance_scale=1.0, height=128,
                     width=128, generator=[torch.Generator("cpu").manual_seed(3)],
                     control_image=Image.open(line_map), controlnet_conditioning_scale=0.8,
                     output_type="latent", use_resolution_binning=False).images
    torch.testing.assert_close(made.latents, reference, atol=ATOL, rtol=0)
    # guidance 1: no negative prompt is encoded, the contrast pairs stand alone (two images, so
    # a control input of the wrong batch could not broadcast)
    alone = same.generate(request.with_changes(guidance_scale=1.0, count=2), previews=False)
    pair = pipe(request.prompt, num_inference_steps=4, guidance_scale=1.0, height=128, width=128,
                num_images_per_prompt=2,
                generator=[torch.Generator("cpu").manual_seed(s) for s in (3, 4)],
                control_image=Image.open(line_map), controlnet_conditioning_scale=0.8,
                output_type="latent", use_resolution_binning=False).images
    torch.testing.assert_close(alone.latents, pair, atol=ATOL, rtol=0)
    other = Engine(folder("square"), device="cpu", precision="fp32", quantize_text_encoder=False)
    steered = other.generate(request, previews=False)
    assert steered.record(0)["contrast_prompt"] == "a square window"
    assert (steered.latents - reference).abs().max() > 1e-3
