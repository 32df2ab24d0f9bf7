"""ControlNet conditioning: the control image becomes a latent once, then steers every step.

The line map is resized and normalised as SanaControlNetPipeline does, encoded with the model's
own DC-AE encoder, and passed with the noisy latents to the ControlNet, whose block outputs are
added to the transformer's blocks.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image

from runtime.errors import RequestError

Forward = Callable[..., torch.Tensor]


def control_pixels(image: Image.Image, width: int, height: int, scale: int) -> torch.Tensor:
    """(1, 3, H, W) in [-1, 1], resized exactly as the reference pipeline resizes."""
    from diffusers.image_processor import PixArtImageProcessor

    processor = PixArtImageProcessor(vae_scale_factor=scale)
    return processor.preprocess(image.convert("RGB"), height=height, width=width)


def read_control_image(path: str | Path, thickness: int = 2,
                       size: tuple[int, int] | None = None) -> tuple[Image.Image, str]:
    """The line map the ControlNet sees, made from a line map, a sketch or a photo, and which
    of the three the image was taken for. With `size` (width, height) the image is fitted to it
    (cropped to the aspect ratio, never squashed) before lines are drawn, so the line thickness
    is in the generated image's pixels."""
    from runtime.sketch import auto_control

    return auto_control(open_control_image(path), thickness, size)


def open_control_image(path: str | Path) -> Image.Image:
    """The control image, read and checked; a RequestError that says why if it is unusable
    (the command line calls this before it loads a model)."""
    from runtime.images import ImageInputError, load_image

    try:
        return load_image(Path(path))
    except ImageInputError as exc:
        raise RequestError(f"The control image cannot be used: {exc}",
                           "Use a PNG, JPEG or WebP sketch, photo or line map.") from exc


def encode_control(vae: torch.nn.Module, image: Image.Image, width: int, height: int,
                   scale: int) -> torch.Tensor:
    pixels = control_pixels(image, width, height, scale)
    with torch.inference_mode():
        latent = vae.encode(pixels.to(vae.device, vae.dtype)).latent
    return latent * vae.config.scaling_factor


def controlled_forward(transformer: torch.nn.Module,
                       controlnet: torch.nn.Module | None) -> Forward:
    """One call that runs the ControlNet (when conditioned) and then the transformer."""

    def forward(**tensors: torch.Tensor) -> torch.Tensor:
        control = tensors.pop("controlnet_cond", None)
        if control is None or controlnet is None:
            return transformer(**tensors, return_dict=False)[0]
        scale = tensors.pop("conditioning_scale")
        dtype = controlnet.dtype
        blocks = controlnet(
            tensors["hidden_states"].to(dtype),
            encoder_hidden_states=tensors["encoder_hidden_states"].to(dtype),
            encoder_attention_mask=tensors["encoder_attention_mask"],
            timestep=tensors["timestep"], controlnet_cond=control, conditioning_scale=scale,
            return_dict=False)[0]
        blocks = tuple(b.to(transformer.dtype) for b in blocks)
        return transformer(**tensors, controlnet_block_samples=blocks, return_dict=False)[0]

    return forward
