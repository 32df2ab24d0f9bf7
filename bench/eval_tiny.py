"""Full held-out evaluation of the shipped tiny model through Linea's runtime.

    python -m bench.eval_tiny [--model DIR] [--per-category N] [--seed S] [--grid PNG]
                              [--through runtime|diffusers]

Generates every held-out prompt once (seed S + prompt index) with the folder's default sampler
(linea.json), judges each image with models.tiny.evaluator, times generation per image at native
size, and writes bench/results/tiny_eval.json (and a grid of the first prompts of each category).
When the folder picks the best of several candidates per image (linea.json `candidates`, its
prompt judge in judge/), the same prompts and seeds are also scored and timed with one candidate,
in the same run: the model alone, and what the judge adds. Also judges the folder's autoencoder
alone, decode(encode(ground truth)) of the held-out
compositions in three layouts each: how much of a rendered scene survives the autoencoder.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from models.families import contrast_json
from models.tiny import quality
from models.tiny.evaluator import summarise
from models.tiny.scenes import CATEGORIES

DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "assets" / "models" / "linea-tiny"
RESULTS = Path(__file__).resolve().parent / "results" / "tiny_eval.json"
RECONSTRUCTION_LAYOUTS = (1, 2, 3)


def grid(images: list[np.ndarray], columns: int, cell: int = 128) -> Image.Image:
    rows = (len(images) + columns - 1) // columns
    sheet = Image.new("RGB", (columns * cell, rows * cell), "white")
    for i, image in enumerate(images):
        tile = Image.fromarray(image).resize((cell, cell), Image.Resampling.LANCZOS)
        sheet.paste(tile, ((i % columns) * cell, (i // columns) * cell))
    return sheet


def latency(pipe, sampler: quality.Sampler, repeats: int = 3) -> float:
    """Median seconds for one image at native size, prompt encoding included."""
    quality.generate(pipe, ["a red circle"], [0], sampler)  # warm-up
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        quality.generate(pipe, ["two small yellow stars on a dark background"], [i], sampler)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def load(model: Path, through: str):
    """The model as the app runs it (runtime.Engine on the CPU: fp32, 8-bit text encoder), or as
    diffusers' SanaPipeline loads it (fp32)."""
    if through == "runtime":
        from runtime import Engine

        engine = Engine(model, device="cpu")
        engine.load()
        return engine, f"Linea runtime ({engine.precision.describe()})"
    from diffusers import SanaPipeline

    pipe = SanaPipeline.from_pretrained(model, torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return pipe, "diffusers SanaPipeline (fp32)"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--per-category", type=int, default=None, help="default: all 32")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--grid", type=Path, default=None, help="write a PNG grid here")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--through", choices=("runtime", "diffusers"), default="runtime")
    args = parser.parse_args(argv)

    sampler = quality.Sampler.of_folder(args.model)
    pipe, path = load(args.model, args.through)
    prompts = quality.held_out(args.per_category)
    start = time.perf_counter()
    scores, verdicts, images = quality.score(pipe, prompts, sampler, seed=args.seed)
    seconds = time.perf_counter() - start
    alone = None
    if sampler.candidates > 1:
        one = dataclasses.replace(sampler, candidates=1)
        mark = time.perf_counter()
        alone_scores, alone_verdicts, _ = quality.score(pipe, prompts, one, seed=args.seed)
        alone = {
            "what": "the same prompts and seeds, one candidate per image (no judge)",
            "scores": {k: round(v, 4) for k, v in alone_scores.items()},
            "scores_nothing_extra": {k: round(v, 4) for k, v in summarise(
                alone_verdicts, exact=True).items()},
            "seconds_per_image_in_evaluation": round((time.perf_counter() - mark)
                                                     / len(prompts), 3),
            "seconds_per_image_single": round(latency(pipe, one), 3),
        }
    failures = [
        {"prompt": p, "seed": args.seed + i, "reason": v.reason}
        for i, ((p, _), v) in enumerate(zip(prompts, verdicts, strict=True)) if not v.passed
    ]
    result = {
        "model": args.model.name,
        "sampler": {"steps": sampler.steps, "guidance": sampler.guidance,
                    "guidance_interval": list(sampler.interval),
                    "contrast_guidance": None if sampler.contrast is None
                    else contrast_json(sampler.contrast),
                    "scheduler": "flow DPM-Solver++ (SANA's default)",
                    "candidates": sampler.candidates},
        "through": path,
        "prompts": len(prompts),
        "seeds": f"{args.seed} + prompt index",
        "scores": {k: round(v, 4) for k, v in scores.items()},
        # The same, counting a pass only when the image holds no object beyond those asked
        # (GenEval's rules for single, colour, two objects and position do not look at them).
        "scores_nothing_extra": {k: round(v, 4) for k, v in summarise(verdicts,
                                                                      exact=True).items()},
        "seconds_per_image_in_evaluation": round(seconds / len(prompts), 3),
        "seconds_per_image_single": round(latency(pipe, sampler), 3),
        "size": 256,
        "device": f"cpu ({platform.processor() or platform.machine()}, "
                  f"{torch.get_num_threads()} threads, {os.cpu_count()} cores)",
        "failures": failures,
    }
    if alone is not None:
        result["one_candidate"] = alone
    from diffusers import AutoencoderDC

    vae = AutoencoderDC.from_pretrained(args.model / "vae", torch_dtype=torch.float32).eval()
    reconstruction, reconstruction_verdicts = quality.autoencoder_reconstruction(
        vae, RECONSTRUCTION_LAYOUTS, args.per_category)
    result["autoencoder_reconstruction"] = {
        "what": "decode(encode(rendered ground truth)) of the held-out compositions, judged "
                "by the same evaluator, fp32",
        "layout_seeds": list(RECONSTRUCTION_LAYOUTS),
        "images": len(reconstruction_verdicts),
        "scores": {k: round(v, 4) for k, v in reconstruction.items()},
        "failures_by_category": {c: sum(1 for v in reconstruction_verdicts
                                        if v.category == c and not v.passed)
                                 for c in CATEGORIES},
    }
    if args.through == "runtime":
        # The reference in the same run: diffusers' own pipeline on the same folder, steps and
        # guidance (SanaPipeline cannot limit guidance to an interval, so it guides every step).
        reference, label = load(args.model, "diffusers")
        seconds = latency(reference, quality.Sampler(sampler.steps, sampler.guidance))
        result["reference"] = {
            "through": f"{label}, guidance at every step",
            "seconds_per_image_single": round(seconds, 3),
            "runtime_over_reference": round(result["seconds_per_image_single"] / seconds, 3),
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({k: result[k] for k in ("scores", "seconds_per_image_single", "one_candidate",
                                             "reference", "autoencoder_reconstruction")
                      if k in result}, indent=2))
    if args.grid:
        per_row = 8
        picked = [images[i] for i in quality.subset_indices(prompts, per_row)]
        grid(picked, per_row).save(args.grid, optimize=True)
        print(f"grid: {args.grid}")


if __name__ == "__main__":
    main()
