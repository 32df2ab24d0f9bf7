"""Any image a person can drop, read safely: every common format and mode, EXIF rotation,
first frame of animations; tiny, huge (decompression bombs), corrupt and non-image files refused
with a clear message."""

from __future__ import annotations

import io
import math
import warnings
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

MAX_PIXELS = 50_000_000  # 50 MP: larger is refused before it is decoded
MIN_SIDE = 16
FORMATS = "PNG, JPEG, WebP, BMP or GIF"


class ImageInputError(ValueError):
    """The dropped or given image cannot be used. The message says why and what to do."""


def _open(source: Path | bytes) -> Image.Image:
    name = f"'{source}'" if isinstance(source, Path) else "The dropped image data"
    if isinstance(source, Path) and not source.is_file():
        raise ImageInputError(f"{name} does not exist.")
    data = source.read_bytes() if isinstance(source, Path) else source
    if not data:
        raise ImageInputError(f"{name} is empty. Use a {FORMATS} image.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            if image.width * image.height > MAX_PIXELS:
                raise ImageInputError(
                    f"{name} is {image.width}x{image.height} pixels, more than Linea opens "
                    f"({MAX_PIXELS // 1_000_000} megapixels). Scale it down first.")
            image.seek(0)
            image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageInputError(f"{name} claims an enormous size; it was refused as unsafe. "
                              "Scale it down first.") from exc
    except UnidentifiedImageError as exc:
        raise ImageInputError(f"{name} is not an image Linea can read. "
                              f"Use a {FORMATS} image.") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageInputError(f"{name} is damaged or truncated ({exc}). "
                              "Save it again and retry.") from exc
    return image


def load_image(source: Path | bytes) -> Image.Image:
    """RGB, or RGBA when the image has transparency; EXIF orientation applied."""
    image = _open(source)
    if min(image.size) < MIN_SIDE:
        raise ImageInputError(f"The image is only {image.width}x{image.height} pixels; "
                              f"use one at least {MIN_SIDE} pixels on each side.")
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        image = _to_8bit(image)
    has_alpha = image.mode in ("RGBA", "LA", "PA") or (
        image.mode == "P" and "transparency" in image.info)
    return image.convert("RGBA" if has_alpha else "RGB")


def _to_8bit(image: Image.Image) -> Image.Image:
    """16-bit and float greyscale: stretch the used range to 0..255."""
    import numpy as np

    array = np.asarray(image, dtype=np.float64)
    low, high = float(array.min()), float(array.max())
    scaled = (array - low) / (high - low) * 255 if high > low else np.zeros_like(array)
    return Image.fromarray(scaled.round().astype(np.uint8), "L")


def fit_to_supported_size(width: int, height: int, multiple: int = 32,
                          target_area: int = 1024 * 1024, max_side: int = 2048) -> tuple[int, int]:
    """The size nearest `target_area` with the same aspect ratio, sides multiples of 32."""
    aspect = width / height
    w = math.sqrt(target_area * aspect)
    h = w / aspect
    scale = min(1.0, max_side / max(w, h))
    w, h = w * scale, h * scale
    return (max(multiple, round(w / multiple) * multiple),
            max(multiple, round(h / multiple) * multiple))


def fit_image(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Scale to cover `size` and crop the centre: no distortion."""
    return ImageOps.fit(image, size, Image.Resampling.LANCZOS)
