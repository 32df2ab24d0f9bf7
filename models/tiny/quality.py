"""Generate held-out prompts and score them with the evaluator.

Images come from Linea's runtime (`runtime.Engine`: the path the app takes, 8-bit text encoder
included) or from diffusers' SanaPipeline (used while training). Seeds are per prompt and drawn
on the CPU, so the same prompt and seed give the same starting noise on any device, and the two
paths start from the same noise.
"""

from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass

import numpy as np
import torch

from models.families import FULL_INTERVAL, ContrastGuidance
from models.tiny.build import NATIVE_SIZE
from models.tiny.captions import caption
from models.tiny.evaluator import Verdict, check, summarise
from models.tiny.render import render_batch
from models.tiny.scenes import CATEGORIES, Composition, layout
from models.tiny.split import held_out_prompts, training_composition


@dataclass(frozen=True)
class Sampler:
    steps: int
    guidance: float
    # Noise levels whose steps are guided (runtime.sampling.FlowSettings); the rest run the
    # conditional branch alone.
    interval: tuple[float, float] = FULL_INTERVAL
    # Steer the layout steps away from a rewritten prompt (linea.json's contrast_guidance).
    contrast: ContrastGuidance | None = None
    # Images drawn per prompt, the best kept by the folder's prompt judge (runtime only).
    candidates: int = 1

    @classmethod
    def of_folder(cls, folder) -> Sampler:
        """The sampler a model folder asks for, as the runtime's catalogue reads it (its
        family's defaults with the folder's linea.json, checked)."""
        from runtime import identify

        family = identify(folder).family
        return cls(int(family.default_steps), float(family.default_guidance),
                   tuple(family.guidance_interval), family.contrast, family.candidates)


def subset_indices(prompts: list[tuple[str, Composition]], per_category: int) -> list[int]:
    """Where in `prompts` the first `per_category` prompts of each category are, category by
    category, keeping their order."""
    chosen = []
    for category in CATEGORIES:
        chosen += [i for i, (_, c) in enumerate(prompts) if c.category == category][:per_category]
    return chosen


def subset(
    prompts: list[tuple[str, Composition]], per_category: int
) -> list[tuple[str, Composition]]:
    """The first `per_category` prompts of each category, keeping their order."""
    return [prompts[i] for i in subset_indices(prompts, per_category)]


def validation_prompts(per_category: int, seed: int = 99) -> list[tuple[str, Composition]]:
    """Fresh prompts from the training split, for choosing sampler settings without peeking."""
    rng = random.Random(seed)
    found: dict[str, list[tuple[str, Composition]]] = {c: [] for c in CATEGORIES}
    while any(len(v) < per_category for v in found.values()):
        composition = training_composition(rng)
        if len(found[composition.category]) < per_category:
            found[composition.category].append((caption(composition, rng), composition))
    return [p for c in CATEGORIES for p in found[c]]


def generate(
    pipe, prompts: list[str], seeds: list[int], sampler: Sampler, batch: int = 32,
    size: int = NATIVE_SIZE,
) -> list[np.ndarray]:
    """Images (H, W, 3) uint8 for `prompts`, one seed each: through `runtime.Engine.generate`
    when `pipe` is an Engine, else through the diffusers pipeline's own call (batched), or,
    when only part of the noise levels is guided (which SanaPipeline cannot do), through the
    pipeline's modules and the runtime's sampling loop."""
    from runtime.engine import Engine

    if isinstance(pipe, Engine):
        if tuple(pipe.family.guidance_interval) != tuple(sampler.interval):
            raise ValueError(f"the engine's model guides noise levels "
                             f"{pipe.family.guidance_interval}, the sampler asks for "
                             f"{sampler.interval}: write it into the folder's linea.json")
        if pipe.family.contrast != sampler.contrast:
            raise ValueError(f"the engine's model has contrast guidance {pipe.family.contrast}, "
                             f"the sampler asks for {sampler.contrast}: write it into the "
                             f"folder's linea.json")
        return [_through_runtime(pipe, prompt, seed, sampler, size)
                for prompt, seed in zip(prompts, seeds, strict=True)]
    if sampler.candidates > 1:
        raise ValueError(f"the sampler picks among {sampler.candidates} candidates, which only "
                         f"the runtime's engine does (it loads the folder's judge): pass an "
                         f"Engine, or a sampler with candidates=1")
    images: list[np.ndarray] = []
    for start in range(0, len(prompts), batch):
        chunk = prompts[start : start + batch]
        generators = [torch.Generator("cpu").manual_seed(s) for s in seeds[start : start + batch]]
        if tuple(sampler.interval) != FULL_INTERVAL or sampler.contrast is not None:
            images += _through_modules(pipe, chunk, generators, sampler, size)
            continue
        out = pipe(
            chunk,
            height=size,
            width=size,
            num_inference_steps=sampler.steps,
            guidance_scale=sampler.guidance,
            generator=generators,
            complex_human_instruction=None,
            use_resolution_binning=False,
            output_type="np",
        ).images
        images += list((np.clip(out, 0, 1) * 255).round().astype(np.uint8))
    return images


@torch.no_grad()
def _through_modules(pipe, prompts: list[str], generators: list[torch.Generator],
                     sampler: Sampler, size: int) -> list[np.ndarray]:
    """The pipeline's own modules and scheduler, sampled by the runtime's flow loop (which the
    parity tests hold equal to SanaPipeline's where both can run)."""
    from diffusers.utils.torch_utils import randn_tensor

    from runtime.sampling import FlowSettings, flow_sample

    cfg = sampler.guidance > 1.0
    positive, positive_mask, negative, negative_mask = pipe.encode_prompt(
        prompts, do_classifier_free_guidance=cfg, negative_prompt="",
        complex_human_instruction=None, device=pipe.device)
    # As SanaPipeline does: the caption in the transformer's dtype (a bf16 text encoder's output
    # would not go through an fp32 transformer's projection).
    embeds = (torch.cat([negative, positive]) if cfg else positive).to(pipe.transformer.dtype)
    mask = torch.cat([negative_mask, positive_mask]) if cfg else positive_mask
    transformer, vae = pipe.transformer, pipe.vae
    scale = vae.spatial_compression_ratio
    latents = randn_tensor((len(prompts), transformer.config.in_channels, size // scale,
                            size // scale), generator=generators, device=pipe.device,
                           dtype=torch.float32)

    def denoiser(x: torch.Tensor, t: torch.Tensor, _guidance) -> torch.Tensor:
        n = x.shape[0]
        return transformer(x.to(transformer.dtype), encoder_hidden_states=embeds[-n:],
                           encoder_attention_mask=mask[-n:], timestep=t).sample

    rule, away = sampler.contrast, None
    if rule is not None:
        # A prompt no rule applies to is its own contrast: those steps stay conditional.
        found = [rule.contrast(p) for p in prompts]
        texts = [f[0] if f else p for f, p in zip(found, prompts, strict=True)]
        contrast, contrast_mask, _, _ = pipe.encode_prompt(
            texts, do_classifier_free_guidance=False, complex_human_instruction=None,
            device=pipe.device)
        pairs = torch.cat([contrast.to(transformer.dtype), embeds[-len(prompts):]])
        pairs_mask = torch.cat([contrast_mask, mask[-len(prompts):]])
        # Each prompt's rule has its own scale; the loop below steers by scale 1 away from
        # cond - scale * (cond - contrast), which is cond + scale * (cond - contrast).
        scales = torch.tensor([f[1] if f else 0.0 for f in found],
                              device=pipe.device).view(-1, 1, 1, 1)

        def away(x: torch.Tensor, t: torch.Tensor, _guidance) -> torch.Tensor:
            out = transformer(x.to(transformer.dtype), encoder_hidden_states=pairs,
                              encoder_attention_mask=pairs_mask, timestep=t).sample.float()
            contrasted, cond = out.chunk(2)
            return torch.cat([cond - scales * (cond - contrasted), cond])

    scheduler = pipe.scheduler.__class__.from_config(pipe.scheduler.config)
    settings = FlowSettings(sampler.steps, sampler.guidance,
                            guidance_interval=tuple(sampler.interval),
                            contrast_scale=1.0 if rule else 0.0,
                            contrast_interval=rule.interval if rule else FULL_INTERVAL)
    latents = flow_sample(denoiser, scheduler, latents, settings, generators,
                          lambda *_: None, away)
    decoded = vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor).sample.float()
    decoded = (decoded / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()
    return list((decoded * 255).round().astype(np.uint8))


def _through_runtime(engine, prompt: str, seed: int, sampler: Sampler, size: int) -> np.ndarray:
    from runtime import GenerationRequest
    from runtime import Sampler as RuntimeSampler

    request = GenerationRequest(prompt, width=size, height=size, steps=sampler.steps,
                                guidance_scale=sampler.guidance, seed=seed,
                                sampler=RuntimeSampler.FLOW_DPM_SOLVER,
                                complex_human_instruction=False,
                                candidates=sampler.candidates)
    result = engine.generate(request, previews=False)
    return np.asarray(result.images[0].convert("RGB"))


def score(
    pipe, prompts: list[tuple[str, Composition]], sampler: Sampler, seed: int = 0,
    size: int = NATIVE_SIZE, seeds: list[int] | None = None,
) -> tuple[dict[str, float], list[Verdict], list[np.ndarray]]:
    """Generate each prompt once (seed + its index, or `seeds`) and judge it; return scores per
    category."""
    texts = [p for p, _ in prompts]
    seeds = [seed + i for i in range(len(texts))] if seeds is None else list(seeds)
    if len(seeds) != len(texts):
        raise ValueError(f"{len(texts)} prompts and {len(seeds)} seeds")
    images = generate(pipe, texts, seeds, sampler, size=size)
    verdicts = [check(image, composition) for image, (_, composition) in zip(images, prompts,
                                                                             strict=True)]
    return summarise(verdicts), verdicts, images


def held_out(per_category: int | None = None) -> list[tuple[str, Composition]]:
    prompts = held_out_prompts()
    return subset(prompts, per_category) if per_category else prompts


@torch.no_grad()
def autoencoder_reconstruction(
    vae, layouts: tuple[int, ...] = (1,), per_category: int | None = None,
    device: torch.device | None = None, autocast=None,
) -> tuple[dict[str, float], list[Verdict]]:
    """Judge decode(encode(ground truth)) of the held-out compositions, each laid out once per
    seed in `layouts` (`scenes.layout` with `random.Random(seed)`): the score of a transformer
    that drew exactly the encoder's latents of rendered scenes. Not a bound on generated images:
    those need not be laid out (or sized) like the renderer's scenes, nor be latents the encoder
    gives. `vae` is in eval mode, works in [-1, 1] and returns `.latent` / `.sample` like
    AutoencoderDC; `autocast` (a context manager) wraps its calls alone, not the rendering."""
    device = device or torch.device("cpu")
    compositions = [c for _, c in held_out(per_category)]
    verdicts: list[Verdict] = []
    for seed in layouts:
        rng = random.Random(seed)
        scenes = [layout(c, rng) for c in compositions]
        for i in range(0, len(scenes), 32):
            images = render_batch(scenes[i : i + 32], NATIVE_SIZE, device)
            with autocast or contextlib.nullcontext():
                out = vae.decode(vae.encode(images * 2 - 1).latent).sample.float()
            out = ((out.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu()
            verdicts += [check(np.asarray(image), c)
                         for image, c in zip(out, compositions[i : i + 32], strict=True)]
    return summarise(verdicts), verdicts
