"""The device, its memory, and the memory plans that make a model fit it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from runtime.catalog import ModelInfo

if TYPE_CHECKING:
    import torch

GIB = 1024**3


class MemoryPlan(StrEnum):
    """From fastest to leanest. An out-of-memory error moves to the next one."""

    RESIDENT = "resident"
    RELEASE_ENCODER = "release-encoder"
    TILED_DECODE = "tiled-decode"
    CPU_OFFLOAD = "cpu-offload"

    @property
    def description(self) -> str:
        return {
            MemoryPlan.RESIDENT: "everything resident",
            MemoryPlan.RELEASE_ENCODER: "text encoder released after encoding",
            MemoryPlan.TILED_DECODE: "text encoder released, tiled decoding",
            MemoryPlan.CPU_OFFLOAD: "models moved to the GPU only while used, tiled decoding",
        }[self]

    @property
    def tiles_decode(self) -> bool:
        return self in (MemoryPlan.TILED_DECODE, MemoryPlan.CPU_OFFLOAD)

    @property
    def releases_encoder(self) -> bool:
        return self is not MemoryPlan.RESIDENT

    def next(self) -> MemoryPlan | None:
        plans = list(MemoryPlan)
        index = plans.index(self)
        return plans[index + 1] if index + 1 < len(plans) else None


@dataclass(frozen=True)
class DeviceInfo:
    kind: str
    name: str
    total_bytes: int
    free_bytes: int
    bf16: bool
    cpu_threads: int

    @property
    def is_cpu(self) -> bool:
        return self.kind == "cpu"

    @property
    def torch_device(self) -> torch.device:
        import torch

        return torch.device("cuda" if self.kind == "cuda" else "cpu")

    def summary(self) -> str:
        if self.is_cpu:
            return (f"CPU ({self.cpu_threads} threads, {self.free_bytes / GIB:.1f} GiB RAM free): "
                    "works, but slowly; a GPU is much faster")
        return f"{self.name} ({self.free_bytes / GIB:.1f} of {self.total_bytes / GIB:.1f} GiB free)"


def _system_memory() -> tuple[int, int]:
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        free = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
        return total, free
    except (ValueError, OSError, AttributeError):
        return 16 * GIB, 8 * GIB


def detect_device(preference: str | None = None) -> DeviceInfo:
    """`preference` is "cuda", "cpu" or None/"auto" (a GPU when there is one)."""
    import torch

    want = (preference or "auto").lower()
    if want not in ("auto", "cuda", "cpu"):
        raise ValueError(f"Unknown device {preference!r}: use auto, cuda or cpu.")
    if want != "cpu" and torch.cuda.is_available():
        free, total = torch.cuda.mem_get_info()
        cap = torch.cuda.get_per_process_memory_fraction() if hasattr(
            torch.cuda, "get_per_process_memory_fraction") else 1.0
        total_capped = int(total * cap)
        return DeviceInfo("cuda", torch.cuda.get_device_name(), total_capped,
                          min(free, total_capped), torch.cuda.is_bf16_supported(),
                          torch.get_num_threads())
    if want == "cuda":
        raise RuntimeError("No CUDA GPU is available.")
    total, free = _system_memory()
    return DeviceInfo("cpu", "CPU", total, free, True, torch.get_num_threads())


def estimate_bytes(model: ModelInfo, plan: MemoryPlan, width: int, height: int,
                   quantized_encoder: bool = True) -> int:
    """A rough peak-memory estimate for one image; the OOM fallback covers the error in it."""
    params = model.component_params
    encoder = params.get("text_encoder", 0)
    if quantized_encoder:
        encoder_bytes = model.embedding_params * 2 + (encoder - model.embedding_params)
    else:
        encoder_bytes = encoder * 2
    dit_bytes = (params.get("transformer", 0) + params.get("controlnet", 0)) * 2
    vae_bytes = params.get("vae", 0) * 2
    pixels = width * height
    # The decoder's widest full-resolution stage dominates activations (~48 bytes a pixel in
    # half precision); tiling caps it at a 512px tile.
    decode_act = 48 * (min(pixels, 512 * 512) if plan.tiles_decode else pixels)
    resident = {
        MemoryPlan.RESIDENT: encoder_bytes + dit_bytes + vae_bytes,
        MemoryPlan.RELEASE_ENCODER: max(encoder_bytes, dit_bytes + vae_bytes),
        MemoryPlan.TILED_DECODE: max(encoder_bytes, dit_bytes + vae_bytes),
        MemoryPlan.CPU_OFFLOAD: max(encoder_bytes, dit_bytes, vae_bytes),
    }[plan]
    return int(resident + decode_act + 512 * 1024**2)


def choose_plan(device: DeviceInfo, model: ModelInfo, width: int, height: int) -> MemoryPlan:
    if device.is_cpu:
        return MemoryPlan.RESIDENT
    budget = device.free_bytes * 0.9
    for plan in MemoryPlan:
        if estimate_bytes(model, plan, width, height) <= budget:
            return plan
    return MemoryPlan.CPU_OFFLOAD


def fits(device: DeviceInfo, model: ModelInfo) -> bool:
    size = model.native_size
    return estimate_bytes(model, MemoryPlan.CPU_OFFLOAD, size, size) <= device.total_bytes
