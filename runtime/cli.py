"""The command line: `generate`, `models` and `doctor`. Exit codes are stable for scripts:
0 success, 1 other error, 2 bad arguments or settings, 3 unusable model folder, 4 output path,
5 NaN result, 6 out of memory, 130 cancelled."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

from runtime import (
    ASPECT_PRESETS_1024,
    CancelToken,
    Engine,
    Event,
    EventKind,
    GenerationRequest,
    LineaError,
    MemoryPlan,
    Sampler,
    aspect_presets,
    detect_device,
    find_models,
    numbered_paths,
    random_seed,
    resolve_model,
    save_png,
)
from runtime.device import choose_plan, fits
from runtime.output import check_writable


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="linea", description="Linea: offline text-to-image.")
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="make images from a prompt")
    gen.add_argument("prompt")
    gen.add_argument("--model", default="", help="model name (see `models`) or folder path")
    gen.add_argument("--out", required=True, type=Path, help="output .png file (never replaced)")
    gen.add_argument("--steps", type=int)
    gen.add_argument("--seed", type=int, help="random when left out")
    gen.add_argument("--width", type=int)
    gen.add_argument("--height", type=int)
    gen.add_argument("--aspect", choices=sorted(ASPECT_PRESETS_1024),
                     help="SANA aspect-ratio preset at the model's native size")
    gen.add_argument("--guidance", type=float)
    gen.add_argument("--negative", default="")
    gen.add_argument("--count", type=int, default=1)
    gen.add_argument("--candidates", type=int,
                     help="images drawn per image, the best kept by the model's prompt judge "
                          "(default: the model's own; 1 keeps the first)")
    gen.add_argument("--sampler", choices=[s.value for s in Sampler])
    gen.add_argument("--no-instruction", action="store_true",
                     help="turn off the complex-human-instruction prompt prefix")
    gen.add_argument("--control", type=Path, help="sketch, photo or line map to follow")
    gen.add_argument("--control-scale", type=float, default=1.0)
    gen.add_argument("--controlnet", type=Path, help="a SANA ControlNet folder for --model")
    gen.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    gen.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], default="auto")
    gen.add_argument("--no-8bit", action="store_true", help="run the text encoder unquantised")
    gen.add_argument("--plan", choices=[p.value for p in MemoryPlan])
    gen.add_argument("--models-dir", type=Path, action="append", default=[])

    models = sub.add_parser("models", help="list the models Linea can find")
    models.add_argument("--json", action="store_true")
    models.add_argument("--models-dir", type=Path, action="append", default=[])

    doctor = sub.add_parser("doctor", help="describe this machine and what Linea would do on it")
    doctor.add_argument("--json", action="store_true")
    doctor.add_argument("--models-dir", type=Path, action="append", default=[])
    return parser


def _progress(event: Event) -> None:
    if event.kind is EventKind.STEP:
        print(f"\r  step {event.step}/{event.total}", end="", file=sys.stderr, flush=True)
        if event.step == event.total:
            print(file=sys.stderr)
    elif event.kind in (EventKind.LOADING, EventKind.ENCODING, EventKind.DECODING,
                        EventKind.PLAN):
        print(f"  {event.message}", file=sys.stderr, flush=True)


def cmd_generate(args: argparse.Namespace) -> int:
    model = resolve_model(args.model, tuple(args.models_dir))
    width, height = args.width, args.height
    if args.aspect:
        width, height = aspect_presets(model.native_size)[args.aspect]
    request = GenerationRequest(
        prompt=args.prompt, negative_prompt=args.negative, width=width, height=height,
        steps=args.steps, guidance_scale=args.guidance,
        seed=random_seed() if args.seed is None else args.seed, count=args.count,
        sampler=Sampler(args.sampler) if args.sampler else None,
        complex_human_instruction=False if args.no_instruction else None, model=model.name,
        control_image=str(args.control.resolve()) if args.control else None,
        control_scale=args.control_scale, candidates=args.candidates)
    outputs = numbered_paths(args.out, max(1, args.count))
    for path in outputs:
        check_writable(path)
    if args.control:  # a bad sketch is refused before minutes of model loading
        from runtime.control import open_control_image

        open_control_image(args.control)
    engine = Engine(model, device=args.device, precision=args.precision,
                    quantize_text_encoder=not args.no_8bit,
                    plan=MemoryPlan(args.plan) if args.plan else None, controlnet=args.controlnet)
    engine.resolve(request)
    print(f"Model: {model.name} ({model.description}) on {engine.device_info.summary()}",
          file=sys.stderr)
    if model.family.knows:
        print(f"About this model: {model.family.knows}", file=sys.stderr)
    result = engine.generate(request, on_event=_progress, cancel=CancelToken(), previews=False)
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for index, (image, path) in enumerate(zip(result.images, outputs, strict=True)):
        save_png(image, path, result.record(index))
        print(path)
    t = result.timings
    print(f"Done in {t['total_s']:.2f} s (encode {t['encode_s']:.2f}, denoise "
          f"{t['denoise_s']:.2f}, decode {t['decode_s']:.2f}; load {t['load_s']:.2f}); "
          f"memory plan: {result.plan.description}", file=sys.stderr)
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    device = detect_device()
    models, problems = find_models(tuple(args.models_dir))
    rows = [{"name": m.name, "family": m.family.label, "size": m.size_label,
             "native_size": m.native_size, "fits": fits(device, m), "source": m.source,
             "path": str(m.path)} for m in models]
    if args.json:
        print(json.dumps({"models": rows, "problems": [
            {"path": str(p.path), "message": p.message} for p in problems]}, indent=2))
        return 0
    if not rows:
        print("No models found.")
    for row in rows:
        fit = "fits this device" if row["fits"] else "too large for this device"
        print(f"{row['name']}: {row['family']} {row['size']}, {row['native_size']}px, {fit} "
              f"[{row['source']}] {row['path']}")
    for problem in problems:
        print(f"skipped {problem.path}: {problem.message}")
    return 0


def _versions() -> dict[str, str]:
    import diffusers
    import PIL
    import torch
    import transformers

    versions = {"python": platform.python_version(), "torch": torch.__version__,
                "diffusers": diffusers.__version__, "transformers": transformers.__version__,
                "pillow": PIL.__version__, "cuda": str(torch.version.cuda)}
    try:
        import bitsandbytes

        versions["bitsandbytes"] = bitsandbytes.__version__
    except Exception as exc:  # a broken bitsandbytes install must not break doctor
        versions["bitsandbytes"] = f"unavailable ({exc})"
    return versions


def cmd_doctor(args: argparse.Namespace) -> int:
    from runtime import __version__
    from runtime.loader import choose_precision

    device = detect_device()
    report: dict = {"linea": __version__, "platform": platform.platform(),
                    "versions": _versions(), "device": device.summary(),
                    "bf16": device.bf16, "total_gib": round(device.total_bytes / 2**30, 2),
                    "free_gib": round(device.free_bytes / 2**30, 2)}
    models, _ = find_models(tuple(args.models_dir))
    if models:
        model = models[0]
        size = model.native_size
        report["model"] = model.name
        report["precision"] = choose_precision(model, device).describe()
        report["plan"] = choose_plan(device, model, size, size).description
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for key, value in report.items():
            if isinstance(value, dict):
                value = ", ".join(f"{k} {v}" for k, v in value.items())
            print(f"{key}: {value}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = {"generate": cmd_generate, "models": cmd_models, "doctor": cmd_doctor}
    try:
        return handler[args.command](args)
    except LineaError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"what to do: {exc.hint}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("cancelled", file=sys.stderr)
        return 130
    except Exception as exc:
        if os.environ.get("LINEA_DEBUG"):
            raise
        print(f"error: unexpected failure: {exc!r}", file=sys.stderr)
        print("what to do: run again with LINEA_DEBUG=1 for the full details, and report them.",
              file=sys.stderr)
        return 1
