"""The engine: one loaded model on one device, turning requests into images."""

from __future__ import annotations

import gc
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from models.families import FLOW_SAMPLERS, FULL_INTERVAL
from runtime import loader
from runtime import request as req
from runtime.catalog import ModelInfo, identify
from runtime.control import controlled_forward, encode_control, read_control_image
from runtime.device import DeviceInfo, MemoryPlan, choose_plan, detect_device
from runtime.errors import CancelledError, NaNResultError, OutOfMemoryError
from runtime.events import CancelToken, Event, EventHandler, EventKind, ignore_events
from runtime.graphs import GraphedForward
from runtime.preview import PreviewProjector
from runtime.prompt_cache import PromptCache, PromptEmbedding, PromptKey
from runtime.request import GenerationRequest, ResolvedRequest, Sampler
from runtime.sampling import FlowSettings, flow_sample, scm_sample
from runtime.text import encode_text

log = logging.getLogger(__name__)


@dataclass
class GenerationResult:
    images: list[Image.Image]
    resolved: ResolvedRequest
    model: ModelInfo
    plan: MemoryPlan
    device: str
    precision: str
    timings: dict[str, float]
    warnings: list[str] = field(default_factory=list)
    latents: torch.Tensor | None = None
    # For each image, when the model picked among candidates: the judge's score (a logit) of
    # every candidate, in candidate_seeds order, and which one was kept.
    candidate_scores: list[tuple[float, ...]] = field(default_factory=list)
    chosen: list[int] = field(default_factory=list)

    @property
    def seeds(self) -> tuple[int, ...]:
        return self.resolved.seeds

    def record(self, index: int) -> dict[str, Any]:
        """Everything needed to remake image `index` alone, for its PNG metadata."""
        from runtime import __version__

        resolved = self.resolved
        seed = resolved.seeds[index]
        request = resolved.request.with_changes(
            prompt=resolved.prompt, seed=seed, count=1, width=resolved.width,
            height=resolved.height, steps=resolved.steps, sampler=resolved.sampler,
            guidance_scale=resolved.guidance_scale,
            complex_human_instruction=resolved.complex_human_instruction,
            model=self.model.name, candidates=resolved.candidates)
        return {
            "format": 1, "version": __version__, "request": request.to_dict(),
            "prompt": resolved.prompt, "negative_prompt": resolved.request.negative_prompt,
            "steps": resolved.steps, "sampler": resolved.sampler.value,
            "sampler_label": resolved.sampler.label, "guidance_scale": resolved.guidance_scale,
            # the model's (linea.json); another tool reading "CFG scale" guides every step
            "guidance_interval": list(self.model.family.guidance_interval),
            **self._contrast_record(),
            **self._candidate_record(index),
            "seed": seed, "width": resolved.width, "height": resolved.height,
            "model": self.model.name, "family": self.model.family.key,
            "precision": self.precision, "plan": self.plan.value, "device": self.device,
            "seconds": round(self.timings.get("total_s", 0.0) / max(1, len(self.images)), 3),
        }

    def _candidate_record(self, index: int) -> dict[str, Any]:
        """How many candidates the judge chose among, which it kept and their scores."""
        if self.resolved.candidates == 1 or index >= len(self.chosen):
            return {"candidates": 1}
        return {"candidates": self.resolved.candidates, "chosen_candidate": self.chosen[index],
                "candidate_scores": [round(v, 3) for v in self.candidate_scores[index]]}

    def _contrast_record(self) -> dict[str, Any]:
        """What contrast guidance steered this image away from (nothing when it did not)."""
        rule, text = self.model.family.contrast, self.resolved.contrast_prompt
        if rule is None or text is None:
            return {}
        return {"contrast_prompt": text, "contrast_scale": self.resolved.contrast_scale,
                "contrast_interval": list(rule.interval)}


@dataclass
class _Components:
    tokenizer: Any = None
    text_encoder: Any = None
    transformer: Any = None
    vae: Any = None
    scheduler: Any = None
    controlnet: Any = None
    judge: Any = None


class Engine:
    """Load once, generate many times. Not thread-safe: use it from one worker at a time."""

    def __init__(self, model: ModelInfo | Path | str, device: str | None = None,
                 precision: str = "auto", quantize_text_encoder: bool = True,
                 plan: MemoryPlan | None = None, cuda_graphs: bool | None = None,
                 controlnet: Path | str | None = None) -> None:
        self.model = model if isinstance(model, ModelInfo) else identify(model)
        self.controlnet_path = self._controlnet_folder(controlnet)
        self.device_info: DeviceInfo = detect_device(device)
        self.device = self.device_info.torch_device
        self.precision = loader.choose_precision(self.model, self.device_info, precision,
                                                 quantize_text_encoder)
        size = self.model.native_size
        self.plan = plan or choose_plan(self.device_info, self.model, size, size)
        self.prompt_cache = PromptCache()
        self.cuda_graphs = self.device.type == "cuda" if cuda_graphs is None else cuda_graphs
        if self.device.type == "cuda":
            # SANA's linear attention runs its matmuls in fp32 for range; TF32 keeps that range.
            # The decoder's convolutions have fixed shapes per image size, so autotuning pays.
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.benchmark = True
        self._graphed: GraphedForward | None = None
        self._parts = _Components()
        self._projector: PreviewProjector | None = None
        self._projector_fitted = False
        self.loaded = False

    # ----- loading -------------------------------------------------------------------------

    @property
    def family(self):
        return self.model.family

    def _controlnet_folder(self, controlnet: Path | str | None) -> Path | None:
        if controlnet is not None:
            folder = Path(controlnet).expanduser().resolve()
            loader.check_controlnet_folder(folder)
            return folder
        if self.family.controlnet:
            return self.model.path / "controlnet"
        if self.model.controlnet:  # a ControlNet folder added to a SANA or Sprint model
            folder = self.model.path / "controlnet"
            loader.check_controlnet_folder(folder)
            return folder
        return None

    @property
    def has_controlnet(self) -> bool:
        return self.controlnet_path is not None

    def _home(self) -> torch.device:
        """Where the denoiser and decoder live between uses under the current plan."""
        return torch.device("cpu") if self.plan is MemoryPlan.CPU_OFFLOAD else self.device

    def load(self, on_event: EventHandler = ignore_events) -> float:
        """Load every component the plan keeps resident. Returns seconds spent."""
        if self.loaded:
            return 0.0
        start = time.perf_counter()
        parts = self._parts
        on_event(Event(EventKind.LOADING, f"Loading {self.model.name}: tokenizer", 0, 4))
        parts.tokenizer = loader.load_tokenizer(self.model)
        parts.scheduler = loader.load_scheduler(self.model)
        on_event(Event(EventKind.LOADING, "Loading the transformer", 1, 4))
        parts.transformer = loader.load_diffusers_component(
            self.model, "transformer", self.precision.transformer, self._home())
        on_event(Event(EventKind.LOADING, "Loading the image decoder", 2, 4))
        parts.vae = loader.load_diffusers_component(
            self.model, "vae", self.precision.vae, self._home())
        if self.plan.tiles_decode:
            parts.vae.enable_tiling()
        if self.controlnet_path is not None:
            on_event(Event(EventKind.LOADING, "Loading the ControlNet", 2, 4))
            parts.controlnet = loader.load_controlnet(self.controlnet_path,
                                                      self.precision.transformer, self._home())
        if not self.plan.releases_encoder:
            on_event(Event(EventKind.LOADING, "Loading the text encoder", 3, 4))
            self._load_text_encoder()
        self.loaded = True
        on_event(Event(EventKind.LOADING, "Model ready", 4, 4))
        return time.perf_counter() - start

    def _load_text_encoder(self) -> None:
        if self._parts.text_encoder is None:
            self._parts.text_encoder = loader.load_text_encoder(self.model, self.precision,
                                                                self.device)

    def _release_text_encoder(self) -> None:
        if self._parts.text_encoder is not None:
            self._parts.text_encoder = None
            self._free_memory()

    def _free_memory(self) -> None:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def unload(self) -> None:
        self._parts = _Components()
        self._graphed = None
        self.prompt_cache.clear()
        self._projector = None
        self._projector_fitted = False
        self.loaded = False
        self._free_memory()

    def switch_plan(self, plan: MemoryPlan) -> None:
        """Move to another memory plan, keeping the cached prompt embeddings."""
        self.plan = plan
        self._graphed = None
        parts = self._parts
        if plan.releases_encoder:
            self._release_text_encoder()
        for name in ("transformer", "vae", "controlnet"):
            module = getattr(parts, name)
            if module is not None:
                setattr(parts, name, module.to(self._home()))
        if parts.vae is not None and plan.tiles_decode:
            parts.vae.enable_tiling()
        self._free_memory()

    # ----- requests ------------------------------------------------------------------------

    def resolve(self, request: GenerationRequest) -> ResolvedRequest:
        """Fill the model's defaults into a request and check it against the model's limits."""
        prompt = req.check_common(request)
        family = self.family
        sampler = request.sampler or Sampler(family.samplers[0])
        if sampler.value not in family.samplers:
            raise req.RequestError(
                f"The {family.label} model cannot use the {sampler.label} sampler.",
                f"Use one of: {', '.join(family.samplers)}.")
        width = self.model.native_size if request.width is None else request.width
        height = self.model.native_size if request.height is None else request.height
        req.check_size(width, height, self.model.max_side)
        steps = request.steps if request.steps is not None else family.default_steps
        req.check_steps(steps, *family.step_range, sampler)
        guidance = (request.guidance_scale if request.guidance_scale is not None
                    else family.default_guidance)
        if request.control_image and not self.has_controlnet:
            raise req.RequestError(
                f"The model {self.model.name} has no ControlNet, so it cannot follow a sketch.",
                "Pick a model with a ControlNet, or add one with --controlnet.")
        chi = (request.complex_human_instruction if request.complex_human_instruction is not None
               else family.complex_human_instruction)
        contrast = (family.contrast.contrast(prompt)
                    if family.contrast is not None and sampler.value in FLOW_SAMPLERS else None)
        candidates = request.candidates if request.candidates is not None else family.candidates
        if candidates > 1 and not self.model.judge:
            raise req.RequestError(
                f"The model {self.model.name} has no prompt judge, so it cannot pick the best of "
                f"{candidates} candidates.",
                "Ask for 1 candidate per image, or pick a model with a judge/ folder.")
        return ResolvedRequest(request, prompt, width, height, steps, float(guidance), sampler,
                               bool(chi), req.image_seeds(request.seed, request.count),
                               contrast_prompt=contrast[0] if contrast else None,
                               contrast_scale=contrast[1] if contrast else 0.0,
                               candidates=candidates)

    def encode(self, text: str, use_instruction: bool, select: bool,
               on_event: EventHandler = ignore_events) -> PromptEmbedding:
        key = PromptKey(text.lower().strip(), use_instruction, self.family.max_tokens)
        cached = self.prompt_cache.get(key)
        if cached is not None:
            return cached
        if self._parts.text_encoder is None:
            on_event(Event(EventKind.LOADING, "Loading the text encoder"))
            self._load_text_encoder()
        on_event(Event(EventKind.ENCODING, "Encoding the prompt"))
        embedding = encode_text(self._parts.tokenizer, self._parts.text_encoder, text,
                                use_instruction=use_instruction,
                                max_tokens=self.family.max_tokens, device=self.device,
                                select=select)
        self.prompt_cache.put(key, embedding)
        return embedding

    # ----- generation ----------------------------------------------------------------------

    def generate(self, request: GenerationRequest, on_event: EventHandler = ignore_events,
                 cancel: CancelToken | None = None, previews: bool = True) -> GenerationResult:
        """Make the images a request asks for. Emits DONE, ERROR or CANCELLED at the end."""
        cancel = cancel or CancelToken()
        try:
            resolved = self.resolve(request)
            load_s = 0.0
            while True:
                try:
                    load_s += self.load(on_event)
                    result = self._generate_once(resolved, on_event, cancel, previews)
                    break
                except torch.OutOfMemoryError as exc:
                    following = self.plan.next()
                    if following is None:
                        raise OutOfMemoryError(
                            f"The model does not fit in this device's memory ({exc}).",
                            "Make a smaller image, close other GPU programs, or pick a smaller "
                            "model.") from exc
                    log.warning("Out of memory under plan %s; trying %s", self.plan, following)
                    if self.loaded:
                        self.switch_plan(following)
                    else:  # ran out while loading: start the load again under the leaner plan
                        self.unload()
                        self.plan = following
                    on_event(Event(EventKind.PLAN, f"Out of memory: retrying with "
                                                   f"{following.description}"))
            result.timings["load_s"] = load_s
        except CancelledError as exc:
            on_event(Event(EventKind.CANCELLED, "Cancelled", error=exc))
            raise
        except Exception as exc:  # the caller gets the error too; this only reports it
            on_event(Event(EventKind.ERROR, str(exc), error=exc))
            raise
        on_event(Event(EventKind.DONE, "Done", result=result))
        return result

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def _generate_once(self, resolved: ResolvedRequest, on_event: EventHandler,
                       cancel: CancelToken, previews: bool) -> GenerationResult:
        timings: dict[str, float] = {}
        start = time.perf_counter()
        if cancel.cancelled:
            raise CancelledError("Cancelled before the start.")
        family = self.family
        uses_cfg = family.uses_cfg and resolved.guidance_scale > 1.0
        positive = self.encode(resolved.prompt, resolved.complex_human_instruction, True, on_event)
        negative = (self.encode(resolved.request.negative_prompt, False, False, on_event)
                    if uses_cfg else None)
        # Encoded as the prompt is, so the two differ only by the rewritten words.
        contrast = (self.encode(resolved.contrast_prompt, resolved.complex_human_instruction,
                                True, on_event)
                    if resolved.contrast_prompt is not None else None)
        if self.plan.releases_encoder:
            self._release_text_encoder()
        self._sync()
        timings["encode_s"] = time.perf_counter() - start
        warnings = self._truncation_warnings(positive, negative)

        mark = time.perf_counter()
        seeds = [s for seed in resolved.seeds
                 for s in req.candidate_seeds(seed, resolved.candidates)]
        latents = self._denoise(resolved, positive, negative, on_event, cancel, previews,
                                contrast, seeds)
        self._sync()
        timings["denoise_s"] = time.perf_counter() - mark
        if not torch.isfinite(latents).all():
            raise self._nan_error("denoising")

        mark = time.perf_counter()
        on_event(Event(EventKind.DECODING, "Decoding the image"))
        images = self._decode(latents, cancel)
        self._sync()
        timings["decode_s"] = time.perf_counter() - mark
        scores: list[tuple[float, ...]] = []
        chosen: list[int] = []
        if resolved.candidates > 1:
            mark = time.perf_counter()
            on_event(Event(EventKind.DECODING,
                           f"Choosing the best of {resolved.candidates} candidates"))
            scores, chosen = self._judge(resolved.prompt, images, resolved.candidates)
            step = resolved.candidates
            images = [images[i * step + k] for i, k in enumerate(chosen)]
            latents = latents[[i * step + k for i, k in enumerate(chosen)]]
            timings["judge_s"] = time.perf_counter() - mark
        timings["total_s"] = time.perf_counter() - start
        return GenerationResult(images, resolved, self.model, self.plan,
                                self.device_info.summary(), self.precision.describe(), timings,
                                warnings, latents.cpu(), scores, chosen)

    def _judge(self, prompt: str, images: list[Image.Image],
               candidates: int) -> tuple[list[tuple[float, ...]], list[int]]:
        """The judge's score of each image against `prompt`, and per group of `candidates`
        consecutive images the index of the best."""
        from runtime.judge import load_judge, tokenize

        parts = self._parts
        if parts.judge is None:
            parts.judge = load_judge(self.model.path / "judge", self.device)
        judge = parts.judge
        pixels = torch.stack([torch.from_numpy(np.array(im)).permute(2, 0, 1)
                              for im in images]).to(self.device, torch.float32) / 255
        ids, mask = tokenize(parts.tokenizer, [prompt], judge.config.max_tokens)
        with torch.inference_mode():
            logits = judge(pixels, ids.to(self.device).expand(len(images), -1),
                           mask.to(self.device).expand(len(images), -1)).float().cpu()
        groups = logits.view(-1, candidates)
        return ([tuple(float(v) for v in row) for row in groups],
                [int(k) for k in groups.argmax(dim=1)])

    def _truncation_warnings(self, positive: PromptEmbedding,
                             negative: PromptEmbedding | None) -> list[str]:
        limit = self.family.max_tokens - 2
        found = []
        for label, embedding in (("prompt", positive), ("negative prompt", negative)):
            if embedding is not None and embedding.tokens > limit:
                found.append(f"The {label} is {embedding.tokens} tokens long; the model reads "
                             f"only the first {limit}, so the rest was left out.")
        return found

    def _nan_error(self, phase: str) -> NaNResultError:
        return NaNResultError(
            f"The model produced invalid values (NaN) during {phase} "
            f"({self.precision.describe()}).",
            "This usually means a component ran in float16 where it needs bfloat16 or float32: "
            "set precision to bf16 or fp32 in settings (or --precision fp32).")

    def _denoise(self, resolved: ResolvedRequest, positive: PromptEmbedding,
                 negative: PromptEmbedding | None, on_event: EventHandler, cancel: CancelToken,
                 previews: bool, contrast: PromptEmbedding | None = None,
                 seeds: list[int] | None = None) -> torch.Tensor:
        from diffusers.utils.torch_utils import randn_tensor

        parts = self._parts
        transformer = parts.transformer.to(self.device)
        seeds = list(resolved.seeds) if seeds is None else seeds
        count = len(seeds)
        dtype = transformer.dtype
        embeds = positive.embeds.expand(count, -1, -1)
        mask = positive.mask.expand(count, -1)
        if negative is not None:
            embeds = torch.cat([negative.embeds.expand(count, -1, -1), embeds])
            mask = torch.cat([negative.mask.expand(count, -1), mask])
        embeds = embeds.to(device=self.device, dtype=dtype)
        mask = mask.to(self.device)
        generators = [torch.Generator("cpu").manual_seed(s) for s in seeds]
        scale = self._latent_scale()
        shape = (count, transformer.config.in_channels,
                 resolved.height // scale, resolved.width // scale)
        latents = randn_tensor(shape, generator=generators, device=self.device,
                               dtype=torch.float32)

        forward = self._denoiser_forward(transformer)
        paired = negative is not None or contrast is not None
        extra = self._control_inputs(resolved, count * (2 if paired else 1))

        inputs = {"encoder_hidden_states": embeds, "encoder_attention_mask": mask, **extra}
        # An unguided step (outside the model's guidance interval) takes the positive half alone.
        positive_only = {k: v[-count:] if v.dim() and v.shape[0] == 2 * count else v
                         for k, v in inputs.items()}
        if negative is None:
            inputs = positive_only
        contrasted = None
        if contrast is not None:
            # (contrast prompt, prompt) pairs, for the steps contrast guidance steers.
            contrasted = {**inputs, "encoder_hidden_states": torch.cat([
                contrast.embeds.expand(count, -1, -1).to(device=self.device, dtype=dtype),
                positive_only["encoder_hidden_states"]]),
                "encoder_attention_mask": torch.cat([
                    contrast.mask.expand(count, -1).to(self.device),
                    positive_only["encoder_attention_mask"]])}
            if negative is None:
                contrasted.update(extra)  # the control input for both halves

        def run(chosen: dict[str, torch.Tensor], x: torch.Tensor, t: torch.Tensor,
                g: torch.Tensor | None) -> torch.Tensor:
            tensors = {**chosen, "hidden_states": x.to(dtype), "timestep": t}
            if g is not None:
                tensors["guidance"] = g
            with torch.inference_mode():
                return forward(**tensors)

        def denoiser(x: torch.Tensor, t: torch.Tensor, g: torch.Tensor | None) -> torch.Tensor:
            return run(positive_only if x.shape[0] == count else inputs, x, t, g)

        def away(x: torch.Tensor, t: torch.Tensor, g: torch.Tensor | None) -> torch.Tensor:
            return run(contrasted, x, t, g)

        def on_step(step: int, total: int, estimate) -> None:
            preview = None
            if previews:
                preview = self._preview(estimate()[0])
            on_event(Event(EventKind.STEP, f"Step {step} of {total}", step, total,
                           preview=preview))
            if cancel.cancelled and step < total:
                raise CancelledError(f"Cancelled after step {step} of {total}.")

        if cancel.cancelled:
            raise CancelledError("Cancelled before denoising.")
        scheduler = parts.scheduler.__class__.from_config(parts.scheduler.config)
        if resolved.sampler is Sampler.SCM:
            guidance = torch.full([count], resolved.guidance_scale, device=self.device)
            guidance = guidance.to(dtype) * transformer.config.guidance_embeds_scale
            result = scm_sample(denoiser, scheduler, latents, resolved.steps, guidance,
                                generators, on_step)
        else:
            if resolved.sampler is Sampler.FLOW_EULER:
                from diffusers import FlowMatchEulerDiscreteScheduler

                shift = float(scheduler.config.get("flow_shift", 3.0) or 3.0)
                scheduler = FlowMatchEulerDiscreteScheduler(shift=shift)
            rule = self.family.contrast
            settings = FlowSettings(resolved.steps, resolved.guidance_scale
                                    if self.family.uses_cfg else 1.0,
                                    float(transformer.config.get("timestep_scale", 1.0)),
                                    self.family.guidance_interval,
                                    resolved.contrast_scale if contrasted is not None else 0.0,
                                    rule.interval if rule else FULL_INTERVAL)
            result = flow_sample(denoiser, scheduler, latents, settings, generators, on_step,
                                 away if contrasted is not None else None)
        if self.plan is MemoryPlan.CPU_OFFLOAD:
            parts.transformer = transformer.to("cpu")
            if parts.controlnet is not None:
                parts.controlnet = parts.controlnet.to("cpu")
            self._free_memory()
        return result

    def _control_inputs(self, resolved: ResolvedRequest, batch: int) -> dict[str, torch.Tensor]:
        request = resolved.request
        if not request.control_image:
            return {}
        image, kind = read_control_image(request.control_image,
                                         size=(resolved.width, resolved.height))
        log.info("control image %s read as a %s", request.control_image, kind)
        vae = self._parts.vae.to(self.device)
        latent = encode_control(vae, image, resolved.width, resolved.height,
                                self._latent_scale())
        controlnet = self._parts.controlnet.to(self.device)
        return {"controlnet_cond": latent.expand(batch, -1, -1, -1).to(controlnet.dtype),
                "conditioning_scale": torch.tensor(request.control_scale, device=self.device)}

    def _denoiser_forward(self, transformer: torch.nn.Module):
        plain = controlled_forward(transformer, self._parts.controlnet)
        if not self.cuda_graphs or self.plan is MemoryPlan.CPU_OFFLOAD:
            return plain
        if self._graphed is None:
            self._graphed = GraphedForward(plain)
        return self._graphed

    def _latent_scale(self) -> int:
        return 2 ** (len(self._parts.vae.config.encoder_block_out_channels) - 1)

    def _preview(self, latent: torch.Tensor) -> Image.Image | None:
        if not self._projector_fitted:
            vae = self._parts.vae.to(self.device)
            self._projector = PreviewProjector.fit(vae, latent.shape[0], self._latent_scale())
            self._projector_fitted = True
        return self._projector.project(latent) if self._projector else None

    def _decode(self, latents: torch.Tensor, cancel: CancelToken) -> list[Image.Image]:
        vae = self._parts.vae.to(self.device)
        images = []
        for index in range(latents.shape[0]):
            if cancel.cancelled:
                raise CancelledError("Cancelled before decoding.")
            with torch.inference_mode():
                scaled = latents[index : index + 1].to(vae.dtype) / vae.config.scaling_factor
                pixels = vae.decode(scaled, return_dict=False)[0]
            if not torch.isfinite(pixels).all():
                raise self._nan_error("decoding")
            array = (pixels[0].float() / 2 + 0.5).clamp(0, 1).permute(1, 2, 0).cpu().numpy()
            images.append(Image.fromarray((array * 255).round().astype(np.uint8), "RGB"))
        if self.plan is MemoryPlan.CPU_OFFLOAD:
            self._parts.vae = vae.to("cpu")
            self._free_memory()
        return images
