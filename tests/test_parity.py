"""The runtime's latents equal diffusers' reference pipelines for the same inputs and seeds (fp32).

Tolerance: 1e-5 absolute. The runtime calls the same modules and schedulers in the same order, so
the observed difference is exactly zero; the tolerance only allows for a future reordering of
floating-point sums.
"""

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, SanaPipeline, SanaSprintPipeline

from runtime import Engine, GenerationRequest, Sampler

ATOL = 1e-5


@pytest.fixture(scope="module")
def sana_engine(sana_tiny):
    return Engine(sana_tiny, device="cpu", precision="fp32", quantize_text_encoder=False)


@pytest.fixture(scope="module")
def sana_pipe(sana_tiny):
    return SanaPipeline.from_pretrained(sana_tiny, torch_dtype=torch.float32)


def _generators(*seeds):
    return [torch.Generator("cpu").manual_seed(s) for s in seeds]


def test_sana_dpm_solver_matches_diffusers(sana_engine, sana_pipe):
    request = GenerationRequest("A red circle left of a blue square", negative_prompt="blurry",
                                width=256, height=192, steps=6, guidance_scale=4.5, seed=42,
                                count=2)
    ours = sana_engine.generate(request, previews=False).latents
    reference = sana_pipe(
        request.prompt, negative_prompt="blurry", num_inference_steps=6, guidance_scale=4.5,
        height=192, width=256, num_images_per_prompt=2, generator=_generators(42, 43),
        output_type="latent", use_resolution_binning=False).images
    assert ours.shape == reference.shape == (2, 32, 6, 8)
    assert reference.abs().mean() > 0.1
    torch.testing.assert_close(ours, reference, atol=ATOL, rtol=0)


def test_sana_flow_euler_without_instruction_matches_diffusers(sana_engine, sana_tiny):
    pipe = SanaPipeline.from_pretrained(sana_tiny, torch_dtype=torch.float32)
    pipe.scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    request = GenerationRequest("two small yellow stars", width=128, height=128, steps=5,
                                guidance_scale=3.0, seed=7, sampler=Sampler.FLOW_EULER,
                                complex_human_instruction=False)
    ours = sana_engine.generate(request, previews=False).latents
    reference = pipe(request.prompt, num_inference_steps=5, guidance_scale=3.0, height=128,
                     width=128, generator=_generators(7), output_type="latent",
                     use_resolution_binning=False, complex_human_instruction=None).images
    torch.testing.assert_close(ours, reference, atol=ATOL, rtol=0)


@pytest.mark.parametrize("steps", [1, 2, 4])
def test_sprint_scm_matches_diffusers(sprint_tiny, steps):
    engine = Engine(sprint_tiny, device="cpu", precision="fp32", quantize_text_encoder=False)
    pipe = SanaSprintPipeline.from_pretrained(sprint_tiny, torch_dtype=torch.float32)
    request = GenerationRequest("a green triangle above a purple star", width=128, height=128,
                                steps=steps, seed=11)
    ours = engine.generate(request, previews=False).latents
    reference = pipe(request.prompt, num_inference_steps=steps, height=128, width=128,
                     generator=_generators(11), output_type="latent",
                     use_resolution_binning=False,
                     intermediate_timesteps=1.3 if steps == 2 else None).images
    assert reference.abs().mean() > 0.1
    torch.testing.assert_close(ours, reference, atol=ATOL, rtol=0)


def test_image_k_of_a_batch_is_remade_alone_with_its_seed(sana_engine):
    batch = sana_engine.generate(GenerationRequest("a cat", width=128, height=128, steps=3,
                                                   seed=100, count=3), previews=False)
    alone = sana_engine.generate(GenerationRequest("a cat", width=128, height=128, steps=3,
                                                   seed=102), previews=False)
    assert batch.seeds == (100, 101, 102)
    torch.testing.assert_close(batch.latents[2:], alone.latents, atol=ATOL, rtol=0)
    assert not torch.allclose(batch.latents[0], batch.latents[1])


def test_steps_outside_the_guidance_interval_run_the_conditional_branch_alone(sana_tiny,
                                                                              sana_pipe,
                                                                              with_interval):
    # An interval no step falls in: the result must be diffusers' unguided sampling exactly
    # (the runtime encodes the negative prompt but never uses it).
    engine = Engine(with_interval(sana_tiny, [0.0, 1e-6]), device="cpu",
                    precision="fp32", quantize_text_encoder=False)
    request = GenerationRequest("A red circle left of a blue square", width=128, height=128,
                                steps=5, guidance_scale=4.5, seed=5, count=2)
    made = engine.generate(request, previews=False)
    assert made.record(0)["guidance_interval"] == [0.0, 1e-6]  # kept in the PNG's metadata
    ours = made.latents
    reference = sana_pipe(request.prompt, num_inference_steps=5, guidance_scale=1.0,
                          height=128, width=128, num_images_per_prompt=2,
                          generator=_generators(5, 6), output_type="latent",
                          use_resolution_binning=False).images
    torch.testing.assert_close(ours, reference, atol=ATOL, rtol=0)
    guided = sana_pipe(request.prompt, num_inference_steps=5, guidance_scale=4.5, height=128,
                       width=128, num_images_per_prompt=2, generator=_generators(5, 6),
                       output_type="latent", use_resolution_binning=False).images
    assert (guided - reference).abs().max() > 1e-3  # guidance does change these latents


def test_flow_sampler_guides_exactly_the_steps_inside_the_interval():
    from diffusers import DPMSolverMultistepScheduler

    from runtime.sampling import FlowSettings, flow_sample

    scheduler = DPMSolverMultistepScheduler(
        use_flow_sigmas=True, flow_shift=2.0, prediction_type="flow_prediction")
    seen: list[tuple[float, int]] = []

    def denoiser(x, t, _g):
        seen.append((float(t[0]) / 1000, x.shape[0]))
        # uncond half predicts 0, cond half 1: a guided step's velocity is the scale itself
        return torch.cat([torch.zeros_like(x[:1]), torch.ones_like(x[1:])]) if x.shape[0] == 2 \
            else torch.ones_like(x)

    settings = FlowSettings(10, 3.0, guidance_interval=(0.2, 0.8))
    flow_sample(denoiser, scheduler, torch.zeros(1, 4, 8, 8), settings,
                [torch.Generator().manual_seed(0)], lambda *a: None)
    assert len(seen) == 10
    inside = [s for s, n in seen if 0.2 <= s <= 0.8]
    assert inside and len(inside) < 10  # the interval splits this schedule
    assert all(n == (2 if 0.2 <= s <= 0.8 else 1) for s, n in seen)
    assert settings.guides(0.5) and not settings.guides(0.9)
    assert not FlowSettings(10, 1.0, guidance_interval=(0.2, 0.8)).guides(0.5)


def test_flow_sampler_steers_away_from_the_contrast_only_outside_the_guided_steps():
    from diffusers import DPMSolverMultistepScheduler

    from runtime.sampling import FlowSettings, flow_sample

    scheduler = DPMSolverMultistepScheduler(
        use_flow_sigmas=True, flow_shift=2.0, prediction_type="flow_prediction")
    seen: list[tuple[str, float, int]] = []
    velocities: list[float] = []

    def denoiser(x, t, _g):
        seen.append(("guide", float(t[0]) / 1000, x.shape[0]))
        # negative half 0, prompt half 1
        return torch.cat([torch.zeros_like(x[:1]), torch.ones_like(x[1:])]) if x.shape[0] == 2 \
            else torch.ones_like(x)

    def contrast(x, t, _g):
        seen.append(("contrast", float(t[0]) / 1000, x.shape[0]))
        # contrast half 3, prompt half 1: a steered step's velocity is 1 + 2 * (1 - 3) = -3
        return torch.cat([torch.full_like(x[:1], 3.0), torch.ones_like(x[1:])])

    class Recording(DPMSolverMultistepScheduler):
        def step(self, model_output, *args, **kwargs):
            velocities.append(float(model_output.flatten()[0]))
            return super().step(model_output, *args, **kwargs)

    scheduler = Recording.from_config(scheduler.config)
    settings = FlowSettings(12, 3.0, guidance_interval=(0.2, 0.8), contrast_scale=2.0,
                            contrast_interval=(0.5, 1.0))
    flow_sample(denoiser, scheduler, torch.zeros(1, 4, 8, 8), settings,
                [torch.Generator().manual_seed(0)], lambda *a: None, contrast)
    assert len(seen) == 12
    for (kind, sigma, n), velocity in zip(seen, velocities, strict=True):
        if 0.2 <= sigma <= 0.8:  # guided: guidance wins where the two intervals overlap
            assert (kind, n, velocity) == ("guide", 2, 3.0)
        elif sigma > 0.5:
            assert (kind, n, velocity) == ("contrast", 2, -3.0)
        else:
            assert (kind, n, velocity) == ("guide", 1, 1.0)
    assert {kind for kind, _, _ in seen} == {"guide", "contrast"}
    assert any(sigma > 0.8 for _, sigma, _ in seen) and any(sigma < 0.2 for _, sigma, _ in seen)
    # without a contrast denoiser, or at scale 0, those steps run the prompt alone
    assert not FlowSettings(12, 3.0, contrast_scale=0.0).contrasts(0.9)
    seen.clear()
    flow_sample(denoiser, scheduler, torch.zeros(1, 4, 8, 8), settings,
                [torch.Generator().manual_seed(0)], lambda *a: None)
    assert all(kind == "guide" for kind, _, _ in seen)
