"""Random-initialised replicas of the real SANA-family checkpoints, in the diffusers layout.

No real weights can be downloaded, so every real architecture is tested through a replica: the
published configuration with random weights, saved by diffusers' own `save_pretrained` so that a
replica folder is laid out exactly like a downloaded one and loads through the same code.

    python -m models.replica FAMILY OUTDIR [--layers N] [--tiny] [--seed S]

`--layers` cuts depth (transformer, ControlNet and text-encoder layers) for speed; `--tiny` keeps
the same classes and options with narrow widths, for fast CPU tests (a few MB per folder).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from models.tokenizer_build import VOCAB_SIZE, build_tokenizer

FAMILIES: dict[str, str] = {
    "sana-600m": "SANA 0.6B, 1024px (SanaPipeline, Flow-DPM-Solver, 20 steps)",
    "sana-1600m": "SANA 1.6B, 1024px (SanaPipeline, Flow-DPM-Solver, 20 steps)",
    "sprint-600m": "SANA-Sprint 0.6B, 1024px (SanaSprintPipeline, SCM, 1-4 steps)",
    "sana-controlnet-600m": "SANA 0.6B with the 7-block HED ControlNet (SanaControlNetPipeline)",
    "sprint-controlnet-600m": "SANA-Sprint 0.6B with the 7-block HED ControlNet in controlnet/",
}

# Perturbation for weights that diffusers or transformers initialise to exactly zero (ControlNet
# output projections, Gemma's norm offsets, biases): a replica must give non-trivial outputs.
ZERO_PERTURBATION_STD = 0.02


class ReplicaError(ValueError):
    """A replica cannot be written as asked (unknown family, output folder in use)."""


@dataclass(frozen=True)
class ReplicaSpec:
    """Everything needed to build one replica: a pipeline class and its components' configs."""

    family: str
    pipeline: str
    transformer: dict[str, Any]
    vae: dict[str, Any]
    text_encoder: dict[str, Any]
    scheduler: str
    transformer_dtype: torch.dtype
    controlnet: dict[str, Any] | None = None
    text_encoder_dtype: torch.dtype = torch.bfloat16
    vae_dtype: torch.dtype = torch.float32


SANA_600M = {
    "in_channels": 32,
    "out_channels": 32,
    "num_attention_heads": 36,
    "attention_head_dim": 32,
    "num_layers": 28,
    "num_cross_attention_heads": 16,
    "cross_attention_head_dim": 72,
    "cross_attention_dim": 1152,
    "caption_channels": 2304,
    "mlp_ratio": 2.5,
    "attention_bias": False,
    "sample_size": 32,
    "patch_size": 1,
    "norm_elementwise_affine": False,
    "norm_eps": 1e-6,
    "interpolation_scale": None,
}

SANA_1600M = {
    **SANA_600M,
    "num_attention_heads": 70,
    "num_layers": 20,
    "num_cross_attention_heads": 20,
    "cross_attention_head_dim": 112,
    "cross_attention_dim": 2240,
}

# Sprint is distilled on TrigFlow time in [0, 1] fed straight to the time embedder, so it keeps the
# default timestep_scale of 1.0 (the 1000x scale belongs to its flow-matching teacher).
SPRINT_EXTRA = {
    "qk_norm": "rms_norm_across_heads",
    "guidance_embeds": True,
    "guidance_embeds_scale": 0.1,
    "timestep_scale": 1.0,
}

# SANA's ControlNets copy their transformer's dimensions and its first 7 blocks.
CONTROLNET_LAYERS = 7

# mit-han-lab/dc-ae-f32c32-sana-1.1-diffusers: 32x spatial compression into 32 latent channels.
DC_AE_F32C32 = {
    "in_channels": 3,
    "latent_channels": 32,
    "attention_head_dim": 32,
    "encoder_block_types": ["ResBlock"] * 3 + ["EfficientViTBlock"] * 3,
    "decoder_block_types": ["ResBlock"] * 3 + ["EfficientViTBlock"] * 3,
    "encoder_block_out_channels": [128, 256, 512, 512, 1024, 1024],
    "decoder_block_out_channels": [128, 256, 512, 512, 1024, 1024],
    "encoder_layers_per_block": [2, 2, 2, 3, 3, 3],
    "decoder_layers_per_block": [3, 3, 3, 3, 3, 3],
    "encoder_qkv_multiscales": [[], [], [], [5], [5], [5]],
    "decoder_qkv_multiscales": [[], [], [], [5], [5], [5]],
    "upsample_block_type": "interpolate",
    "downsample_block_type": "Conv",
    "decoder_norm_types": "rms_norm",
    "decoder_act_fns": "silu",
    "scaling_factor": 0.41407,
}

# Gemma-2-2B as SANA uses it: transformers' Gemma2Config defaults.
GEMMA2_2B: dict[str, Any] = {}
GEMMA2_2B_LAYERS = 26

TINY_TRANSFORMER = {
    "num_attention_heads": 2,
    "attention_head_dim": 8,
    "num_layers": 2,
    "num_cross_attention_heads": 2,
    "cross_attention_head_dim": 8,
    "cross_attention_dim": 16,
    "caption_channels": 64,
    # 16 latents = 512px, the smallest size SanaPipeline's resolution binning knows.
    "sample_size": 16,
}

TINY_VAE = {
    "attention_head_dim": 8,
    "encoder_block_out_channels": [8, 8, 16, 16, 32, 32],
    "decoder_block_out_channels": [8, 8, 16, 16, 32, 32],
    "encoder_layers_per_block": [1, 1, 1, 1, 1, 1],
    "decoder_layers_per_block": [1, 1, 1, 1, 1, 1],
}

TINY_GEMMA = {
    "vocab_size": VOCAB_SIZE,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "head_dim": 32,
}

TINY_CONTROLNET_LAYERS = 1


def replica_spec(family: str, layers: int | None = None, tiny: bool = False) -> ReplicaSpec:
    """The configs of `family`'s replica, narrowed by `tiny` and cut to `layers` deep."""
    if family not in FAMILIES:
        known = ", ".join(FAMILIES)
        raise ReplicaError(f"unknown model family {family!r}; choose one of: {known}")
    if layers is not None and layers < 1:
        raise ReplicaError(f"--layers must be at least 1, got {layers}")

    base = SANA_1600M if family == "sana-1600m" else SANA_600M
    transformer = dict(base)
    sprint = family.startswith("sprint-")
    if sprint:
        transformer.update(SPRINT_EXTRA)
    vae = dict(DC_AE_F32C32)
    text_encoder = dict(GEMMA2_2B)
    controlnet_layers = CONTROLNET_LAYERS
    if tiny:
        transformer.update(TINY_TRANSFORMER)
        vae.update(TINY_VAE)
        text_encoder.update(TINY_GEMMA)
        controlnet_layers = TINY_CONTROLNET_LAYERS
    if layers is not None:
        transformer["num_layers"] = layers
        text_encoder["num_hidden_layers"] = min(
            layers, text_encoder.get("num_hidden_layers", GEMMA2_2B_LAYERS)
        )
        controlnet_layers = min(layers, controlnet_layers)

    spec = ReplicaSpec(
        family=family,
        pipeline="SanaPipeline",
        transformer=transformer,
        vae=vae,
        text_encoder=text_encoder,
        scheduler="flow-dpm-solver",
        transformer_dtype=torch.float16,
    )
    if sprint:
        spec = replace(
            spec, pipeline="SanaSprintPipeline", scheduler="scm", transformer_dtype=torch.bfloat16
        )
    if family.endswith("-controlnet-600m"):
        controlnet = {k: v for k, v in transformer.items() if k not in SPRINT_EXTRA}
        controlnet["num_layers"] = controlnet_layers
        spec = replace(spec, controlnet=controlnet)
        if not sprint:
            spec = replace(spec, pipeline="SanaControlNetPipeline")
    return spec


def build_model(spec: ReplicaSpec, component: str) -> torch.nn.Module:
    """One model component of the replica, built with its library's own initialisation.

    Builds on the current default device and dtype, so `with torch.device("meta"):` gives the
    full-size architecture without allocating memory (for parameter counts).
    """
    if component == "transformer":
        from diffusers import SanaTransformer2DModel

        return SanaTransformer2DModel(**spec.transformer)
    if component == "controlnet":
        from diffusers import SanaControlNetModel

        if spec.controlnet is None:
            raise ReplicaError(f"family {spec.family!r} has no ControlNet")
        return SanaControlNetModel(**spec.controlnet)
    if component == "vae":
        from diffusers import AutoencoderDC

        return AutoencoderDC(**spec.vae)
    if component == "text_encoder":
        from transformers import Gemma2Config, Gemma2Model

        return Gemma2Model(Gemma2Config(**spec.text_encoder))
    raise ReplicaError(f"unknown component {component!r}")


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype) -> Iterator[None]:
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def _seeded_model(spec: ReplicaSpec, component: str, dtype: torch.dtype, seed: int) -> Any:
    """Build in the saved dtype directly: a full-size Gemma in fp32 first would need ~10 GB."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        with _default_dtype(dtype):
            model = build_model(spec, component)
        with torch.no_grad():
            for param in model.parameters():
                zeros = param == 0
                count = int(zeros.sum())
                if count:
                    noise = torch.randn(count) * ZERO_PERTURBATION_STD
                    param.masked_scatter_(zeros, noise.to(param.dtype))
    return model.eval()


def _scheduler(kind: str) -> Any:
    from diffusers import DPMSolverMultistepScheduler, SCMScheduler

    if kind == "scm":
        return SCMScheduler(num_train_timesteps=1000, prediction_type="trigflow", sigma_data=0.5)
    # As SANA ships it for 512-2048px: DPM-Solver++ on flow sigmas, shift 3.
    return DPMSolverMultistepScheduler(
        flow_shift=3.0, use_flow_sigmas=True, prediction_type="flow_prediction"
    )


def build_pipeline(spec: ReplicaSpec, seed: int = 0) -> Any:
    """The replica as a diffusers pipeline object, weights seeded from `seed`."""
    import diffusers

    tokenizer = build_tokenizer()
    vocab = spec.text_encoder.get("vocab_size", 256000)
    if len(tokenizer) > vocab:
        raise ReplicaError(f"tokenizer has {len(tokenizer)} tokens, the text encoder {vocab}")
    # A seed per component, so that cutting the transformer's depth leaves the VAE unchanged.
    components: dict[str, Any] = {
        "tokenizer": tokenizer,
        "text_encoder": _seeded_model(spec, "text_encoder", spec.text_encoder_dtype, seed),
        "transformer": _seeded_model(spec, "transformer", spec.transformer_dtype, seed + 1),
        "vae": _seeded_model(spec, "vae", spec.vae_dtype, seed + 2),
        "scheduler": _scheduler(spec.scheduler),
    }
    if spec.controlnet is not None and spec.pipeline == "SanaControlNetPipeline":
        components["controlnet"] = _seeded_controlnet(spec, seed)
    return getattr(diffusers, spec.pipeline)(**components)


def _seeded_controlnet(spec: ReplicaSpec, seed: int) -> Any:
    return _seeded_model(spec, "controlnet", spec.transformer_dtype, seed + 3)


def write_replica(
    family: str, outdir: Path, layers: int | None = None, tiny: bool = False, seed: int = 0
) -> Path:
    """Write `family`'s replica into `outdir` (new or empty) and return the folder."""
    outdir = Path(outdir)
    spec = replica_spec(family, layers=layers, tiny=tiny)
    if outdir.exists() and (not outdir.is_dir() or any(outdir.iterdir())):
        raise ReplicaError(
            f"{outdir} already exists and is not an empty folder; "
            "choose a new folder or empty this one"
        )
    pipeline = build_pipeline(spec, seed=seed)
    outdir.mkdir(parents=True, exist_ok=True)
    # 5 GB shards as diffusers' SANA conversion writes them: a full-size Gemma comes in two.
    pipeline.save_pretrained(outdir, safe_serialization=True, max_shard_size="5GB")
    if spec.controlnet is not None and spec.pipeline != "SanaControlNetPipeline":
        # No diffusers pipeline pairs Sprint with a ControlNet: it goes in its own folder
        # beside the components, where Linea's catalogue finds it.
        _seeded_controlnet(spec, seed).save_pretrained(
            outdir / "controlnet", safe_serialization=True, max_shard_size="5GB"
        )
    return outdir


def _folder_size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def _parser() -> argparse.ArgumentParser:
    listing = "\n".join(f"  {name:22} {text}" for name, text in FAMILIES.items())
    parser = argparse.ArgumentParser(
        prog="python -m models.replica",
        description="Write a random-initialised replica of a real model, in diffusers layout.",
        epilog=f"families:\n{listing}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "family",
        choices=list(FAMILIES),
        metavar="FAMILY",
        help="which model to replicate (listed below)",
    )
    parser.add_argument("outdir", type=Path, metavar="OUTDIR", help="new or empty folder")
    parser.add_argument(
        "--layers",
        type=int,
        default=None,
        help="transformer/ControlNet/text-encoder depth (default: the real one)",
    )
    parser.add_argument(
        "--tiny",
        action="store_true",
        help="narrow widths of the same architecture, for fast CPU tests",
    )
    parser.add_argument("--seed", type=int, default=0, help="weight seed (default 0)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        folder = write_replica(
            args.family, args.outdir, layers=args.layers, tiny=args.tiny, seed=args.seed
        )
    except ReplicaError as exc:
        parser.error(str(exc))
    print(f"wrote {args.family} replica to {folder} ({_folder_size(folder) / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
