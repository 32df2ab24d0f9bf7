"""Every bad input gets a typed error naming the file or value and saying what to do."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from runtime import (
    CorruptWeightsError,
    Engine,
    GenerationRequest,
    ModelFolderError,
    NaNResultError,
    OutputPathError,
    RequestError,
    UnsafeWeightsError,
    identify,
    save_png,
)


@pytest.fixture
def model_copy(sana_tiny, tmp_path):
    target = tmp_path / "model"
    shutil.copytree(sana_tiny, target)
    return target


@pytest.fixture(scope="module")
def engine(sana_tiny):
    return Engine(sana_tiny, device="cpu")


def _weights(folder):
    return next(folder.glob("*.safetensors"))


def test_folder_that_is_not_a_model(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ModelFolderError, match=r"no model_index\.json") as info:
        identify(tmp_path)
    assert str(tmp_path) in str(info.value) and info.value.hint


def test_missing_folder_and_single_file(tmp_path):
    with pytest.raises(ModelFolderError, match="does not exist"):
        identify(tmp_path / "nowhere")
    single = tmp_path / "model.safetensors"
    single.write_bytes(b"\0" * 16)
    with pytest.raises(ModelFolderError, match="single weights file"):
        identify(single)


def test_missing_component(model_copy):
    shutil.rmtree(model_copy / "vae")
    with pytest.raises(ModelFolderError, match="lacks its vae/ folder"):
        identify(model_copy)


def test_unknown_pipeline_class(model_copy):
    index = json.loads((model_copy / "model_index.json").read_text())
    index["_class_name"] = "StableDiffusionPipeline"
    (model_copy / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(ModelFolderError, match="cannot run"):
        identify(model_copy)


def test_truncated_safetensors(model_copy):
    weights = _weights(model_copy / "transformer")
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptWeightsError, match="truncated") as info:
        identify(model_copy)
    assert weights.name in str(info.value)


def test_garbage_safetensors(model_copy):
    _weights(model_copy / "vae").write_bytes(b"this is not a safetensors file at all")
    with pytest.raises(CorruptWeightsError, match="damaged safetensors header"):
        identify(model_copy)


def test_weights_that_do_not_match_the_config(model_copy):
    weights = _weights(model_copy / "transformer")
    tensors = load_file(weights)
    name = next(k for k, v in tensors.items() if v.ndim == 2)
    tensors[name] = torch.zeros(tensors[name].shape[0] + 1, tensors[name].shape[1])
    save_file(tensors, weights)
    engine = Engine(model_copy, device="cpu")
    with pytest.raises(CorruptWeightsError, match="has shape") as info:
        engine.load()
    assert name in str(info.value)


def test_pickle_checkpoint_is_refused_never_loaded(model_copy):
    folder = model_copy / "transformer"
    _weights(folder).unlink()
    marker = model_copy / "pwned"
    # A pickle that would create a file if it were ever unpickled.
    payload = (b"\x80\x04\x95" + b"cos\nsystem\n(S'touch " + str(marker).encode()
               + b"'\ntR.")
    (folder / "diffusion_pytorch_model.bin").write_bytes(payload)
    with pytest.raises(UnsafeWeightsError, match="pickle") as info:
        identify(model_copy)
    assert "safetensors" in info.value.hint
    assert not marker.exists()


@pytest.mark.parametrize(("changes", "pattern"), [
    ({"width": 250}, "not a multiple of 32"),
    ({"height": 4096}, "larger than this model's limit"),
    ({"width": 0}, "not a positive"),
    ({"steps": 0}, "out of range"),
    ({"steps": 1000}, "out of range"),
    ({"prompt": "   "}, "prompt is empty"),
    ({"seed": -1}, "seed"),
    ({"count": 0}, "count"),
    ({"guidance_scale": -2.0}, "guidance"),
])
def test_bad_settings(engine, changes, pattern):
    request = GenerationRequest("a cat", width=64, height=64, steps=2).with_changes(**changes)
    with pytest.raises(RequestError, match=pattern) as info:
        engine.generate(request)
    assert info.value.hint


def test_prompt_far_past_the_token_limit_is_truncated_with_a_warning(engine):
    long_prompt = "a red circle next to a blue square " * 80
    result = engine.generate(GenerationRequest(long_prompt, width=64, height=64, steps=1),
                             previews=False)
    assert any("reads only the first 298" in w for w in result.warnings)
    assert result.images


def test_nan_result_is_detected_and_explained(sana_tiny):
    engine = Engine(sana_tiny, device="cpu")
    engine.load()
    with torch.no_grad():
        next(engine._parts.vae.decoder.parameters()).fill_(float("nan"))
    with pytest.raises(NaNResultError, match="NaN") as info:
        engine.generate(GenerationRequest("a cat", width=64, height=64, steps=1))
    assert "bf16 or fp32" in info.value.hint


def test_output_path_that_exists_is_never_overwritten(tmp_path, engine):
    result = engine.generate(GenerationRequest("a cat", width=64, height=64, steps=1),
                             previews=False)
    target = tmp_path / "out.png"
    target.write_bytes(b"precious")
    with pytest.raises(OutputPathError, match="exists already"):
        save_png(result.images[0], target, result.record(0))
    assert target.read_bytes() == b"precious"
    with pytest.raises(OutputPathError, match="does not exist"):
        save_png(result.images[0], tmp_path / "missing" / "x.png", result.record(0))
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]
