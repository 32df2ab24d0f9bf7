"""Anti-aliased rendering of scenes at any resolution, batched in torch (CPU or GPU).

Every shape except the circle is a polygon in unit coordinates (its bounding box spans [-1, 1] on
its longer side). A pixel's coverage comes from the exact signed distance to the outline, in
pixels: 0.5 - distance, clamped to [0, 1], which gives one-pixel anti-aliased edges at any size.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from models.tiny.scenes import COLOURS, SHAPES, Scene

HEART_POINTS = 64


def _regular(n: int, radius: float, start_deg: float) -> list[tuple[float, float]]:
    return [
        (radius * math.cos(math.radians(start_deg + 360 * i / n)),
         radius * math.sin(math.radians(start_deg + 360 * i / n)))
        for i in range(n)
    ]


def _star() -> list[tuple[float, float]]:
    outer = _regular(5, 1.0, -90)
    inner = _regular(5, 0.42, -90 + 36)
    return [p for pair in zip(outer, inner, strict=True) for p in pair]


def _heart() -> list[tuple[float, float]]:
    # The classic trigonometric heart curve; image y points down, so its y is negated.
    points = []
    for i in range(HEART_POINTS):
        t = 2 * math.pi * i / HEART_POINTS
        x = 16 * math.sin(t) ** 3
        y = 13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)
        points.append((x, -y))
    return points


def _cross() -> list[tuple[float, float]]:
    a, b = 0.34, 1.0
    return [(-a, -b), (a, -b), (a, -a), (b, -a), (b, a), (a, a), (a, b), (-a, b), (-a, a),
            (-b, a), (-b, -a), (-a, -a)]


def _normalised(points: list[tuple[float, float]]) -> np.ndarray:
    """Centre the polygon's bounding box and scale its longer side to span [-1, 1]."""
    arr = np.asarray(points, dtype=np.float64)
    low, high = arr.min(0), arr.max(0)
    return (arr - (low + high) / 2) / ((high - low).max() / 2)


@functools.cache
def polygons() -> dict[str, np.ndarray]:
    """Each polygonal shape's outline, (N, 2) in unit coordinates."""
    return {
        "square": _normalised([(-1, -1), (1, -1), (1, 1), (-1, 1)]),
        "triangle": _normalised([(0, -1), (1, 0.75), (-1, 0.75)]),
        "star": _normalised(_star()),
        "diamond": _normalised([(0, -1), (0.72, 0), (0, 1), (-0.72, 0)]),
        "hexagon": _normalised(_regular(6, 1.0, 0)),
        "cross": _normalised(_cross()),
        "heart": _normalised(_heart()),
    }


def _polygon_distance(u: torch.Tensor, v: torch.Tensor, outline: np.ndarray) -> torch.Tensor:
    """Signed distance (negative inside) from points (u, v) to a closed polygon."""
    best = torch.full_like(u, float("inf"))
    inside = torch.zeros_like(u, dtype=torch.bool)
    for (ax, ay), (bx, by) in zip(outline, np.roll(outline, -1, axis=0), strict=True):
        ex, ey = bx - ax, by - ay
        px, py = u - ax, v - ay
        h = ((px * ex + py * ey) / (ex * ex + ey * ey)).clamp(0.0, 1.0)
        best = torch.minimum(best, (px - h * ex) ** 2 + (py - h * ey) ** 2)
        # Even-odd rule: count crossings of a ray towards +u.
        if ay != by:
            straddles = (v >= ay) != (v >= by)
            crossing_u = ax + (v - ay) * ex / ey
            inside ^= straddles & (u < crossing_u)
    distance = best.sqrt()
    return torch.where(inside, -distance, distance)


def shape_distance(shape: str, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Signed distance in unit coordinates of the named shape."""
    if shape == "circle":
        return torch.sqrt(u * u + v * v) - 1.0
    return _polygon_distance(u, v, polygons()[shape])


def _background(scenes: list[Scene], size: int, device: torch.device) -> torch.Tensor:
    n = len(scenes)
    coords = (torch.arange(size, device=device, dtype=torch.float32) + 0.5) / size
    y, x = torch.meshgrid(coords, coords, indexing="ij")
    start = torch.tensor([s.background.start for s in scenes], device=device)
    end = torch.tensor([s.background.end for s in scenes], device=device)
    direction = torch.tensor([s.background.direction for s in scenes], device=device)
    # Project onto the direction and rescale so the gradient runs corner to corner in [0, 1].
    dx, dy = direction[:, 0].view(n, 1, 1), direction[:, 1].view(n, 1, 1)
    proj = (x - 0.5) * dx + (y - 0.5) * dy
    reach = (dx.abs() + dy.abs()) / 2
    t = (proj / reach + 1) / 2
    return start.view(n, 3, 1, 1) + (end - start).view(n, 3, 1, 1) * t.unsqueeze(1)


def render_batch(
    scenes: list[Scene], size: int, device: str | torch.device = "cpu", chunk: int = 64
) -> torch.Tensor:
    """Render scenes to a float tensor (B, 3, size, size) in [0, 1].

    `chunk` images are drawn at once: memory grows as (chunk, size, size) floats per object slot.
    """
    device = torch.device(device)
    chunks = [
        _render_chunk(scenes[i : i + chunk], size, device) for i in range(0, len(scenes), chunk)
    ]
    return torch.cat(chunks) if chunks else torch.zeros(0, 3, size, size, device=device)


def _render_chunk(scenes: list[Scene], size: int, device: torch.device) -> torch.Tensor:
    image = _background(scenes, size, device)
    for index, scene in enumerate(scenes):
        for obj in scene.objects:
            # Only the object's bounding window (plus the anti-aliasing pixel) can change.
            low_x = max(int((obj.x - obj.radius) * size) - 2, 0)
            low_y = max(int((obj.y - obj.radius) * size) - 2, 0)
            high_x = min(int((obj.x + obj.radius) * size) + 3, size)
            high_y = min(int((obj.y + obj.radius) * size) + 3, size)
            xs = (torch.arange(low_x, high_x, device=device, dtype=torch.float32) + 0.5) / size
            ys = (torch.arange(low_y, high_y, device=device, dtype=torch.float32) + 0.5) / size
            v, u = torch.meshgrid((ys - obj.y) / obj.radius, (xs - obj.x) / obj.radius,
                                  indexing="ij")
            pixels = shape_distance(obj.shape, u, v) * obj.radius * size
            alpha = (0.5 - pixels).clamp(0.0, 1.0)
            colour = torch.tensor(COLOURS[obj.colour], device=device).view(3, 1, 1) / 255.0
            window = image[index, :, low_y:high_y, low_x:high_x]
            window.mul_(1 - alpha).add_(colour * alpha)
    return image


def render(scene: Scene, size: int = 256) -> np.ndarray:
    """One scene as an (size, size, 3) uint8 array."""
    image = render_batch([scene], size)[0]
    return (image.permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def label_maps(scenes: list[Scene], size: int) -> torch.Tensor:
    """What covers each cell of a (size x size) grid over each scene: (N, 2, size, size) int64,
    channel 0 the shape (index in SHAPES + 1) and channel 1 the colour (index in COLOURS + 1),
    0 for background. A cell takes the last-drawn object whose outline holds its centre; an
    object smaller than a cell still marks the cell its centre falls in."""
    colours = list(COLOURS)
    labels = torch.zeros(len(scenes), 2, size, size, dtype=torch.int64)
    coords = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    for index, scene in enumerate(scenes):
        for obj in scene.objects:
            v, u = torch.meshgrid((coords - obj.y) / obj.radius, (coords - obj.x) / obj.radius,
                                  indexing="ij")
            inside = shape_distance(obj.shape, u, v) < 0
            row = min(max(int(obj.y * size), 0), size - 1)
            col = min(max(int(obj.x * size), 0), size - 1)
            inside[row, col] = True
            labels[index, 0][inside] = SHAPES.index(obj.shape) + 1
            labels[index, 1][inside] = colours.index(obj.colour) + 1
    return labels
