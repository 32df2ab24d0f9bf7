"""Cheap step previews: a linear map from latent channels to RGB, fitted to the model's own decoder.

Decoding a full latent every step would cost as much as the final decode. Instead, once per model,
a few random latents are decoded at a small size and a least-squares fit maps each latent vector to
the mean colour of the pixels it decodes to. A preview is then one matrix product.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

PROBE_TOKENS = 8
PREVIEW_SIDE = 256


class PreviewProjector:
    def __init__(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        self.weight = weight
        self.bias = bias

    @classmethod
    def fit(cls, vae: torch.nn.Module, latent_channels: int, scale: int) -> PreviewProjector | None:
        """None when the decoder gives no usable colours (previews are then left out)."""
        device, dtype = next(vae.parameters()).device, next(vae.parameters()).dtype
        generator = torch.Generator("cpu").manual_seed(0)
        probe = torch.randn(2, latent_channels, PROBE_TOKENS, PROBE_TOKENS, generator=generator)
        with torch.inference_mode():
            scaled = probe.to(device, dtype) / vae.config.scaling_factor
            pixels = vae.decode(scaled, return_dict=False)[0].float().cpu()
        if not torch.isfinite(pixels).all():
            return None
        colours = torch.nn.functional.avg_pool2d((pixels / 2 + 0.5).clamp(0, 1), scale)
        x = probe.permute(0, 2, 3, 1).reshape(-1, latent_channels)
        x = torch.cat([x, torch.ones(len(x), 1)], dim=1)
        y = colours.permute(0, 2, 3, 1).reshape(-1, 3)
        solution = torch.linalg.lstsq(x, y).solution
        return cls(solution[:-1], solution[-1])

    def project(self, latent: torch.Tensor) -> Image.Image:
        """latent: (C, h, w) in the model's normalised latent space."""
        flat = latent.float().cpu().permute(1, 2, 0) @ self.weight + self.bias
        rgb = (flat.clamp(0, 1).numpy() * 255).round().astype(np.uint8)
        image = Image.fromarray(rgb, "RGB")
        h, w = rgb.shape[:2]
        side = max(h, w)
        return image.resize((PREVIEW_SIDE * w // side, PREVIEW_SIDE * h // side),
                            Image.Resampling.BILINEAR)
