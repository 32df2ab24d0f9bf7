"""The tiny model's parts: SANA's classes at miniature sizes, a word-level tokenizer, the folder.

The folder written by `save_folder` is an ordinary SANA folder (diffusers layout, safetensors),
loadable with `SanaPipeline.from_pretrained`, plus `linea.json` with the runtime's defaults.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
from tokenizers.models import WordLevel
from transformers import Gemma2Config, Gemma2Model, PreTrainedTokenizerFast

from models.families import ContrastGuidance, ContrastRule, contrast_json
from models.tiny.captions import NUMBER_WORDS, PLURALS, SIZE_WORDS, vocabulary
from models.tiny.scenes import COLOURS, MAX_COUNT, RELATIONS, SHAPES

# The noise levels where this model lays out how many objects it draws (models/tiny/README.md:
# most over-counted images already show the extra object at noise 0.85), all above the shipped
# guidance interval.
CONTRAST_INTERVAL = (0.8, 1.0)

NATIVE_SIZE = 256
SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<unk>")  # pad id 0, as SanaPipeline expects
MAX_CAPTION_TOKENS = 32  # the longest caption is ~20 words; padding beyond is masked out

VAE_COMPRESSION = 8  # the autoencoder's spatial compression (256 px -> 32 x 32 latents)
PATCH_SIZE = 4  # the transformer's patches: 32 x 32 latents -> 8 x 8 tokens
LATENT_CHANNELS = 4

TRANSFORMER = {
    "in_channels": LATENT_CHANNELS,
    "out_channels": LATENT_CHANNELS,
    # Few wide heads (LiT's guideline): linear attention's per-head state grows with head width.
    "num_attention_heads": 2,
    "attention_head_dim": 64,
    "num_layers": 8,
    "num_cross_attention_heads": 2,
    "cross_attention_head_dim": 64,
    "cross_attention_dim": 128,
    "caption_channels": 128,
    "mlp_ratio": 2.5,
    "attention_bias": False,
    "sample_size": NATIVE_SIZE // VAE_COMPRESSION,
    "patch_size": PATCH_SIZE,
    "norm_elementwise_affine": False,
    "norm_eps": 1e-6,
    # Sin-cos positions on top of Mix-FFN's convolutions: relations need absolute position.
    "interpolation_scale": 1,
}

# An f8 DC-AE (4 stages; 2 ** (4 - 1) = 8) with 4 latent channels: flat shapes need little
# compression to learn, so it trains in minutes on a CPU where the f32 one took hours; the
# transformer's 4 x 4 patches keep its token grid at 8 x 8. The first stage has no layers, so
# its space-to-channel (pixel unshuffle / shuffle) step is the input / output layer and no
# convolution runs at full resolution.
VAE = {
    "in_channels": 3,
    "latent_channels": LATENT_CHANNELS,
    "attention_head_dim": 32,
    # Convolutional blocks only: the autoencoder then trains on crops and runs at any size.
    "encoder_block_types": ["ResBlock"] * 4,
    "decoder_block_types": ["ResBlock"] * 4,
    "encoder_block_out_channels": [16, 32, 64, 64],
    "decoder_block_out_channels": [32, 32, 64, 128],
    "encoder_layers_per_block": [0, 1, 1, 1],
    "decoder_layers_per_block": [0, 1, 1, 1],
    "encoder_qkv_multiscales": [[]] * 4,
    "decoder_qkv_multiscales": [[]] * 4,
    "upsample_block_type": "pixel_shuffle",
    "downsample_block_type": "pixel_unshuffle",
    "decoder_norm_types": "rms_norm",
    "decoder_act_fns": "silu",
    "scaling_factor": 1.0,
}

TEXT_ENCODER = {
    "hidden_size": 128,
    "intermediate_size": 384,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 32,
    "query_pre_attn_scalar": 32,
    "max_position_embeddings": 512,
    "sliding_window": 512,
    "pad_token_id": 0,
    "bos_token_id": 1,
    "eos_token_id": 2,
}

# SANA's Flow-DPM-Solver, with a smaller shift: at 8x8 latents less of the schedule needs to sit
# at high noise than at 32x32 (1024px), for which SANA ships shift 3.
def scheduler_config(flow_shift: float) -> dict[str, Any]:
    return {"flow_shift": flow_shift, "use_flow_sigmas": True,
            "prediction_type": "flow_prediction", "solver_order": 2,
            "algorithm_type": "dpmsolver++"}


def build_tokenizer() -> PreTrainedTokenizerFast:
    """Word-level tokenizer over the world's vocabulary; `<bos>` in front, pad id 0."""
    words = [*SPECIAL_TOKENS, *vocabulary()]
    core = Tokenizer(WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()]
    )
    core.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", 1)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
        unk_token="<unk>", padding_side="right", model_max_length=512,
    )


def build_text_encoder(vocab_size: int) -> Gemma2Model:
    return Gemma2Model(Gemma2Config(vocab_size=vocab_size, **TEXT_ENCODER))


def build_transformer(layers: int = 0, latent_channels: int = LATENT_CHANNELS) -> torch.nn.Module:
    """The miniature SanaTransformer2DModel; `layers` blocks (0: TRANSFORMER's), reading and
    writing `latent_channels` latent channels."""
    from diffusers import SanaTransformer2DModel

    config = dict(TRANSFORMER, num_layers=layers or TRANSFORMER["num_layers"],
                  in_channels=latent_channels, out_channels=latent_channels)
    return SanaTransformer2DModel(**config)


def build_vae(latent_channels: int = LATENT_CHANNELS) -> torch.nn.Module:
    """The miniature AutoencoderDC, with `latent_channels` latent channels."""
    from diffusers import AutoencoderDC

    return AutoencoderDC(**dict(VAE, latent_channels=latent_channels))


def knows() -> str:
    return (
        f"Flat anti-aliased shapes ({', '.join(SHAPES)}) in {len(COLOURS)} colours "
        f"({', '.join(COLOURS)}), small or large, one to four of them, or two different ones "
        f"placed {', '.join(RELATIONS)} each other, on dark, light or gradient backgrounds. "
        "Write prompts like 'a red circle to the left of a blue square' or "
        "'three small yellow stars on a dark background'."
    )


def contrast(count_scale: float = 0.0, duplicate_scale: float = 0.0,
             interval: tuple[float, float] = CONTRAST_INTERVAL) -> ContrastGuidance | None:
    """This model's contrast guidance: away from one object more than the prompt asks (None
    when both scales are 0).

    Count (`count_scale`): a count word raised by one ("a pair of" and "two" -> "three",
    "three" -> "four"; four, the world's largest count, has no next). Duplicates
    (`duplicate_scale`, for prompts with no count word): every single object made two ("a red
    circle" -> "two red circles", "one tiny cross" -> "two tiny crosses")."""
    rules = []
    if count_scale:
        rules.append(ContrastRule(float(count_scale), (
            ("a pair of", NUMBER_WORDS[3]),
            *((NUMBER_WORDS[n], NUMBER_WORDS[n + 1]) for n in range(2, MAX_COUNT))),
            about="one object more than a count of two or three asks for"))
    if duplicate_scale:
        words = [*COLOURS, *(word for options in SIZE_WORDS.values() for word in options)]
        describing = "((?:(?:" + "|".join(words) + ") )*)"
        endings: dict[str, list[str]] = {}
        for shape, plural in PLURALS.items():
            endings.setdefault(plural[len(shape):], []).append(shape)
        rules.append(ContrastRule(float(duplicate_scale), tuple(
            (f"(?:a|an|{NUMBER_WORDS[1]}) {describing}({'|'.join(shapes)})",
             rf"{NUMBER_WORDS[2]} \1\2{ending}")
            for ending, shapes in endings.items()),
            about="a second copy of an object the prompt names once"))
    return ContrastGuidance(interval, tuple(rules)) if rules else None


def save_folder(
    folder: Path,
    tokenizer: PreTrainedTokenizerFast,
    text_encoder: Gemma2Model,
    transformer: torch.nn.Module,
    vae: torch.nn.Module,
    *,
    flow_shift: float,
    steps: int,
    guidance: float,
    guidance_interval: tuple[float, float] = (0.0, 1.0),
    contrast: ContrastGuidance | None = None,
) -> Path:
    """Write a SANA folder: fp16 transformer and autoencoder, bf16 text encoder, linea.json
    (with the sampler defaults: steps, guidance, the noise levels it guides and its contrast
    guidance, if any)."""
    from diffusers import DPMSolverMultistepScheduler, SanaPipeline

    pipe = SanaPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder.to(torch.bfloat16),
        transformer=transformer.to(torch.float16),
        vae=vae.to(torch.float16),
        scheduler=DPMSolverMultistepScheduler(**scheduler_config(flow_shift)),
    )
    pipe.save_pretrained(folder, safe_serialization=True)
    linea = {
        "family": "linea-tiny",
        "label": "Linea Tiny",
        "complex_human_instruction": False,
        "resolution_binning": False,
        "native_size": NATIVE_SIZE,
        "max_side": 384,
        "supported_sizes": (
            "256x256 native and the only trained size; other multiples of 32 up to 384 run "
            "but their quality is untested"
        ),
        "default_steps": steps,
        "default_guidance": guidance,
        "guidance_interval": [float(v) for v in guidance_interval],
        "max_tokens": MAX_CAPTION_TOKENS,
        "knows": knows(),
    }
    if contrast is not None:
        linea["contrast_guidance"] = contrast_json(contrast)
    (folder / "linea.json").write_text(json.dumps(linea, indent=2) + "\n", encoding="utf-8")
    return folder
