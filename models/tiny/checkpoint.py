"""Training checkpoints as safetensors shards plus one JSON state file (never pickles).

Shards stay under `SHARD_BYTES` so a checkpoint can travel through channels that cap file size.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

SHARD_BYTES = 15_000_000


class CheckpointError(RuntimeError):
    """A checkpoint folder that is missing or incomplete."""


def save_tensors(folder: Path, stem: str, tensors: dict[str, torch.Tensor]) -> None:
    """Write `tensors` as folder/stem-NN.safetensors shards, replacing older shards of `stem`."""
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob(f"{stem}-*.safetensors"):
        old.unlink()
    shard: dict[str, torch.Tensor] = {}
    size, index = 0, 0
    for name, tensor in tensors.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shard and size + nbytes > SHARD_BYTES:
            save_file(shard, folder / f"{stem}-{index:02d}.safetensors")
            shard, size, index = {}, 0, index + 1
        shard[name] = tensor.detach().to("cpu").contiguous()
        size += nbytes
    save_file(shard, folder / f"{stem}-{index:02d}.safetensors")


def load_tensors(folder: Path, stem: str) -> dict[str, torch.Tensor]:
    shards = sorted(folder.glob(f"{stem}-*.safetensors"))
    if not shards:
        raise CheckpointError(f"no {stem}-*.safetensors in {folder}; train from scratch first")
    return merged(shards)


def merged(files: list[Path]) -> dict[str, torch.Tensor]:
    """The tensors of several safetensors files in one dict (never unpickles)."""
    tensors: dict[str, torch.Tensor] = {}
    for file in files:
        tensors.update(load_file(file))
    return tensors


def has_tensors(folder: Path, stem: str) -> bool:
    return any(folder.glob(f"{stem}-*.safetensors"))


def optimizer_tensors(
    optimizer: torch.optim.Optimizer, names: dict[int, str]
) -> dict[str, torch.Tensor]:
    """An AdamW state as named tensors; `names` maps id(parameter) to its name."""
    found = {}
    for group in optimizer.param_groups:
        for param in group["params"]:
            for key, value in optimizer.state.get(param, {}).items():
                found[f"{names[id(param)]}::{key}"] = torch.as_tensor(value)
    return found


def restore_optimizer(
    optimizer: torch.optim.Optimizer, names: dict[int, str], tensors: dict[str, torch.Tensor]
) -> None:
    for group in optimizer.param_groups:
        for param in group["params"]:
            prefix = names[id(param)] + "::"
            # AdamW keeps its step counter on the CPU unless it runs "capturable".
            state = {k[len(prefix):]: v if k.endswith("::step") else v.to(param.device)
                     for k, v in tensors.items() if k.startswith(prefix)}
            if state:
                optimizer.state[param] = state


def save_state(folder: Path, state: dict[str, Any]) -> None:
    """Write state.json atomically, so an interrupted save never leaves a broken checkpoint."""
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / "state.json.partial"
    partial.write_text(json.dumps(state, indent=1) + "\n", encoding="utf-8")
    os.replace(partial, folder / "state.json")


def load_state(folder: Path) -> dict[str, Any]:
    path = folder / "state.json"
    if not path.is_file():
        raise CheckpointError(f"no state.json in {folder}; run without --resume to start")
    return json.loads(path.read_text(encoding="utf-8"))
