"""What a wider or deeper linea-tiny transformer costs per training step on this machine: forward,
backward and AdamW step of a SanaTransformer2DModel at the base config (build.TRANSFORMER, 8
blocks) and at wider or deeper ones, the shipped 12 blocks among them (batch 32, 8 x 8 latent
tokens, random inputs), median of several steps after warm-up, each as a ratio against the base
config measured in the same run. For planning a larger embedded model.

    python -m bench.bench_tiny_width      # writes bench/results/tiny_width_cpu.json
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path

import diffusers
import torch

from models.tiny import build

RESULTS = Path(__file__).resolve().parent / "results" / "tiny_width_cpu.json"
BATCH = 32
WARMUP = 3
STEPS = 10
# (attention heads of 64 channels, layers); the first is the base config, the reference; the
# second the shipped depth (cpu-deep12 grew the base to 12 blocks).
VARIANTS = ((2, 8), (2, 12), (4, 8), (3, 12))


def config(heads: int, layers: int) -> dict:
    """The base transformer config (build.TRANSFORMER) with another width (heads x 64) and depth."""
    head_dim = build.TRANSFORMER["attention_head_dim"]
    return dict(build.TRANSFORMER, num_attention_heads=heads, num_layers=layers,
                num_cross_attention_heads=heads, cross_attention_dim=heads * head_dim)


def step_seconds(heads: int, layers: int) -> tuple[int, float]:
    """Parameters and median seconds per training step of one variant."""
    torch.manual_seed(0)
    model = diffusers.SanaTransformer2DModel(**config(heads, layers))
    optimiser = torch.optim.AdamW(model.parameters(), 1e-4)
    side = build.NATIVE_SIZE // build.VAE_COMPRESSION
    latents = torch.randn(BATCH, build.LATENT_CHANNELS, side, side)
    caption = torch.randn(BATCH, build.MAX_CAPTION_TOKENS, build.TRANSFORMER["caption_channels"])
    timesteps = torch.rand(BATCH) * 1000
    times = []
    for i in range(WARMUP + STEPS):
        start = time.perf_counter()
        out = model(latents, encoder_hidden_states=caption, timestep=timesteps,
                    return_dict=False)[0]
        optimiser.zero_grad(set_to_none=True)
        out.square().mean().backward()
        optimiser.step()
        if i >= WARMUP:
            times.append(time.perf_counter() - start)
    return sum(p.numel() for p in model.parameters()), statistics.median(times)


def main() -> None:
    rows = []
    for heads, layers in VARIANTS:
        params, seconds = step_seconds(heads, layers)
        rows.append({"heads": heads, "head_dim": build.TRANSFORMER["attention_head_dim"],
                     "layers": layers, "parameters": params,
                     "seconds_per_step_median": round(seconds, 3)})
    reference = rows[0]["seconds_per_step_median"]
    for row in rows:
        row["over_base"] = round(row["seconds_per_step_median"] / reference, 2)
        print(f"{row['heads']} heads x {row['head_dim']}, {row['layers']} layers: "
              f"{row['parameters'] / 1e6:.2f}M parameters, {row['seconds_per_step_median']:.3f} s "
              f"per step ({row['over_base']:.2f}x the base config)", flush=True)
    result = {
        "what": "training step (forward, backward, AdamW) of SanaTransformer2DModel, random "
                f"inputs, batch {BATCH}, 8 x 8 latent tokens, median of {STEPS} after {WARMUP}",
        "reference": "the base config (first row: build.TRANSFORMER, 8 blocks), measured in the "
                     "same run; the shipped folder has 12 blocks (second row)",
        "rows": rows,
        "device": f"cpu ({platform.processor() or platform.machine()}, "
                  f"{torch.get_num_threads()} threads, {os.cpu_count()} cores)",
        "versions": {"torch": torch.__version__, "diffusers": diffusers.__version__,
                     "python": platform.python_version()},
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
