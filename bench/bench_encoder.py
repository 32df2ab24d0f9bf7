"""The 8-bit text encoder against the unquantised one on a replica: embedding cosine similarity,
memory and latency. On CUDA the reference is bf16; on a CPU it is fp32.

    python -m bench.bench_encoder --replica-dir DIR [--device cuda] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from runtime.offline import enforce_offline

enforce_offline()

import torch  # noqa: E402

from bench.bench_runtime import PROMPTS, versions  # noqa: E402


def measure(folder: Path, device: str, quantize: bool) -> tuple[list[torch.Tensor], dict]:
    from runtime import Engine
    from runtime.loader import load_tokenizer

    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    engine = Engine(folder, device=device, quantize_text_encoder=quantize)
    engine._load_text_encoder()
    engine._parts.tokenizer = load_tokenizer(engine.model)
    weights = (torch.cuda.memory_allocated() - before) / 2**30 if device == "cuda" else None
    outputs, times = [], []
    for prompt in PROMPTS:
        engine.prompt_cache.clear()
        if device == "cuda":
            torch.cuda.synchronize()
        begin = time.perf_counter()
        embedding = engine.encode(prompt, True, True)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - begin)
        outputs.append(embedding.embeds[0][embedding.mask[0].bool()].float().cpu())
    info = {"precision": engine.precision.describe(), "weights_gib": weights,
            "encode_s_median": sorted(times[1:])[len(times[1:]) // 2]}
    engine.unload()
    return outputs, info


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--replica-dir", type=Path, required=True)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    reference, ref_info = measure(args.replica_dir, args.device, quantize=False)
    quantised, q_info = measure(args.replica_dir, args.device, quantize=True)
    cosines = torch.cat([torch.nn.functional.cosine_similarity(a, b, dim=-1)
                         for a, b in zip(quantised, reference, strict=True)])
    report = {"benchmark": "8-bit text encoder vs unquantised", "folder": str(args.replica_dir),
              "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
              "versions": versions(), "prompts": len(PROMPTS),
              "cosine_mean": round(cosines.mean().item(), 5),
              "cosine_min": round(cosines.min().item(), 5),
              "int8": q_info, "reference": ref_info}
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
