"""A prompt judge: a small network that scores how well an image shows its prompt.

A model folder may carry one in `judge/` (config.json + model.safetensors). When the folder's
linea.json asks for more than one candidate, the engine draws that many images for each seed the
user asked for, scores each against the prompt and keeps the best (SANA 1.5's inference-time
scaling, with a judge small enough for a laptop CPU). The judge reads the prompt through the
model's own tokenizer and learns its own word embeddings; it never sees the denoiser's insides.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from runtime.errors import ModelFolderError

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


@dataclass(frozen=True)
class JudgeConfig:
    vocab_size: int
    max_tokens: int = 32
    image_size: int = 128
    channels: tuple[int, ...] = (16, 32, 64, 96)
    single_stages: int = 2  # the first stages (at the largest sizes) have one convolution
    width: int = 96
    heads: int = 4
    layers: int = 4

    @property
    def grid(self) -> int:
        """Image tokens per side: the image size halved once per stage."""
        return self.image_size // 2 ** len(self.channels)

    def to_dict(self) -> dict:
        return {**asdict(self), "channels": list(self.channels)}

    @classmethod
    def from_dict(cls, data: dict) -> JudgeConfig:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        if "channels" in known:
            known["channels"] = tuple(int(c) for c in known["channels"])
        return cls(**known)


class PromptJudge(nn.Module):
    """Image (B, 3, H, W) in [0, 1] and prompt tokens (B, T) -> a logit per pair: how likely the
    image shows what the prompt asks for (objects, colours, counts, where they stand)."""

    def __init__(self, config: JudgeConfig) -> None:
        super().__init__()
        self.config = config
        stages: list[nn.Module] = []
        previous = 3
        for index, channels in enumerate(config.channels):
            stages += [nn.Conv2d(previous, channels, 3, stride=2, padding=1),
                       nn.GroupNorm(4, channels), nn.GELU()]
            if index >= config.single_stages:
                stages += [nn.Conv2d(channels, channels, 3, padding=1),
                           nn.GroupNorm(4, channels), nn.GELU()]
            previous = channels
        self.cnn = nn.Sequential(*stages)
        width = config.width
        self.image_in = nn.Linear(previous, width)
        self.image_position = nn.Parameter(torch.zeros(config.grid * config.grid, width))
        self.words = nn.Embedding(config.vocab_size, width)
        self.word_position = nn.Parameter(torch.zeros(config.max_tokens, width))
        self.kind = nn.Parameter(torch.zeros(3, width))  # summary, word, image
        layer = nn.TransformerEncoderLayer(width, config.heads, 4 * width, dropout=0.0,
                                           activation="gelu", batch_first=True,
                                           norm_first=True)
        self.mixer = nn.TransformerEncoder(layer, config.layers, enable_nested_tensor=False)
        self.head = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, 1))
        nn.init.normal_(self.image_position, std=0.02)
        nn.init.normal_(self.word_position, std=0.02)
        nn.init.normal_(self.kind, std=0.02)

    def forward(self, images: torch.Tensor, tokens: torch.Tensor,
                mask: torch.Tensor) -> torch.Tensor:
        return self.score(self.picture(images), tokens, mask)

    def picture(self, images: torch.Tensor) -> torch.Tensor:
        """Image tokens (B, grid * grid, width), to score against one prompt or several."""
        config = self.config
        if images.shape[-1] != config.image_size or images.shape[-2] != config.image_size:
            images = F.interpolate(images, size=(config.image_size, config.image_size),
                                   mode="bilinear", antialias=True, align_corners=False)
        features = self.cnn(images * 2 - 1).flatten(2).transpose(1, 2)
        return self.image_in(features) + self.image_position + self.kind[2]

    def score(self, picture: torch.Tensor, tokens: torch.Tensor,
              mask: torch.Tensor) -> torch.Tensor:
        return self.verdict(self.mix(picture, tokens, mask))

    def verdict(self, mixed: torch.Tensor) -> torch.Tensor:
        """The logit read off a mixed sequence's summary token."""
        return self.head(mixed[:, 0]).squeeze(-1)

    def mix(self, picture: torch.Tensor, tokens: torch.Tensor,
            mask: torch.Tensor) -> torch.Tensor:
        """The mixed sequence (B, 1 + T + grid * grid, width): summary, words, image."""
        config = self.config
        tokens = tokens[:, : config.max_tokens]
        mask = mask[:, : config.max_tokens].bool()
        words = self.words(tokens) + self.word_position[: tokens.shape[1]] + self.kind[1]
        summary = self.kind[0].expand(picture.shape[0], 1, -1)
        sequence = torch.cat([summary, words, picture], dim=1)
        keep = torch.cat([torch.ones_like(mask[:, :1]), mask,
                          torch.ones(mask.shape[0], picture.shape[1], dtype=torch.bool,
                                     device=mask.device)], dim=1)
        return self.mixer(sequence, src_key_padding_mask=~keep)


def tokenize(tokenizer, texts: list[str], max_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and attention mask (B, max_tokens) as the judge reads prompts: lower-cased,
    padded on the right."""
    tokenizer.padding_side = "right"
    found = tokenizer([t.lower().strip() for t in texts], padding="max_length",
                      max_length=max_tokens, truncation=True, return_tensors="pt")
    return found.input_ids, found.attention_mask


def save_judge(judge: PromptJudge, folder: Path) -> None:
    """Write `judge` into `folder` (created), weights as safetensors."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG_NAME).write_text(json.dumps(judge.config.to_dict(), indent=2) + "\n")
    state = {k: v.detach().contiguous().cpu() for k, v in judge.state_dict().items()}
    save_file(state, str(folder / WEIGHTS_NAME))


def load_judge(folder: Path, device: torch.device | str = "cpu") -> PromptJudge:
    """The judge in `folder`; a clear error when it is missing or does not fit its config."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    config_path, weights_path = folder / CONFIG_NAME, folder / WEIGHTS_NAME
    if not config_path.is_file() or not weights_path.is_file():
        raise ModelFolderError(
            f"The model's prompt judge in {folder} is incomplete: it needs {CONFIG_NAME} and "
            f"{WEIGHTS_NAME}.",
            "Reinstall the model, or set \"candidates\" to 1 in its linea.json to go without "
            "the judge.")
    try:
        config = JudgeConfig.from_dict(json.loads(config_path.read_text()))
        judge = PromptJudge(config)
        judge.load_state_dict(load_file(str(weights_path)))
    except (ValueError, TypeError, RuntimeError, SafetensorError, json.JSONDecodeError) as exc:
        raise ModelFolderError(
            f"The model's prompt judge in {folder} cannot be read ({exc}).",
            "Reinstall the model, or set \"candidates\" to 1 in its linea.json to go without "
            "the judge.") from exc
    return judge.to(device).eval()
