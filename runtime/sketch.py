"""Line maps for SANA's ControlNet: white lines on black, as its HED training maps are.

SANA's ControlNet was trained on HED soft-edge maps given the post-processing its own
inference applies (NVlabs/Sana, tools/controlnet/utils.py, `get_scribble_map`), all at the
generation resolution:
  1. blur the soft-edge map (Gaussian, sigma 3);
  2. thin it: keep pixels at least as strong as both neighbours along one of four directions
     (non-maximum suppression), and stronger than 127;
  3. blur the thin lines (Gaussian, sigma 3) and keep everything above 4: a smooth band;
  4. thickness: 0 erodes with a 4x4 square, above 1 dilates with a (thickness // 2) square,
     so 1 to 3 leave the band as it is (2 is SANA's default).
One deviation in step 2, explained in `_thin`, keeps drawn straight strokes thin.
The soft-edge map comes from the drawn strokes (a sketch) or from a classical multi-scale
gradient detector (a photo), not from the HED network, which Linea neither ships nor downloads.
The blurs, Sobel and dilations are sums or maxima of shifted views: on a CPU, several times
faster than torch's single-channel conv2d or max_pool2d.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from runtime.images import fit_image, fit_to_supported_size

PHOTO_NOTE = ("Lines found with a classical edge detector (multi-scale gradients), not the HED "
              "network SANA's ControlNet was trained on: strong outlines are followed best, "
              "fine texture is mostly left out.")
SKETCH, PHOTO, LINES = "sketch", "photo", "lines"
MAX_THICKNESS = 24  # SANA trained with thicknesses 0..24
# a pen stroke is a hard line one or two pixels wide; HED answers a line with a soft band
# several pixels wide, which is what survives step 1 and 2: strokes are widened to this
STROKE_BAND = 5
INK_CONTRAST = 0.16  # darker than the paper by this fraction of its brightness is ink
# summed photo gradient that counts as a clear edge: a clean brightness step of 20 levels (of
# 255) sums to about 230 and, alone in an image, just becomes a line; 40 levels sum to 460
FULL_EDGE = 200.0


def sketch_to_control(image: Image.Image, thickness: int = 2,
                      size: tuple[int, int] | None = None) -> Image.Image:
    """The line map of a drawn sketch: dark strokes on a light background, or a transparent
    layer whose alpha holds the strokes. `size` (width, height) defaults to the supported size
    nearest one megapixel with the image's aspect ratio; the image is cropped, never squashed."""
    _check_thickness(thickness)
    return _to_image(_post_process(_stroke_strength(_fit(image, size)), thickness))


def photo_to_control(image: Image.Image, thickness: int = 2,
                     size: tuple[int, int] | None = None) -> Image.Image:
    """The line map of a photo or painting, from classical edges (see PHOTO_NOTE)."""
    _check_thickness(thickness)
    return _to_image(_post_process(_edge_strength(_on_white(_fit(image, size))), thickness))


def auto_control(image: Image.Image, thickness: int = 2,
                 size: tuple[int, int] | None = None) -> tuple[Image.Image, str]:
    """The line map and what the image was read as: "lines" (already a line map: used as it
    is, only fitted to `size` when one is given), "sketch" or "photo"."""
    _check_thickness(thickness)
    image = _rgb(image)
    fitted = _fit(image, size)
    if _is_transparent_layer(fitted):
        return _to_image(_post_process(_stroke_strength(fitted), thickness)), SKETCH
    fitted = _on_white(fitted)
    grey = np.asarray(fitted.convert("L"))
    if _looks_like_line_map(fitted, grey):
        return (fitted if size else _on_white(image)), LINES
    if _looks_like_sketch(fitted, grey):
        return _to_image(_post_process(_stroke_strength(fitted, grey), thickness)), SKETCH
    return _to_image(_post_process(_edge_strength(fitted), thickness)), PHOTO


def _check_thickness(thickness: int) -> None:
    if not 0 <= thickness <= MAX_THICKNESS:
        raise ValueError(f"Line thickness must be between 0 and {MAX_THICKNESS}, "
                         f"not {thickness}.")


def _rgb(image: Image.Image) -> Image.Image:
    """RGB or RGBA, for images that did not come through `load_image`."""
    if image.mode in ("RGB", "RGBA"):
        return image
    return image.convert("RGBA" if "A" in image.getbands() else "RGB")


def _fit(image: Image.Image, size: tuple[int, int] | None) -> Image.Image:
    image = _rgb(image)
    return fit_image(image, size or fit_to_supported_size(*image.size))


def _on_white(image: Image.Image) -> Image.Image:
    """Transparent parts read as white paper, whatever colour they hide."""
    if image.mode != "RGBA":
        return image
    paper = Image.new("RGB", image.size, "white")
    paper.paste(image, mask=image.getchannel("A"))
    return paper


def _to_image(lines: torch.Tensor) -> Image.Image:
    return Image.fromarray(lines[0].to(torch.uint8).mul_(255).numpy(), "L").convert("RGB")


def _tensor(array: np.ndarray) -> torch.Tensor:
    """(1, H, W) float32 from an (H, W) array."""
    return torch.from_numpy(np.array(array, dtype=np.float32))[None]


def _percentile(values: torch.Tensor, q: float) -> float:
    """From a strided sample of about 50 000 values: as good here, and far cheaper."""
    sample = values.flatten()[:: max(1, values.numel() // 50_000)]
    return float(sample.kthvalue(max(1, round(q * sample.numel()))).values)


# --- reading the image -----------------------------------------------------------------------

def _is_transparent_layer(image: Image.Image) -> bool:
    """Strokes drawn on a transparent layer: mostly see-through. A cut-out photo is mostly
    opaque and is read on white paper instead."""
    if image.mode != "RGBA":
        return False
    alpha = np.asarray(image.getchannel("A").reduce(4))
    return alpha.min() < 250 and float((alpha > 128).mean()) < 0.3


def _looks_like_line_map(image: Image.Image, grey: np.ndarray) -> bool:
    """Already white lines on black: nearly all pixels near black or near white, mostly black,
    some white, no colour."""
    dark, bright = float((grey < 32).mean()), float((grey > 224).mean())
    return dark > 0.6 and bright > 0.005 and dark + bright > 0.85 and _saturation(image) < 30


def _looks_like_sketch(image: Image.Image, grey: np.ndarray) -> bool:
    """Light paper covering most of the image, thin ink covering little, little colour."""
    paper = float(np.percentile(grey[::4, ::4], 90))
    near_paper = float((grey >= paper * (1 - INK_CONTRAST / 2)).mean())
    ink = float((grey < paper * (1 - 2 * INK_CONTRAST)).mean())
    return paper > 150 and near_paper > 0.6 and ink < 0.2 and _saturation(image) < 50


def _saturation(image: Image.Image) -> float:
    thumb = image.convert("RGB").reduce(max(1, min(image.size) // 128))
    return float(np.asarray(thumb.convert("HSV"))[..., 1].mean())


def _stroke_strength(image: Image.Image, grey: np.ndarray | None = None) -> torch.Tensor:
    """A soft-edge map for drawn strokes: every stroke a full-strength band STROKE_BAND wide."""
    if _is_transparent_layer(image):
        ink = _tensor(np.asarray(image.getchannel("A"))) > 40
    else:
        if grey is None:
            grey = np.asarray(_on_white(image).convert("L"))
        values = _tensor(grey)
        ink = values < _percentile(values, 0.9) * (1 - INK_CONTRAST)
    radius = STROKE_BAND // 2
    return _window_max(ink.float(), radius, radius) * 255


def _edge_strength(image: Image.Image) -> torch.Tensor:
    """A soft-edge map for photos, standing in for HED: the gradient magnitude (Sobel) of the
    slightly blurred image at three scales (HED too fuses outputs of several strides), summed
    so that an edge present at every scale is strongest. The coarser scales use R, G and B, so
    that edges between colours of equal brightness count; full resolution uses brightness
    alone, as colour there would cost as much as everything else."""
    rgb = image.convert("RGB")
    height, width = rgb.height, rgb.width
    total = _gradient(_tensor(np.asarray(rgb.convert("L"))))
    for factor in (2, 4):
        level = np.asarray(rgb.reduce(factor), dtype=np.float32).transpose(2, 0, 1)
        magnitude = _gradient(torch.from_numpy(level.copy()))
        total += F.interpolate(magnitude[None], size=(height, width), mode="bilinear",
                               align_corners=False)[0]
    # Scaled by FULL_EDGE, or by a busy image's own strongest edges; the curve saturates
    # smoothly, like HED's sigmoid, so the middle of an edge stays its strongest point for
    # thinning to find.
    full = max(_percentile(total, 0.97), FULL_EDGE)
    return (1 - torch.exp(-total / full)) * 255


def _gradient(x: torch.Tensor) -> torch.Tensor:
    """(1, H, W) gradient magnitude over all channels of x, lightly blurred first."""
    return _sobel_squared(_blur(x, sigma=1.0, radius=2)).sum(0, keepdim=True).sqrt_()


# --- SANA's post-processing ------------------------------------------------------------------
# Maps are (channels, height, width) float tensors; every filter below works on the last two
# dimensions through shifted views.

def _post_process(strength: torch.Tensor, thickness: int) -> torch.Tensor:
    """A (1, H, W) soft-edge map in 0..255 -> (1, H, W) boolean line map, steps 1-4 of the
    module notes. The radii are OpenCV's: 4 sigma for float maps, 3 sigma for 8-bit maps."""
    lines = _thin(_blur(strength, sigma=3.0, radius=12)) > 127
    # OpenCV blurs the 8-bit map and rounds: "above 4" there means 4.5 and more here
    lines = _blur(lines.float() * 255, sigma=3.0, radius=9) >= 4.5
    if thickness == 0:
        return _window(lines.float(), 2, 1, torch.minimum, 1.0) > 0
    if thickness > 3:
        side = thickness // 2  # OpenCV anchors an even kernel one past its middle
        return _window_max(lines.float(), side // 2, side - 1 - side // 2) > 0
    return lines


def _neighbours(x: torch.Tensor, mode: str = "replicate") -> Callable[[int, int], torch.Tensor]:
    """at(dy, dx): x shifted so that each pixel sees its neighbour dy rows, dx columns away."""
    height, width = x.shape[-2:]
    p = F.pad(x, (1, 1, 1, 1), mode=mode)

    def at(dy: int, dx: int) -> torch.Tensor:
        return p[..., 1 + dy:1 + dy + height, 1 + dx:1 + dx + width]

    return at


def _thin(x: torch.Tensor) -> torch.Tensor:
    """Zero every pixel that is not a maximum across the line in any of four directions.
    OpenCV's version (dilate == x) also keeps a pixel equal to both neighbours: on real HED maps
    that almost never happens, but a drawn stroke is perfectly flat along its length and would
    stay as wide as its band. A maximum here must also exceed one of the two neighbours, which
    keeps ridges, and keeps only the rims of a flat plateau, as HED outlines a filled shape."""
    at = _neighbours(x)
    keep = torch.zeros_like(x, dtype=torch.bool)
    for (ay, ax), (by, bx) in (((0, -1), (0, 1)), ((-1, 0), (1, 0)),
                               ((-1, -1), (1, 1)), ((-1, 1), (1, -1))):
        a, b = at(ay, ax), at(by, bx)
        keep |= (x >= a) & (x >= b) & ((x > a) | (x > b))
    return torch.where(keep, x, 0.0)


def _sobel_squared(x: torch.Tensor) -> torch.Tensor:
    """Squared Sobel gradient magnitude, each kernel as a smoothing and a difference."""
    p = F.pad(x, (1, 1, 1, 1), mode="replicate")
    down = p[..., :-2, :] + 2 * p[..., 1:-1, :] + p[..., 2:, :]  # smoothed along columns
    across = p[..., :, :-2] + 2 * p[..., :, 1:-1] + p[..., :, 2:]  # smoothed along rows
    gx = down[..., :, 2:] - down[..., :, :-2]
    gy = across[..., 2:, :] - across[..., :-2, :]
    return gx * gx + gy * gy


def _blur(x: torch.Tensor, sigma: float, radius: int) -> torch.Tensor:
    """Separable Gaussian with mirrored borders (OpenCV's default, BORDER_REFLECT_101)."""
    offsets = torch.arange(radius + 1, dtype=torch.float32)
    weights = torch.exp(-offsets**2 / (2 * sigma**2))
    weights = (weights / (weights[0] + 2 * weights[1:].sum())).tolist()
    for dim in (-2, -1):
        pad = (0, 0, radius, radius) if dim == -2 else (radius, radius, 0, 0)
        p = F.pad(x, pad, mode="reflect")
        length = x.shape[dim]
        out = x * weights[0]
        for i in range(1, radius + 1):
            out.add_(p.narrow(dim, radius - i, length) + p.narrow(dim, radius + i, length),
                     alpha=weights[i])
        x = out
    return x


def _window_max(x: torch.Tensor, before: int, after: int) -> torch.Tensor:
    """Maximum over the square window from -before to +after pixels: a dilation."""
    return _window(x, before, after, torch.maximum, 0.0)


def _window(x: torch.Tensor, before: int, after: int,
            pick: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
            outside: float) -> torch.Tensor:
    """`pick` (maximum or minimum) over a square window, `outside` beyond the borders (for an
    erosion, a value that never wins, as in OpenCV)."""
    for dim in (-2, -1):
        pad = (0, 0, before, after) if dim == -2 else (before, after, 0, 0)
        p = F.pad(x, pad, value=outside)
        length = x.shape[dim]
        out = p.narrow(dim, 0, length)
        for shift in range(1, before + after + 1):
            out = pick(out, p.narrow(dim, shift, length))
        x = out
    return x
