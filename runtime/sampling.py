"""Denoising loops. The arithmetic follows diffusers' SanaPipeline and SanaSprintPipeline step for
step, so the same seed and settings give the same latents; the schedulers are diffusers' own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from models.families import FULL_INTERVAL

# (model input, timestep, guidance or None) -> model output
Denoiser = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]
# (step number from 1, total, current estimate of the clean latents) -> None; may raise to stop
StepHook = Callable[[int, int, Callable[[], torch.Tensor]], None]


@dataclass(frozen=True)
class FlowSettings:
    steps: int
    guidance_scale: float
    timestep_scale: float = 1.0
    # Noise levels (0 clean, 1 pure noise) whose steps are guided; the others run the
    # conditional branch alone (half the transformer work for those steps).
    guidance_interval: tuple[float, float] = FULL_INTERVAL
    # Contrast guidance (models.families.ContrastGuidance): at the noise levels in its interval
    # that are not guided, steer away from a contrast prompt by this scale (0: never).
    contrast_scale: float = 0.0
    contrast_interval: tuple[float, float] = FULL_INTERVAL

    @property
    def uses_cfg(self) -> bool:
        return self.guidance_scale > 1.0

    def guides(self, sigma: float) -> bool:
        low, high = self.guidance_interval
        return self.uses_cfg and low <= sigma <= high

    def contrasts(self, sigma: float) -> bool:
        low, high = self.contrast_interval
        return self.contrast_scale > 0 and not self.guides(sigma) and low <= sigma <= high


def flow_sample(denoiser: Denoiser, scheduler, latents: torch.Tensor, settings: FlowSettings,
                generator: list[torch.Generator], on_step: StepHook,
                contrast: Denoiser | None = None) -> torch.Tensor:
    """Flow matching with classifier-free guidance (Flow-DPM-Solver or Flow-Euler).

    `contrast`, when given, denoises (contrast prompt, prompt) pairs like `denoiser` does
    (negative, prompt) pairs; the steps `settings.contrasts` names are steered away from it."""
    scheduler.set_timesteps(settings.steps, device=latents.device)
    timesteps = scheduler.timesteps
    step_kwargs = {"generator": generator} if _accepts(scheduler, "generator") else {}
    train_steps = float(scheduler.config.num_train_timesteps)
    total = len(timesteps)
    for i, t in enumerate(timesteps):
        sigma = float(t) / train_steps
        guided = settings.guides(sigma)
        contrasted = contrast is not None and settings.contrasts(sigma)
        # Unguided steps pass the latents alone: the denoiser then reads the conditional half
        # of its (negative, positive) inputs.
        model_input = torch.cat([latents] * 2) if guided or contrasted else latents
        timestep = t.expand(model_input.shape[0]) * settings.timestep_scale
        velocity = (contrast if contrasted else denoiser)(model_input, timestep, None).float()
        if guided:
            uncond, cond = velocity.chunk(2)
            velocity = uncond + settings.guidance_scale * (cond - uncond)
        elif contrasted:
            away, cond = velocity.chunk(2)
            velocity = cond + settings.contrast_scale * (cond - away)
        if velocity.shape[1] == 2 * latents.shape[1]:
            velocity = velocity.chunk(2, dim=1)[0]
        current = latents
        latents = scheduler.step(velocity, t, latents, **step_kwargs, return_dict=False)[0]
        on_step(i + 1, total, lambda c=current, v=velocity, s=sigma: c - s * v)
    return latents


def scm_sample(denoiser: Denoiser, scheduler, latents: torch.Tensor, steps: int,
               guidance: torch.Tensor, generator: list[torch.Generator],
               on_step: StepHook, max_timestep: float = 1.57080,
               intermediate_timestep: float = 1.3) -> torch.Tensor:
    """SANA-Sprint's TrigFlow consistency sampler (1 to 4 steps)."""
    sigma_data = scheduler.config.sigma_data
    scheduler.set_timesteps(
        num_inference_steps=steps, device=latents.device, max_timesteps=max_timestep,
        intermediate_timesteps=intermediate_timestep if steps == 2 else None)
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(0)
    latents = latents * sigma_data
    timesteps = scheduler.timesteps[:-1]
    total = len(timesteps)
    denoised = latents
    for i, t in enumerate(timesteps):
        timestep = t.expand(latents.shape[0])
        scm_t = torch.sin(timestep) / (torch.cos(timestep) + torch.sin(timestep))
        scm_tx = scm_t.view(-1, 1, 1, 1)
        norm = torch.sqrt(scm_tx**2 + (1 - scm_tx) ** 2)
        model_input = latents / sigma_data * norm
        prediction = denoiser(model_input, scm_t, guidance)
        prediction = ((1 - 2 * scm_tx) * model_input
                      + (1 - 2 * scm_tx + 2 * scm_tx**2) * prediction) / norm
        prediction = prediction.float() * sigma_data
        latents, denoised = scheduler.step(prediction, timestep, latents, generator=generator,
                                           return_dict=False)
        on_step(i + 1, total, lambda d=denoised: d / sigma_data)
    return denoised / sigma_data


def _accepts(scheduler, name: str) -> bool:
    import inspect

    return name in inspect.signature(scheduler.step).parameters
