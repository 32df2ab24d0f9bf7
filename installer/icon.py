"""Draw Linea's icon: assets/icons/linea.png (the window icon) and linea.ico (the launchers and
the installer; 16 to 256 px).

    python -m installer.icon

A single flowing line over a dusk gradient: a sketch becoming an image. Drawn at 1024 px and
reduced, so every size is anti-aliased.
"""

from __future__ import annotations

import math
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

ROOT = Path(__file__).resolve().parent.parent
ICONS = ROOT / "assets" / "icons"
ICO_SIZES = [(16, 16), (24, 24), (32, 32), (48, 48), (64, 64), (128, 128), (256, 256)]
TOP, BOTTOM = (58, 46, 142), (236, 112, 99)  # indigo to coral


def draw(size: int = 1024) -> Image.Image:
    gradient = Image.new("RGB", (size, size))
    pixels = gradient.load()
    for y in range(size):
        for x in range(size):
            t = min(1.0, max(0.0, (0.75 * y + 0.25 * x) / size))
            pixels[x, y] = tuple(round(a + (b - a) * t) for a, b in zip(TOP, BOTTOM, strict=True))
    mask = Image.new("L", (size, size), 0)
    margin, radius = size // 16, size // 5
    ImageDraw.Draw(mask).rounded_rectangle((margin, margin, size - margin, size - margin),
                                           radius=radius, fill=255)
    icon = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    icon.paste(gradient, (0, 0), mask)

    # The line: a wave that rises into a loop, in warm white with a soft glow under it.
    points = []
    for i in range(400):
        t = i / 399
        x = size * (0.2 + 0.6 * t)
        y = size * (0.68 - 0.3 * t) + size * 0.09 * math.sin(t * 2.2 * math.pi)
        points.append((x, y))
    width = size // 14

    def stroke(canvas: Image.Image, radius: float, fill: tuple[int, int, int, int]) -> None:
        pen = ImageDraw.Draw(canvas)  # a round brush stamped along the path: no joints
        for x, y in points:
            pen.ellipse((x - radius, y - radius, x + radius, y + radius), fill=fill)

    glow = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    stroke(glow, width, (255, 220, 180, 170))
    glow = glow.filter(ImageFilter.GaussianBlur(size / 40))
    icon.alpha_composite(Image.composite(glow, Image.new("RGBA", glow.size), mask))
    stroke(icon, width / 2, (255, 248, 240, 255))
    line = ImageDraw.Draw(icon)
    dot = size * 0.075
    cx, cy = size * 0.74, size * 0.27
    line.ellipse((cx - dot, cy - dot, cx + dot, cy + dot), fill=(255, 214, 102, 255))
    return icon


def main() -> None:
    ICONS.mkdir(parents=True, exist_ok=True)
    icon = draw()
    icon.resize((256, 256), Image.Resampling.LANCZOS).save(ICONS / "linea.png", optimize=True)
    icon.save(ICONS / "linea.ico", sizes=ICO_SIZES)
    print(f"wrote {ICONS / 'linea.png'} and {ICONS / 'linea.ico'}")


if __name__ == "__main__":
    main()
