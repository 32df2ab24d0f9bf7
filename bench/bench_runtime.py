"""Linea's runtime against diffusers' own pipeline, same model folder, seed and settings, one run.

    python -m bench.bench_runtime --family sana-600m            # CPU: tiny replica, 256px
    python -m bench.bench_runtime --family sana-600m --full --device cuda --size 1024 --cap-gb 16
    python -m bench.bench_runtime --family sprint-controlnet-600m --full --device cuda --size 1024

ControlNet families follow a drawn sketch (control scale 1.0) on both sides. diffusers has no
pipeline pairing SANA-Sprint with a ControlNet, so for `sprint-controlnet-600m` the reference is
its SanaSprintPipeline on the same folder without the ControlNet (the report says so).

Both sides load the same folder with the same precision policy (DiT in its checkpoint's half
precision, DC-AE bf16, Gemma LLM.int8 with bf16 compute on CUDA). "fresh" runs use a new prompt
each time, so they include text encoding; "cached" runs re-roll the seed of a prompt already
encoded (diffusers has no prompt cache, so its cached figure equals its fresh one).
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

from runtime.offline import enforce_offline

enforce_offline()

import torch  # noqa: E402

PROMPTS = [
    "a red circle to the left of a blue square",
    "two small yellow stars on a dark background",
    "a lighthouse on a cliff at sunset, oil painting",
    "a bowl of ramen with steam rising, studio photo",
    "a green triangle above a purple hexagon",
    "an astronaut riding a horse on the moon",
    "a cozy cabin in a snowy forest at night",
    "a watercolor fox sleeping under a tree",
    "a futuristic city skyline with flying cars",
    "a macro photo of a dew drop on a leaf",
    "a vintage car parked in front of a diner",
    "a dragon made of clouds over mountains",
]


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _peak_reset(device: str) -> None:
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _peak_gib(device: str) -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None


def _median(rows: list[dict[str, float]]) -> dict[str, float]:
    return {k: round(statistics.median(r[k] for r in rows), 4) for k in rows[0]}


def sketch_file(size: int) -> Path:
    """A drawn sketch: dark strokes on white, as the sketch pad makes them."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(image)
    draw.ellipse((size // 6, size // 5, size * 5 // 6, size * 4 // 5), outline="black",
                 width=max(2, size // 128))
    draw.line((size // 8, size * 7 // 8, size * 7 // 8, size // 8), fill="black",
              width=max(2, size // 128))
    path = Path(tempfile.mkdtemp(prefix="linea-bench-")) / "sketch.png"
    image.save(path)
    return path


def bench_ours(folder: Path, args) -> dict:
    from runtime import Engine, GenerationRequest

    _peak_reset(args.device)
    start = time.perf_counter()
    engine = Engine(folder, device=args.device)
    engine.load()
    load_s = time.perf_counter() - start

    def request(prompt: str, seed: int) -> GenerationRequest:
        return GenerationRequest(prompt, width=args.size, height=args.size, steps=args.steps,
                                 seed=seed, control_image=args.control)

    for warm in range(2):
        engine.generate(request(PROMPTS[-1 - warm], warm), previews=False)
    fresh, cached = [], []
    for run in range(args.runs):
        _sync(args.device)
        begin = time.perf_counter()
        result = engine.generate(request(PROMPTS[run % (len(PROMPTS) - 2)], run), previews=False)
        _sync(args.device)
        fresh.append({"total_s": time.perf_counter() - begin,
                      **{k: result.timings[k] for k in ("encode_s", "denoise_s", "decode_s")}})
    for run in range(args.runs):
        _sync(args.device)
        begin = time.perf_counter()
        result = engine.generate(request(PROMPTS[0], 1000 + run), previews=False)
        _sync(args.device)
        cached.append({"total_s": time.perf_counter() - begin,
                       **{k: result.timings[k] for k in ("encode_s", "denoise_s", "decode_s")}})
    graphs = engine.cuda_graphs and not (engine._graphed and engine._graphed.failed)
    report = {"load_s": round(load_s, 2), "fresh": _median(fresh), "cached": _median(cached),
              "peak_gib": _peak_gib(args.device), "plan": engine.plan.value,
              "precision": engine.precision.describe(),
              "cuda_graphs": graphs}
    engine.unload()
    return report


def _reference_pipeline(folder: Path, args):
    import diffusers
    import transformers

    from runtime import identify
    from runtime.loader import TORCH_DTYPES

    index = json.loads((folder / "model_index.json").read_text())
    pipeline_cls = getattr(diffusers, index["_class_name"])
    cpu = args.device == "cpu"
    dit_dtype = torch.float32
    if not cpu:
        dit_dtype = TORCH_DTYPES.get(identify(folder).transformer_dtype, torch.float16)
        if dit_dtype == torch.float32:
            dit_dtype = torch.float16
    encoder_dtype = torch.bfloat16 if (cpu or torch.cuda.is_bf16_supported()) else torch.float32
    encoder = getattr(transformers, index["text_encoder"][1]).from_pretrained(
        folder / "text_encoder", dtype=encoder_dtype, device_map={"": args.device},
        quantization_config=transformers.BitsAndBytesConfig(load_in_8bit=True))
    pipe = pipeline_cls.from_pretrained(folder, text_encoder=encoder, torch_dtype=dit_dtype)
    pipe.transformer.to(args.device)
    pipe.vae.to(args.device, torch.float32 if cpu else encoder_dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def bench_reference(folder: Path, args) -> dict:
    _peak_reset(args.device)
    start = time.perf_counter()
    pipe = _reference_pipeline(folder, args)
    load_s = time.perf_counter() - start
    sprint = type(pipe).__name__ == "SanaSprintPipeline"
    control = None
    if args.control and type(pipe).__name__ == "SanaControlNetPipeline":
        from runtime import auto_control

        control = auto_control(_open_rgb(args.control), size=(args.size, args.size))[0]

    def call(prompt: str, seed: int, **extra):
        kwargs = {"num_inference_steps": args.steps, "height": args.size, "width": args.size,
                  "generator": torch.Generator("cpu").manual_seed(seed),
                  "use_resolution_binning": False, **extra}
        if sprint and args.steps != 2:
            kwargs["intermediate_timesteps"] = None
        if control is not None:
            kwargs["control_image"] = control
        return pipe(prompt, **kwargs)

    for warm in range(2):
        call(PROMPTS[-1 - warm], warm)
    rows = []
    for run in range(args.runs):
        prompt = PROMPTS[run % (len(PROMPTS) - 2)]
        _sync(args.device)
        begin = time.perf_counter()
        call(prompt, run)
        _sync(args.device)
        total = time.perf_counter() - begin
        # the parts, measured separately with the same calls the pipeline makes
        from runtime.text import complex_human_instruction

        instruction = complex_human_instruction().split("\n")  # __call__'s default
        begin = time.perf_counter()
        if sprint:
            embeds, mask = pipe.encode_prompt(prompt, device=args.device,
                                              complex_human_instruction=instruction)
            extra = {"prompt_embeds": embeds, "prompt_attention_mask": mask}
        else:
            embeds, mask, neg, neg_mask = pipe.encode_prompt(
                prompt, True, device=args.device, complex_human_instruction=instruction)
            extra = {"prompt_embeds": embeds, "prompt_attention_mask": mask,
                     "negative_prompt": None, "negative_prompt_embeds": neg,
                     "negative_prompt_attention_mask": neg_mask}
        _sync(args.device)
        encode = time.perf_counter() - begin
        begin = time.perf_counter()
        latents = call(None, run, output_type="latent", **extra).images
        _sync(args.device)
        denoise = time.perf_counter() - begin
        begin = time.perf_counter()
        with torch.inference_mode():
            pipe.vae.decode(latents.to(pipe.vae.dtype) / pipe.vae.config.scaling_factor)
        _sync(args.device)
        rows.append({"total_s": total, "encode_s": encode, "denoise_s": denoise,
                     "decode_s": time.perf_counter() - begin})
    report = {"load_s": round(load_s, 2), "fresh": _median(rows),
              "peak_gib": _peak_gib(args.device)}
    pipe.to("cpu")
    _peak_reset(args.device)
    return report


def _open_rgb(path: str):
    from PIL import Image

    with Image.open(path) as image:
        return image.convert("RGB")


def versions() -> dict[str, str]:
    import diffusers
    import transformers

    found = {"python": platform.python_version(), "torch": torch.__version__,
             "cuda": str(torch.version.cuda), "diffusers": diffusers.__version__,
             "transformers": transformers.__version__}
    try:
        import bitsandbytes

        found["bitsandbytes"] = bitsandbytes.__version__
    except ImportError:
        found["bitsandbytes"] = "missing"
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--family", default="sana-600m")
    parser.add_argument("--full", action="store_true", help="full-size replica (GPU)")
    parser.add_argument("--layers", type=int)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--cap-gb", type=float, help="cap this process's GPU memory")
    parser.add_argument("--skip-reference", action="store_true")
    parser.add_argument("--replica-dir", type=Path, help="reuse a replica written earlier")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    args.steps = args.steps or (2 if args.family.startswith("sprint") else 20)
    args.control = (str(sketch_file(args.size)) if args.family.endswith("controlnet-600m")
                    else None)
    if args.device == "cuda" and args.cap_gb:
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, args.cap_gb * 2**30 / total))
    folder = args.replica_dir
    if folder is None or not (folder / "model_index.json").is_file():
        from models.replica import write_replica

        folder = folder or Path(tempfile.mkdtemp(prefix="linea-bench-")) / args.family
        begin = time.perf_counter()
        # Random values do not change latency; building on the GPU makes a full replica fast.
        with torch.device(args.device):
            write_replica(args.family, folder, layers=args.layers, tiny=not args.full, seed=0)
        print(f"replica written in {time.perf_counter() - begin:.1f} s: {folder}", flush=True)
    ours = bench_ours(folder, args)
    print("ours", json.dumps(ours), flush=True)
    if args.skip_reference:
        return
    reference = bench_reference(folder, args)
    print("diffusers", json.dumps(reference), flush=True)
    device_name = (torch.cuda.get_device_name() if args.device == "cuda"
                   else f"{platform.processor() or 'CPU'} x{torch.get_num_threads()} threads")
    report = {
        "benchmark": "runtime-vs-diffusers", "family": args.family, "full_size": args.full,
        "layers": args.layers, "size": args.size,
        "steps": args.steps, "runs": args.runs,
        "device": device_name, "gpu_memory_cap_gb": args.cap_gb, "versions": versions(),
        "date": time.strftime("%Y-%m-%d"), "linea": ours, "diffusers": reference,
        "follows_a_sketch": {"linea": bool(args.control),
                             "diffusers": bool(args.control)
                             and not args.family.startswith("sprint")},
        "ratio_fresh_total": round(ours["fresh"]["total_s"] / reference["fresh"]["total_s"], 3),
        "ratio_cached_total": round(ours["cached"]["total_s"] / reference["fresh"]["total_s"], 3),
        "speedup_fresh": round(reference["fresh"]["total_s"] / ours["fresh"]["total_s"], 2),
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
