"""Line maps for SANA's ControlNet: white lines on black, as its HED training maps are.

A drawn sketch's strokes (dark on light, or the alpha of a transparent layer) or a photo's edges
become a line-strength map, which then gets the post-processing applied to HED maps for
scribble-style control: thin to the line centres (non-maximum suppression), blur, threshold,
and widen to the chosen thickness. Photos use a classical multi-scale gradient detector, an
honest stand-in for HED (no learned detector is downloaded or shipped).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter

PHOTO_NOTE = ("Edges found with a classical gradient detector, a stand-in for the HED network "
              "SANA's ControlNet was trained with: results follow strong outlines best.")
WORK_SIDE = 1024


def _to_tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image, dtype=np.float32).copy())


def _working_copy(image: Image.Image) -> Image.Image:
    scale = WORK_SIDE / max(image.size)
    if scale < 1:
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        return image.resize(size, Image.Resampling.BOX)
    return image


def _gaussian(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Blur a (1, 1, H, W) map in 0..255. Pillow's blur is many times faster than a
    single-channel convolution on a CPU; 8-bit steps are below what the thresholds see."""
    array = x[0, 0].clamp(0, 255).round().to(torch.uint8).numpy()
    blurred = Image.fromarray(array, "L").filter(ImageFilter.GaussianBlur(sigma))
    return _to_tensor(blurred)[None, None]


def _gradient(x: torch.Tensor) -> torch.Tensor:
    """Sobel gradient magnitude, written as shifted differences (no convolution call)."""
    p = F.pad(x, (1, 1, 1, 1), mode="replicate")
    h, w = x.shape[-2:]

    def at(dy: int, dx: int) -> torch.Tensor:
        return p[..., dy:dy + h, dx:dx + w]

    gx = (at(0, 2) + 2 * at(1, 2) + at(2, 2)) - (at(0, 0) + 2 * at(1, 0) + at(2, 0))
    gy = (at(2, 0) + 2 * at(2, 1) + at(2, 2)) - (at(0, 0) + 2 * at(0, 1) + at(0, 2))
    return torch.sqrt(gx * gx + gy * gy)


def _thin(strength: torch.Tensor) -> torch.Tensor:
    """Keep pixels that are the maximum across the line in at least one of four directions."""
    x = strength
    padded = F.pad(x, (1, 1, 1, 1), mode="replicate")
    h, w = x.shape[-2:]
    keep = torch.zeros_like(x, dtype=torch.bool)
    for (dy1, dx1), (dy2, dx2) in (((0, 1), (2, 1)), ((1, 0), (1, 2)),
                                   ((0, 0), (2, 2)), ((0, 2), (2, 0))):
        a = padded[..., dy1:dy1 + h, dx1:dx1 + w]
        b = padded[..., dy2:dy2 + h, dx2:dx2 + w]
        keep |= (x >= a) & (x >= b)
    return torch.where(keep, x, torch.zeros_like(x))


def _post_process(strength: torch.Tensor, thickness: int) -> torch.Tensor:
    """strength: (1, 1, H, W) in 0..255 -> binary line map 0/255."""
    lines = (_thin(strength) > 127).float() * 255
    lines = (_gaussian(lines, 3.0) > 4).float()
    if thickness > 1:
        lines = F.max_pool2d(lines, 2 * (thickness // 2) + 1, stride=1,
                             padding=thickness // 2)
    return lines * 255


def _to_image(lines: torch.Tensor, size: tuple[int, int] | None) -> Image.Image:
    array = lines[0, 0].clamp(0, 255).to(torch.uint8).numpy()
    image = Image.fromarray(array, "L").convert("RGB")
    return image.resize(size, Image.Resampling.BILINEAR) if size else image


def sketch_strength(image: Image.Image) -> torch.Tensor:
    """How strongly each pixel is a stroke: alpha for a transparent layer, else darkness."""
    if image.mode == "RGBA" and image.getextrema()[3][0] < 250:
        return _to_tensor(image.getchannel("A"))[None, None]
    grey = _to_tensor(image.convert("L"))
    background = torch.quantile(grey.flatten()[:: max(1, grey.numel() // 100_000)], 0.9)
    return ((background - grey).clamp(min=0) * 255 / max(float(background), 1.0))[None, None]


def sketch_to_control(image: Image.Image, thickness: int = 2,
                      size: tuple[int, int] | None = None) -> Image.Image:
    strength = sketch_strength(_working_copy(image))
    # a pen stroke is already a line: widen faint strokes so thinning keeps them
    strength = torch.where(strength > 40, torch.full_like(strength, 255.0), strength)
    return _to_image(_post_process(strength, thickness), size)


def photo_to_control(image: Image.Image, thickness: int = 2,
                     size: tuple[int, int] | None = None) -> Image.Image:
    grey_image = _working_copy(image).convert("L")
    grey = _to_tensor(grey_image)[None, None]
    total = torch.zeros_like(grey)
    for factor in (1, 2, 4):  # several scales, like HED's side outputs
        coarse = grey_image.reduce(factor) if factor > 1 else grey_image
        blurred = _to_tensor(coarse.filter(ImageFilter.GaussianBlur(1.0)))[None, None]
        # per coarse pixel, a gradient is `factor` times larger: coarse scales weigh more
        magnitude = _gradient(blurred)
        if factor > 1:
            magnitude = F.interpolate(magnitude, size=grey.shape[-2:], mode="bilinear",
                                      align_corners=False)
        total += magnitude
    scale = torch.quantile(total.flatten()[:: max(1, total.numel() // 100_000)], 0.995)
    strength = (total * 255 / max(float(scale), 1e-6)).clamp(0, 255)
    return _to_image(_post_process(strength, thickness), size)


def looks_like_sketch(image: Image.Image) -> bool:
    """Sketches are mostly one light background colour, or a transparent layer."""
    if image.mode == "RGBA" and image.getextrema()[3][0] < 250:
        return True
    small = np.asarray(image.convert("L").resize((128, 128)), dtype=np.float32)
    return float((small > 200).mean()) > 0.6 and float(np.asarray(
        image.convert("RGB").resize((64, 64)).convert("HSV"))[..., 1].mean()) < 60


def looks_like_line_map(image: Image.Image) -> bool:
    """Already a control map: white lines on a mostly black background."""
    small = np.asarray(image.convert("L").resize((128, 128)), dtype=np.float32)
    return float((small < 30).mean()) > 0.7 and float(((small > 30) & (small < 200)).mean()) < 0.1


def auto_control(image: Image.Image, thickness: int = 2,
                 size: tuple[int, int] | None = None) -> tuple[Image.Image, str]:
    """The line map and which path made it: "lines", "sketch" or "photo"."""
    transparent_layer = image.mode == "RGBA" and image.getextrema()[3][0] < 250
    if not transparent_layer and looks_like_line_map(image):
        rgb = image.convert("RGB")
        return (rgb.resize(size, Image.Resampling.BILINEAR) if size else rgb), "lines"
    if looks_like_sketch(image):
        return sketch_to_control(image, thickness, size), "sketch"
    return photo_to_control(image, thickness, size), "photo"
