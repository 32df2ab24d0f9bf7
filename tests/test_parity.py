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
