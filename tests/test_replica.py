"""Replicas: tiny ones load and run through diffusers' own pipelines; full-size configs match the
published parameter counts; the tokenizer behaves like Gemma's where the pipelines rely on it."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from models.replica import (
    FAMILIES,
    ReplicaError,
    build_model,
    replica_spec,
    write_replica,
)
from models.tokenizer_build import VOCAB_SIZE, build_tokenizer

REPO = Path(__file__).resolve().parents[1]

PIPELINES = {
    "sana-600m": "SanaPipeline",
    "sana-1600m": "SanaPipeline",
    "sprint-600m": "SanaSprintPipeline",
    "sana-controlnet-600m": "SanaControlNetPipeline",
    "sprint-controlnet-600m": "SanaSprintPipeline",  # + controlnet/, found by Linea's catalogue
}

# Published figures (DESIGN.md, checked facts), in millions of parameters.
FULL_SIZE_PARAMS = {
    ("sana-600m", "transformer"): 591.7,
    ("sana-controlnet-600m", "controlnet"): 168.8,
    ("sana-600m", "text_encoder"): 2610.0,
}
DC_AE_PARAMS = {"encoder": 153.0, "decoder": 159.0}


def _generate(folder: Path, family: str, seed: int = 0) -> torch.Tensor:
    import diffusers

    pipe = getattr(diffusers, PIPELINES[family]).from_pretrained(folder)
    kwargs = {}
    if family == "sana-controlnet-600m":
        control = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(1))
        kwargs["control_image"] = control
    out = pipe(
        "a red fox in the snow, cinematic lighting",
        height=128,
        width=128,
        num_inference_steps=2,
        output_type="latent",
        use_resolution_binning=False,
        generator=torch.Generator().manual_seed(seed),
        **kwargs,
    )
    return out.images


@pytest.mark.parametrize("family", list(FAMILIES))
def test_tiny_replica_loads_and_generates(replica_dir, tmp_path, family):
    folder = (
        replica_dir(family)
        if family != "sana-1600m"
        else write_replica(family, tmp_path / family, tiny=True)
    )
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == PIPELINES[family]
    latents = _generate(folder, family)
    assert latents.shape == (1, 32, 4, 4)  # 128 px / 32x compression
    assert torch.isfinite(latents).all()
    assert latents.std() > 1e-3


@pytest.mark.parametrize(
    "family", ["sana-600m", "sprint-600m", "sana-controlnet-600m", "sprint-controlnet-600m"]
)
def test_replica_folder_is_diffusers_layout_with_safetensors_only(replica_dir, family):
    folder = replica_dir(family)
    expected = {"model_index.json", "transformer", "vae", "text_encoder", "tokenizer", "scheduler"}
    if family.endswith("controlnet-600m"):
        expected.add("controlnet")
    assert {p.name for p in folder.iterdir()} == expected
    weights = [
        p
        for p in folder.rglob("*")
        if p.suffix in {".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".pkl", ".msgpack", ".h5"}
    ]
    assert weights and all(p.suffix == ".safetensors" for p in weights)
    for component in expected - {"model_index.json", "tokenizer", "scheduler"}:
        assert list((folder / component).glob("*.safetensors")), component
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    assert size < 8 * 2**20


def test_weights_saved_in_the_real_checkpoints_dtypes(replica_dir):
    from safetensors.torch import load_file

    def dtypes(path: Path) -> set[torch.dtype]:
        return {t.dtype for t in load_file(path).values()}

    sana, sprint = replica_dir("sana-600m"), replica_dir("sprint-600m")
    transformer_file = "transformer/diffusion_pytorch_model.safetensors"
    assert dtypes(sana / transformer_file) == {torch.float16}
    assert dtypes(sprint / transformer_file) == {torch.bfloat16}
    sprint_cn = replica_dir("sprint-controlnet-600m") / "controlnet"
    assert dtypes(sprint_cn / "diffusion_pytorch_model.safetensors") == {torch.bfloat16}
    assert dtypes(sana / "text_encoder/model.safetensors") == {torch.bfloat16}
    assert dtypes(sana / "vae/diffusion_pytorch_model.safetensors") == {torch.float32}


def test_same_seed_same_weights_other_seed_other_weights(tmp_path):
    from safetensors.torch import load_file

    name = "transformer/diffusion_pytorch_model.safetensors"
    a = load_file(write_replica("sana-600m", tmp_path / "a", tiny=True, seed=3) / name)
    b = load_file(write_replica("sana-600m", tmp_path / "b", tiny=True, seed=3) / name)
    c = load_file(write_replica("sana-600m", tmp_path / "c", tiny=True, seed=4) / name)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_weights_initialised_to_zero_are_perturbed(replica_dir):
    from safetensors.torch import load_file

    folder = replica_dir("sana-controlnet-600m")
    # diffusers zero-initialises the ControlNet's input and output projections, Gemma its norms.
    for name in (
        "controlnet/diffusion_pytorch_model.safetensors",
        "text_encoder/model.safetensors",
    ):
        weights = load_file(folder / name)
        assert weights and not any((w == 0).all() for w in weights.values()), name


def test_controlnet_changes_the_result(replica_dir):
    from diffusers import SanaControlNetPipeline

    pipe = SanaControlNetPipeline.from_pretrained(replica_dir("sana-controlnet-600m"))
    control = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    results = [
        pipe(
            "a house",
            control_image=control,
            controlnet_conditioning_scale=scale,
            height=128,
            width=128,
            num_inference_steps=1,
            output_type="latent",
            use_resolution_binning=False,
            generator=torch.Generator().manual_seed(0),
        ).images
        for scale in (0.0, 1.0)
    ]
    assert not torch.allclose(results[0], results[1])


def test_layers_cuts_depth_everywhere(tmp_path):
    spec = replica_spec("sana-controlnet-600m", layers=3)
    assert spec.transformer["num_layers"] == 3
    assert spec.controlnet is not None and spec.controlnet["num_layers"] == 3
    assert spec.text_encoder["num_hidden_layers"] == 3
    assert replica_spec("sana-controlnet-600m", layers=12).controlnet["num_layers"] == 7
    folder = write_replica("sana-600m", tmp_path / "r", layers=1, tiny=True)
    config = json.loads((folder / "transformer" / "config.json").read_text())
    assert config["num_layers"] == 1


def _count(model: torch.nn.Module) -> float:
    return sum(p.numel() for p in model.parameters()) / 1e6


@pytest.mark.parametrize(("family", "component"), list(FULL_SIZE_PARAMS))
def test_full_size_parameter_counts(family, component):
    with torch.device("meta"):
        model = build_model(replica_spec(family), component)
    assert _count(model) == pytest.approx(FULL_SIZE_PARAMS[family, component], rel=0.005)


def test_full_size_dc_ae_parameter_counts_and_compression():
    spec = replica_spec("sana-600m")
    with torch.device("meta"):
        vae = build_model(spec, "vae")
    assert _count(vae.encoder) == pytest.approx(DC_AE_PARAMS["encoder"], rel=0.005)
    assert _count(vae.decoder) == pytest.approx(DC_AE_PARAMS["decoder"], rel=0.005)
    assert len(spec.vae["encoder_block_out_channels"]) - 1 == 5  # 2**5 = 32x
    tiny = replica_spec("sana-600m", tiny=True).vae
    for key in (
        "latent_channels",
        "encoder_block_types",
        "downsample_block_type",
        "upsample_block_type",
        "scaling_factor",
    ):
        assert tiny[key] == spec.vae[key], key
    assert len(tiny["encoder_block_out_channels"]) == 6


def test_sprint_and_1600m_configs():
    sprint = replica_spec("sprint-600m").transformer
    assert sprint["qk_norm"] == "rms_norm_across_heads"
    assert sprint["guidance_embeds"] is True and sprint["guidance_embeds_scale"] == 0.1
    big = replica_spec("sana-1600m").transformer
    assert (big["num_layers"], big["num_attention_heads"], big["cross_attention_dim"]) == (
        20,
        70,
        2240,
    )


def test_tokenizer_is_gemma_like_and_handles_any_text():
    tok = build_tokenizer()
    assert len(tok) == VOCAB_SIZE
    assert (tok.pad_token_id, tok.eos_token_id, tok.bos_token_id, tok.unk_token_id) == (0, 1, 2, 3)
    for text in ["a cat wearing a hat", "Ünïcødé 🐼 日本語 — ok?", "tab\tand\nnewline"]:
        ids = tok(text).input_ids
        assert ids[0] == tok.bos_token_id
        assert tok.unk_token_id not in ids
        assert tok.decode(ids, skip_special_tokens=True) == text
    # Pinned: replicas written on other machines or library versions must tokenize alike.
    assert tok("a cute cat wearing a hat").input_ids == [2, 289, 789, 293, 785, 577, 348, 955]


def test_tokenizer_in_sana_encode_prompt(replica_dir):
    from diffusers import SanaPipeline

    pipe = SanaPipeline.from_pretrained(replica_dir("sana-600m"))
    assert pipe.tokenizer.bos_token_id == 2 and pipe.tokenizer.pad_token_id == 0
    assert pipe.tokenizer("a cat").input_ids[0] == 2  # reloaded, it still prepends <bos>
    embeds, mask, _, _ = pipe.encode_prompt(
        "a lighthouse on a cliff at dusk", do_classifier_free_guidance=False
    )
    assert embeds.shape == (1, 300, 64)  # bos + the last 299 of prefix+prompt, padded to 300
    assert mask.shape == (1, 300)
    assert mask[0, 0] == 1 and mask[0, -1] == 0  # padded on the right
    assert torch.isfinite(embeds).all()
    long_prompt = " ".join(["mountain"] * 600)
    embeds, mask, _, _ = pipe.encode_prompt(long_prompt, do_classifier_free_guidance=False)
    assert embeds.shape == (1, 300, 64) and mask.all()  # truncated, not overflowing


def test_write_replica_rejects_bad_requests(tmp_path):
    with pytest.raises(ReplicaError, match="unknown model family"):
        write_replica("sana-9000m", tmp_path / "x", tiny=True)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    with pytest.raises(ReplicaError, match="not an empty folder"):
        write_replica("sana-600m", busy, tiny=True)
    assert [p.name for p in busy.iterdir()] == ["keep.txt"]


def test_cli_rejects_unknown_family(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "models.replica", "sana-9000m", str(tmp_path / "out")],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert "sana-9000m" in result.stderr and "sana-600m" in result.stderr
    assert not (tmp_path / "out").exists()
