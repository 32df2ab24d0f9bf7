"""Image intake: every kind of file a person can drop is read, or refused with a clear message."""

import io
import math
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageDraw

from runtime.images import (
    MAX_PIXELS,
    ImageInputError,
    fit_image,
    fit_to_supported_size,
    load_image,
)


def _save(image, path, **kwargs):
    image.save(path, **kwargs)
    return path


def _png_bytes(image):
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize(("mode", "fmt", "expect"), [
    ("RGB", "PNG", "RGB"), ("RGB", "JPEG", "RGB"), ("RGB", "WEBP", "RGB"), ("RGB", "BMP", "RGB"),
    ("RGB", "GIF", "RGB"), ("RGB", "TIFF", "RGB"), ("P", "PNG", "RGB"), ("L", "PNG", "RGB"),
    ("1", "BMP", "RGB"), ("CMYK", "JPEG", "RGB"), ("I;16", "PNG", "RGB"), ("I", "TIFF", "RGB"),
    ("F", "TIFF", "RGB"),
])
def test_formats_and_modes_come_back_as_rgb(tmp_path, mode, fmt, expect):
    path = _save(Image.new(mode, (64, 48)), tmp_path / f"x.{fmt.lower()}", format=fmt)
    loaded = load_image(path)
    assert (loaded.mode, loaded.size) == (expect, (64, 48))


def test_cmyk_jpeg_keeps_its_colour(tmp_path):
    path = _save(Image.new("CMYK", (32, 32), (0, 255, 255, 0)), tmp_path / "print.jpg")
    red, green, blue = load_image(path).getpixel((16, 16))
    assert red > 200 and green < 60 and blue < 60


def test_transparency_is_kept_only_when_present(tmp_path):
    half = Image.new("RGBA", (32, 32), (255, 0, 0, 255))
    half.paste((0, 0, 0, 0), (0, 0, 16, 32))
    assert load_image(_save(half, tmp_path / "half.png")).mode == "RGBA"
    opaque = Image.new("RGBA", (32, 32), (255, 0, 0, 255))
    assert load_image(_save(opaque, tmp_path / "opaque.png")).mode == "RGB"
    grey_alpha = Image.new("LA", (32, 32), (90, 0))
    grey_alpha.paste((90, 255), (0, 0, 32, 8))
    loaded = load_image(_save(grey_alpha, tmp_path / "la.png"))
    assert loaded.mode == "RGBA" and loaded.getpixel((4, 4)) == (90, 90, 90, 255)
    palette = Image.new("P", (32, 32), 1)
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    palette.paste(0, (0, 0, 8, 8))
    loaded = load_image(_save(palette, tmp_path / "pal.png", transparency=0))
    assert loaded.mode == "RGBA" and loaded.getpixel((2, 2))[3] == 0
    assert loaded.getpixel((20, 20)) == (255, 0, 0, 255)


def test_deep_greyscale_keeps_its_brightness(tmp_path):
    ramp = np.linspace(0, 32767, 64 * 32).reshape(32, 64).astype(np.uint16)  # a dark image
    loaded = np.asarray(load_image(_save(Image.fromarray(ramp), tmp_path / "deep.png")))
    assert loaded[0, 0, 0] == 0 and loaded[-1, -1, 0] == 127  # kept dark, not stretched
    assert abs(int(loaded[16, 32, 0]) - ramp[16, 32] / 257) <= 1
    unit = Image.fromarray(np.full((32, 32), 0.5, dtype=np.float32), "F")
    assert load_image(_save(unit, tmp_path / "unit.tif")).getpixel((1, 1)) == (128, 128, 128)


def test_exif_rotation_is_applied(tmp_path):
    image = Image.new("RGB", (80, 40), "blue")
    image.paste((255, 0, 0), (0, 0, 40, 40))  # left half red
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display", as phones write
    loaded = load_image(_save(image, tmp_path / "phone.jpg", exif=exif))
    assert loaded.size == (40, 80)
    top, bottom = loaded.getpixel((20, 10)), loaded.getpixel((20, 70))
    assert top[0] > 200 and top[2] < 60  # the left half is now on top
    assert bottom[2] > 200 and bottom[0] < 60


def test_animated_gif_gives_its_first_frame(tmp_path):
    frames = [Image.new("RGB", (32, 32), colour) for colour in ("red", "blue", "green")]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    red, green, blue = load_image(path).getpixel((5, 5))
    assert red > 200 and green < 60 and blue < 60


def test_bytes_are_read_like_files():
    assert load_image(_png_bytes(Image.new("RGB", (40, 30), "white"))).size == (40, 30)


def _claiming_size(width, height):
    """A real small PNG whose header claims another size, its checksum fixed: nothing that
    large is ever allocated."""
    data = bytearray(_png_bytes(Image.new("RGB", (16, 16))))
    ihdr = 8 + 4  # signature, then the IHDR chunk's length field
    data[ihdr + 4:ihdr + 12] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr:ihdr + 4 + 13])) & 0xFFFFFFFF
    data[ihdr + 17:ihdr + 21] = struct.pack(">I", crc)
    return bytes(data)


@pytest.mark.parametrize("side", [8_000, 10_000, 100_000])
def test_decompression_bombs_are_refused_before_decoding(tmp_path, side):
    # 64 MP is over Linea's limit, 100 MP over Pillow's warning, 10 000 MP over its error
    assert side * side > MAX_PIXELS
    path = tmp_path / "bomb.png"
    path.write_bytes(_claiming_size(side, side))
    with pytest.raises(ImageInputError, match=r"bomb\.png.*(megapixels|unsafe)"):
        load_image(path)


def test_tiny_images_are_refused(tmp_path):
    with pytest.raises(ImageInputError, match=r"only 4x4 pixels.*at least 16"):
        load_image(_save(Image.new("RGB", (4, 4)), tmp_path / "tiny.png"))
    with pytest.raises(ImageInputError, match=r"only 300x8 pixels"):
        load_image(_save(Image.new("RGB", (300, 8)), tmp_path / "strip.png"))


def _truncated_png():
    noise = np.random.default_rng(0).integers(0, 256, (200, 200, 3), dtype=np.uint8)
    data = _png_bytes(Image.fromarray(noise))
    return data[: len(data) // 2]


@pytest.mark.parametrize(("data", "message"), [
    (b"", r"empty"),
    (_truncated_png(), r"damaged or incomplete"),
    (b"\x89PNG\r\n\x1a\n" + b"\0" * 40, r"not an image Linea can read|damaged"),
    (np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
     r"not an image Linea can read \(it reads PNG, JPEG, WebP, BMP, GIF or TIFF"),
    (b"Shopping list:\n- eggs\n- paper\n", r"not an image Linea can read"),
])
def test_bad_files_are_refused_naming_the_file(tmp_path, data, message):
    path = tmp_path / "dropped.png"
    path.write_bytes(data)
    with pytest.raises(ImageInputError, match=message) as caught:
        load_image(path)
    assert "dropped.png" in str(caught.value)


def test_other_image_formats_are_not_decoded(tmp_path):
    path = _save(Image.new("RGB", (32, 32)), tmp_path / "icon.ico", format="ICO")
    with pytest.raises(ImageInputError, match=r"save it as PNG or JPEG"):
        load_image(path)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(ImageInputError, match=r"does not exist"):
        load_image(tmp_path / "gone.png")
    with pytest.raises(ImageInputError, match=r"is a folder"):
        load_image(tmp_path)


def test_image_input_error_is_a_value_error():
    assert issubclass(ImageInputError, ValueError)


@pytest.mark.parametrize(("width", "height"), [
    (4000, 3000), (3000, 4000), (1920, 1080), (1080, 1920), (1024, 1024), (500, 500),
    (3000, 1000), (1000, 2000), (333, 777), (640, 480),
])
def test_fitting_keeps_the_aspect_ratio_on_multiples_of_32(width, height):
    fitted_w, fitted_h = fit_to_supported_size(width, height)
    assert fitted_w % 32 == 0 and fitted_h % 32 == 0
    assert abs(math.log(fitted_w / fitted_h * height / width)) < 0.03
    assert 0.8 < fitted_w * fitted_h / 1024**2 < 1.2


def test_fitting_respects_the_largest_side_and_other_multiples():
    assert max(fit_to_supported_size(8000, 1000)) <= 2048
    assert fit_to_supported_size(1000, 1000, multiple=64, target_area=512 * 512) == (512, 512)
    w, h = fit_to_supported_size(1600, 900, multiple=8, max_side=1024, target_area=2048**2)
    assert max(w, h) <= 1024 and w % 8 == 0 and h % 8 == 0
    with pytest.raises(ValueError, match="positive"):
        fit_to_supported_size(0, 100)


@pytest.mark.parametrize(("source", "size"), [
    ((400, 300), (256, 256)), ((4000, 3000), (320, 448)), ((300, 400), (512, 384)),
    ((4000, 3000), (1152, 864)), ((720, 477), (1248, 832)),
])
def test_fit_image_crops_instead_of_squashing(source, size):
    image = Image.new("L", source, 0)
    side = min(source) // 2
    cx, cy = source[0] // 2, source[1] // 2
    ImageDraw.Draw(image).ellipse((cx - side // 2, cy - side // 2, cx + side // 2,
                                   cy + side // 2), fill=255)
    fitted = fit_image(image, size)
    assert fitted.size == size
    ys, xs = np.nonzero(np.asarray(fitted) > 127)
    width, height = xs.max() - xs.min() + 1, ys.max() - ys.min() + 1
    assert abs(width - height) <= 0.03 * max(width, height) + 2  # still a circle
    assert abs((xs.max() + xs.min()) / 2 - size[0] / 2) <= 2  # still centred
