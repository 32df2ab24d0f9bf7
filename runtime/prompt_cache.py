"""Prompt embeddings kept between generations: re-rolling a seed never re-runs the encoder."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class PromptKey:
    text: str
    complex_human_instruction: bool
    max_tokens: int


@dataclass(frozen=True)
class PromptEmbedding:
    embeds: torch.Tensor
    mask: torch.Tensor
    tokens: int = 0  # the text's own tokens, before padding or truncation


class PromptCache:
    def __init__(self, capacity: int = 16) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[PromptKey, PromptEmbedding] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, key: PromptKey) -> PromptEmbedding | None:
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry

    def put(self, key: PromptKey, value: PromptEmbedding) -> None:
        self._entries[key] = value
        self._entries.move_to_end(key)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
