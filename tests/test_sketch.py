"""Line maps for SANA's ControlNet from drawn sketches, transparent layers and photos."""

import numpy as np
import pytest
from PIL import Image, ImageDraw

from runtime.images import fit_to_supported_size
from runtime.sketch import PHOTO_NOTE, auto_control, photo_to_control, sketch_to_control

SIZE = (512, 384)


def _sketch(ink="black"):
    """A horizontal 3 px stroke on row 200 from x=100 to 400, and a thin vertical one at x=450."""
    image = Image.new("RGB", SIZE, "white")
    draw = ImageDraw.Draw(image)
    draw.line((100, 200, 400, 200), fill=ink, width=3)
    draw.line((450, 60, 450, 330), fill=ink, width=1)
    return image


def _lines(image):
    array = np.asarray(image)
    assert image.mode == "RGB" and (array[..., 0] == array[..., 2]).all()
    assert set(np.unique(array)) <= {0, 255}
    return array[..., 0] == 255


def _photo(width=800, height=600, seed=0):
    """Gradients, a disc, a rectangle and sensor noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    photo = np.stack([xx / width * 180 + 30, yy / height * 140 + 40,
                      np.full(xx.shape, 90.0)], -1)
    photo[(xx - 250) ** 2 + (yy - 300) ** 2 < 120**2] = (225, 50, 40)
    photo[380:520, 500:720] = (30, 150, 200)
    photo += rng.normal(0, 6, photo.shape)
    return Image.fromarray(photo.clip(0, 255).astype(np.uint8))


def test_a_sketch_becomes_white_lines_on_black_where_the_strokes_were():
    lines = _lines(sketch_to_control(_sketch(), size=SIZE))
    assert lines.mean() < 0.15  # mostly black
    assert lines[200, [110, 250, 390]].all()  # along the stroke
    assert not lines[200, 40] and not lines[200, 470 - 10] and not lines[100, 250]
    rows = np.nonzero(lines[:, 250])[0]
    assert abs(rows.mean() - 200) <= 1  # the band is centred on the stroke
    assert lines[[80, 200, 310], 450].all()  # a one-pixel stroke is kept too
    assert not lines[200, 480]


def test_coloured_ink_and_soft_pencil_are_read():
    for ink in ("red", (150, 150, 150)):
        lines = _lines(sketch_to_control(_sketch(ink), size=SIZE))
        assert lines[200, 250] and not lines[100, 250]


def test_line_width_follows_sanas_thickness_rule():
    """SANA blurs thin lines (sigma 3) and keeps everything above 4 of 255: a band about 13 px
    wide; then thickness 0 erodes with 4x4, 1 to 3 keep it, above 3 dilate (thickness // 2)."""
    widths = {}
    for thickness in (0, 1, 2, 3, 8, 16):
        column = _lines(sketch_to_control(_sketch(), thickness=thickness, size=SIZE))[:, 250]
        widths[thickness] = int(column.sum())
    assert 11 <= widths[2] <= 15
    assert widths[1] == widths[2] == widths[3]
    assert widths[0] == widths[2] - 3
    assert widths[8] == widths[2] + 3 and widths[16] == widths[2] + 7


def test_thicker_lines_contain_thinner_ones():
    thin = _lines(sketch_to_control(_sketch(), thickness=2, size=SIZE))
    thick = _lines(sketch_to_control(_sketch(), thickness=12, size=SIZE))
    assert thick.sum() > 1.3 * thin.sum() and thick[thin].all()


def test_thickness_out_of_range_is_refused():
    for thickness in (-1, 25):
        with pytest.raises(ValueError, match="between 0 and 24"):
            sketch_to_control(_sketch(), thickness=thickness)


def test_a_transparent_layer_sketch_uses_its_alpha():
    layer = Image.new("RGBA", SIZE, (0, 0, 0, 0))
    # white strokes: on a layer only the alpha says where the strokes are
    ImageDraw.Draw(layer).ellipse((156, 92, 356, 292), outline=(255, 255, 255, 255), width=4)
    control, kind = auto_control(layer, size=SIZE)
    lines = _lines(control)
    assert kind == "sketch"
    assert lines[192, 158] and lines[192, 354] and lines[94, 256] and lines[290, 256]
    assert not lines[192, 256] and not lines[20, 20]
    assert np.array_equal(lines, _lines(sketch_to_control(layer, size=SIZE)))


def test_a_cut_out_photo_is_read_on_white_not_by_its_alpha():
    cut_out = _photo().convert("RGBA")
    cut_out.putalpha(Image.new("L", cut_out.size, 255))
    ImageDraw.Draw(cut_out).rectangle((0, 0, 120, 120), fill=(0, 0, 0, 0))
    control, kind = auto_control(cut_out, size=(800, 600))
    lines = _lines(control)
    assert kind == "photo"
    assert lines[300, 132] and not lines[300, 250]  # the disc's edge, not its inside


def test_a_photo_gets_its_outlines():
    control = photo_to_control(_photo(), size=(800, 600))
    lines = _lines(control)
    assert 0.01 < lines.mean() < 0.3
    assert lines[300, [130, 370]].all() and lines[[180, 420], 250].all()  # the disc's outline
    assert lines[450, [500, 719]].all() and lines[[380, 519], 610].all()  # the rectangle's
    assert not lines[300, 250] and not lines[450, 610]  # flat insides
    assert not lines[100, 500:700].any() and not lines[560, 100:400].any()  # smooth shading


def test_edges_between_colours_of_equal_brightness_are_found():
    image = Image.new("RGB", (512, 512), (200, 60, 60))  # red and green of about the same grey
    image.paste((60, 128, 60), (128, 128, 384, 384))
    lines = _lines(photo_to_control(image, size=(512, 512)))
    assert lines[256, 128] and lines[128, 256] and not lines[256, 256]


def test_auto_control_tells_sketches_photos_and_line_maps_apart():
    control, kind = auto_control(_sketch(), size=SIZE)
    assert kind == "sketch" and _lines(control)[200, 250]
    assert auto_control(_photo())[1] == "photo"
    night = np.asarray(_photo()).astype(np.float32) * 0.2
    assert auto_control(Image.fromarray(night.astype(np.uint8)))[1] == "photo"
    same, kind = auto_control(control, size=SIZE)
    assert kind == "lines" and np.array_equal(np.asarray(same), np.asarray(control))


def test_a_line_map_is_used_as_it_is():
    """As SANA uses a given control map: not re-thinned, and at its own size unless asked."""
    line_map = Image.new("L", (200, 120), 0)
    ImageDraw.Draw(line_map).ellipse((40, 20, 160, 100), outline=255, width=3)
    same, kind = auto_control(line_map)
    assert kind == "lines" and same.mode == "RGB" and same.size == (200, 120)
    assert np.array_equal(np.asarray(same)[..., 0], np.asarray(line_map))
    assert auto_control(line_map, size=(128, 128))[0].size == (128, 128)


def test_output_size_is_the_one_asked_for_or_the_supported_one():
    assert sketch_to_control(_sketch(), size=(256, 256)).size == (256, 256)
    assert photo_to_control(_photo(), size=(320, 448)).size == (320, 448)
    control, _ = auto_control(_photo(1200, 900))
    assert control.size == fit_to_supported_size(1200, 900)
    cropped = _lines(sketch_to_control(_sketch(), size=(384, 384)))
    assert cropped[200, 250 - 64]  # the stroke stays on its row: cropped, not squashed


def test_the_photo_note_says_it_is_not_hed():
    assert "classical" in PHOTO_NOTE and "not the HED" in PHOTO_NOTE
