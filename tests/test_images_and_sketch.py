"""Image intake (every kind a person can drop) and sketch / photo line maps."""

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageDraw

from runtime.images import ImageInputError, fit_image, fit_to_supported_size, load_image
from runtime.sketch import auto_control, photo_to_control, sketch_to_control


def _save(image, path, **kwargs):
    image.save(path, **kwargs)
    return path


@pytest.mark.parametrize(("mode", "fmt", "expect"), [
    ("P", "PNG", "RGB"), ("L", "PNG", "RGB"), ("LA", "PNG", "RGBA"), ("RGBA", "PNG", "RGBA"),
    ("I;16", "PNG", "RGB"), ("CMYK", "JPEG", "RGB"), ("RGB", "WEBP", "RGB"),
    ("RGB", "BMP", "RGB"),
])
def test_modes_and_formats_are_read(tmp_path, mode, fmt, expect):
    image = Image.new(mode, (64, 48))
    path = _save(image, tmp_path / f"x.{fmt.lower()}", format=fmt)
    loaded = load_image(path)
    assert loaded.mode == expect and loaded.size == (64, 48)


def test_sixteen_bit_greyscale_keeps_its_contrast(tmp_path):
    array = np.linspace(1000, 50000, 64 * 32).reshape(32, 64).astype(np.uint16)
    path = _save(Image.fromarray(array), tmp_path / "deep.png")
    loaded = np.asarray(load_image(path))
    assert loaded.min() == 0 and loaded.max() == 255


def test_exif_rotation_is_applied(tmp_path):
    image = Image.new("RGB", (80, 40), "white")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = _save(image, tmp_path / "phone.jpg", exif=exif)
    assert load_image(path).size == (40, 80)


def test_gif_first_frame(tmp_path):
    frames = [Image.new("RGB", (32, 32), c) for c in ("red", "blue")]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    assert load_image(path).getpixel((5, 5))[0] > 200


def _bomb_png(width, height):
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\0" * 10)) + chunk(b"IEND", b""))


@pytest.mark.parametrize(("data", "message"), [
    (_bomb_png(100_000, 100_000), r"refused as unsafe|more than Linea opens"),
    (b"", "empty"),
    (b"\x89PNG\r\n\x1a\n" + b"\0" * 40, "not an image|damaged"),
    (b"hello, this is text", "not an image Linea can read"),
])
def test_bad_files_are_refused_clearly(tmp_path, data, message):
    path = tmp_path / "dropped.png"
    path.write_bytes(data)
    with pytest.raises(ImageInputError, match=message):
        load_image(path)


def test_truncated_and_tiny_images(tmp_path):
    buffer = io.BytesIO()
    Image.new("RGB", (200, 200), "red").save(buffer, format="PNG")
    with pytest.raises(ImageInputError, match=r"damaged or truncated|not an image"):
        load_image(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    tiny = _save(Image.new("RGB", (4, 4)), tmp_path / "tiny.png")
    with pytest.raises(ImageInputError, match=r"only 4x4"):
        load_image(tiny)


def test_fitting_keeps_the_aspect_ratio_on_multiples_of_32():
    for w, h in ((4000, 3000), (1080, 1920), (500, 500), (3000, 1000)):
        fw, fh = fit_to_supported_size(w, h)
        assert fw % 32 == 0 and fh % 32 == 0
        assert abs(fw / fh - w / h) / (w / h) < 0.06
    assert fit_image(Image.new("RGB", (400, 300)), (256, 256)).size == (256, 256)


def _sketch():
    image = Image.new("RGB", (256, 256), "white")
    ImageDraw.Draw(image).line((40, 128, 216, 128), fill="black", width=3)
    return image


def test_sketch_becomes_white_lines_on_black_where_the_strokes_were():
    lines = np.asarray(sketch_to_control(_sketch(), thickness=1).convert("L"))
    assert lines[128, 128] == 255 and lines[20, 20] == 0
    assert lines.mean() < 40  # mostly black
    thick = np.asarray(sketch_to_control(_sketch(), thickness=7).convert("L"))
    assert (thick > 127).sum() > (lines > 127).sum()


def test_transparent_layer_sketch_uses_the_alpha():
    layer = Image.new("RGBA", (256, 256), (0, 0, 0, 0))
    ImageDraw.Draw(layer).ellipse((60, 60, 196, 196), outline=(30, 30, 30, 255), width=4)
    control, kind = auto_control(layer)
    lines = np.asarray(control.convert("L"))
    assert kind == "sketch" and lines[128, 62] == 255 and lines[128, 128] == 0


def test_photo_gets_edges_and_line_maps_pass_through():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:300, 0:400]
    photo = np.stack([xx / 2, yy / 2, np.full_like(xx, 90.0)], -1)
    photo[(xx - 150) ** 2 + (yy - 150) ** 2 < 70**2] = (220, 40, 40)
    photo += rng.normal(0, 5, photo.shape)
    image = Image.fromarray(photo.clip(0, 255).astype(np.uint8))
    control, kind = auto_control(image)
    lines = np.asarray(control.convert("L"))
    assert kind == "photo"
    assert lines[150, 80] == 255  # the disc's left edge
    assert lines[150, 150] == 0  # its flat inside
    assert np.asarray(photo_to_control(image).convert("L")).mean() < 80
    same, kind = auto_control(control)
    assert kind == "lines" and np.array_equal(np.asarray(same), np.asarray(control))
