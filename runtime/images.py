"""Any image a person can drop, read safely.

Every common format and colour mode comes back as RGB, or RGBA when it really has transparency,
upright (EXIF orientation applied) and as its first frame when animated. Tiny images,
decompression bombs, damaged files and files that are not images are refused with an
`ImageInputError` that names the file and says what to do.
"""

from __future__ import annotations

import io
import math
import struct
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_PIXELS = 50_000_000  # larger images are refused from their header, before any decoding
MIN_SIDE = 16
# Only these decoders are tried: Pillow's other plugins (EPS runs Ghostscript, for one) are
# more attack surface than a dropped picture deserves. Camera JPEGs with several pictures
# (MPO) open through the JPEG decoder.
FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF")
FORMAT_NAMES = "PNG, JPEG, WebP, BMP, GIF or TIFF"
ALPHA_MODES = ("RGBA", "LA", "PA", "La", "RGBa")


class ImageInputError(ValueError):
    """The dropped or given image cannot be used. The message says why and what to do."""


def load_image(source: Path | str | bytes) -> Image.Image:
    """The image at `source` (a file, or encoded image data such as a paste) as RGB, or RGBA
    when some of it is transparent; EXIF orientation applied, first frame of animations."""
    name = "The dropped image data" if isinstance(source, bytes) else f"'{source}'"
    data = source if isinstance(source, bytes) else _read(Path(source), name)
    if not data:
        raise ImageInputError(f"{name} is empty. Use a {FORMAT_NAMES} image.")
    try:
        with warnings.catch_warnings():
            # Pillow only warns between its own limit and twice that: treat it as the refusal
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=FORMATS)
            _check_size(image, name)
            image.seek(0)
            image.load()
            ImageOps.exif_transpose(image, in_place=True)
            image = _to_display_mode(image)
    except ImageInputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageInputError(
            f"{name} claims to be enormous and was refused as unsafe. "
            f"Scale it below {MAX_PIXELS // 1_000_000} megapixels and try again.") from exc
    except UnidentifiedImageError as exc:
        raise ImageInputError(
            f"{name} is not an image Linea can read (it reads {FORMAT_NAMES} files). "
            "Open it in an image editor and save it as PNG or JPEG.") from exc
    # Pillow reports broken data with any of these, struct.error from malformed headers
    except (OSError, SyntaxError, EOFError, ValueError, struct.error) as exc:
        raise ImageInputError(
            f"{name} is damaged or incomplete ({exc}). "
            "Save or download it again, then retry.") from exc
    return image


def _read(path: Path, name: str) -> bytes:
    if not path.exists():
        raise ImageInputError(f"{name} does not exist. Check the file name and folder.")
    if not path.is_file():
        raise ImageInputError(f"{name} is a folder, not an image file. Choose an image in it.")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ImageInputError(f"{name} cannot be read ({exc.strerror}). "
                              "Check that the file is not locked or offline.") from exc


def _check_size(image: Image.Image, name: str) -> None:
    """From the header alone, so that a bomb is refused before it is decoded."""
    width, height = image.size
    if width * height > MAX_PIXELS:
        raise ImageInputError(
            f"{name} is {width}x{height} pixels, more than Linea opens "
            f"({MAX_PIXELS // 1_000_000} megapixels). Scale it down and try again.")
    if min(width, height) < MIN_SIDE:
        raise ImageInputError(
            f"{name} is only {width}x{height} pixels. Use an image at least "
            f"{MIN_SIDE} pixels on each side.")


def _to_display_mode(image: Image.Image) -> Image.Image:
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        image = _deep_grey_to_8bit(image)
    transparent = image.mode in ALPHA_MODES or "transparency" in image.info
    if not transparent:
        return image if image.mode == "RGB" else image.convert("RGB")
    rgba = image if image.mode == "RGBA" else image.convert("RGBA")
    # an alpha channel that is opaque everywhere carries nothing: drop it
    return rgba if rgba.getchannel("A").getextrema()[0] < 255 else rgba.convert("RGB")


def _deep_grey_to_8bit(image: Image.Image) -> Image.Image:
    """16-bit, 32-bit and float greyscale to 8 bits, keeping brightness when the value range
    is a known one (0..1, 0..255, 0..65535) and stretching it otherwise."""
    values = np.asarray(image, dtype=np.float64)
    low, high = float(values.min()), float(values.max())
    if image.mode.startswith("I;16") or (low >= 0 and 255 < high <= 65535):
        scaled = values / 257
    elif low >= 0 and high <= 1 and image.mode == "F":
        scaled = values * 255
    elif low >= 0 and high <= 255:
        scaled = values
    else:
        scaled = (values - low) * (255 / (high - low)) if high > low else values * 0
    return Image.fromarray(np.clip(np.round(scaled), 0, 255).astype(np.uint8), "L")


def fit_to_supported_size(width: int, height: int, multiple: int = 32,
                          max_side: int = 2048,
                          target_area: int = 1024 * 1024) -> tuple[int, int]:
    """The (width, height) with sides multiples of `multiple`, no side above `max_side`, whose
    aspect ratio is closest to width:height and whose area is near `target_area`."""
    if width <= 0 or height <= 0:
        raise ValueError(f"An image size must be positive, not {width}x{height}.")
    if max_side < multiple:
        raise ValueError(f"max_side ({max_side}) must be at least multiple ({multiple}).")
    aspect = width / height
    ideal_w = math.sqrt(target_area * aspect)
    ideal_h = ideal_w / aspect
    shrink = min(1.0, max_side / max(ideal_w, ideal_h))
    ideal_w, ideal_h = ideal_w * shrink, ideal_h * shrink
    ideal_area = ideal_w * ideal_h

    def steps(ideal: float) -> list[int]:
        base = round(ideal / multiple)
        return sorted({min(max(1, base + d), max_side // multiple) * multiple
                       for d in (-2, -1, 0, 1, 2)})

    def error(size: tuple[int, int]) -> float:
        # the shape matters more than the exact pixel count
        w, h = size
        return abs(math.log(w / h / aspect)) + 0.1 * abs(math.log(w * h / ideal_area))

    return min(((w, h) for w in steps(ideal_w) for h in steps(ideal_h)), key=error)


def fit_image(image: Image.Image, size: tuple[int, int],
              resample: Image.Resampling = Image.Resampling.BILINEAR) -> Image.Image:
    """Scale `image` to cover `size` and crop the centre: no distortion. Large reductions go
    through an integer box reduction first, which is much faster than resampling directly."""
    width, height = size
    scale = max(width / image.width, height / image.height)
    crop_w, crop_h = width / scale, height / scale
    left, top = max(0.0, (image.width - crop_w) / 2), max(0.0, (image.height - crop_h) / 2)
    # rounding can push the crop a hair outside the image
    box = (left, top, min(image.width, left + crop_w), min(image.height, top + crop_h))
    factor = int(1 / scale)
    if factor >= 2:
        int_box = (math.floor(box[0]), math.floor(box[1]), math.ceil(box[2]), math.ceil(box[3]))
        reduced = image.reduce(factor, box=int_box)
        # where the crop box lies inside the reduced image
        box = ((box[0] - int_box[0]) / factor, (box[1] - int_box[1]) / factor,
               (box[2] - int_box[0]) / factor, (box[3] - int_box[1]) / factor)
        image = reduced
    return image.resize(size, resample, box=box)
