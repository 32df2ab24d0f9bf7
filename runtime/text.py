"""Prompt encoding as SANA does it: lower-cased, optional complex-human-instruction prefix,
padded to a fixed length, and for the prompt the first token plus the last 299 kept."""

from __future__ import annotations

import inspect
from functools import cache
from typing import Any

import torch

from runtime.prompt_cache import PromptEmbedding


@cache
def complex_human_instruction() -> str:
    """SANA's in-context prefix, taken from diffusers so it stays identical to the reference."""
    from diffusers import SanaPipeline

    lines = inspect.signature(SanaPipeline.__call__).parameters["complex_human_instruction"].default
    return "\n".join(lines)


def encode_text(tokenizer: Any, text_encoder: torch.nn.Module, text: str, *,
                use_instruction: bool, max_tokens: int, device: torch.device,
                select: bool) -> PromptEmbedding:
    """`select` keeps token 0 and the last max_tokens-1 tokens, as SanaPipeline does for prompts
    (for negative prompts it does not; without the prefix the two are the same)."""
    tokenizer.padding_side = "right"
    text = text.lower().strip()
    tokens = len(tokenizer(text, add_special_tokens=False).input_ids)
    max_length = max_tokens
    if use_instruction:
        prefix = complex_human_instruction()
        text = prefix + text
        max_length = len(tokenizer.encode(prefix)) + max_tokens - 2
    inputs = tokenizer([text], padding="max_length", max_length=max_length, truncation=True,
                       add_special_tokens=True, return_tensors="pt")
    mask = inputs.attention_mask.to(device)
    with torch.inference_mode():
        embeds = text_encoder(inputs.input_ids.to(device), attention_mask=mask)[0]
    if select:
        index = [0, *range(-max_tokens + 1, 0)]
        embeds, mask = embeds[:, index], mask[:, index]
    return PromptEmbedding(embeds.clone(), mask.clone(), tokens)
