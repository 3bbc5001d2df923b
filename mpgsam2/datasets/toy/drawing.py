"""Drawing a toy clip: shape outlines and masks, muted backgrounds, and the frames with their masks."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from .scene import ShapeDraft, ToyConfig
from .vocabulary import COLOURS, SHAPES

#: Per unit of radius, the farthest point of each shape from its centre.
SHAPE_EXTENT: dict[str, float] = {"circle": 1.0, "square": 0.88 * math.sqrt(2), "triangle": 1.3, "star": 1.35}
#: Per unit of radius, the largest centred disc inside each shape that can cover another one whole (a
#: triangle or star cannot hide a centred shape of half its size, so they have none).
INSCRIBED_RADIUS: dict[str, float] = {"circle": 1.0, "square": 0.88}
# Kinds of background, drawn uniformly.
BACKGROUNDS = ("plain", "gradient", "stripes", "checks", "noise")


def shape_outline(shape: str, x: float, y: float, radius: float) -> list[tuple[float, float]]:
    """The polygon of a square, triangle or star centred on (x, y), of comparable area for one radius."""
    if shape == "square":
        half = 0.88 * radius
        return [(x - half, y - half), (x + half, y - half), (x + half, y + half), (x - half, y + half)]
    if shape == "triangle":
        outer = 1.3 * radius  # the circumradius: the centroid sits at (x, y)
        return [
            (x + outer * math.cos(math.radians(a)), y - outer * math.sin(math.radians(a)))
            for a in (90, 210, 330)
        ]
    if shape == "star":
        outer, inner = 1.35 * radius, 0.62 * radius
        return [
            (
                x + (outer if i % 2 == 0 else inner) * math.cos(math.radians(90 + 36 * i)),
                y - (outer if i % 2 == 0 else inner) * math.sin(math.radians(90 + 36 * i)),
            )
            for i in range(10)
        ]
    raise ValueError(f"Unknown shape {shape!r}; choose one of {SHAPES}.")


def shape_mask(shape: str, x: float, y: float, radius: float, size: int) -> np.ndarray:
    """(size, size) bool: the pixels of one shape centred on (x, y); the parts off the frame are cut off."""
    canvas = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    if shape == "circle":
        draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=1)
    else:
        draw.polygon(shape_outline(shape, x, y, radius), fill=1)
    return np.asarray(canvas, dtype=bool)


def draw_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """(size, size, 3) float: a plain, gradient, striped, checked or noisy background of muted colours.

    Muted (low-saturation) colours keep the six shape colours the only saturated ones in the picture, so
    that a colour word always means a shape.
    """
    base = rng.uniform(70, 190)

    def muted() -> np.ndarray:
        return np.clip(base + rng.uniform(-25, 25, 3), 0, 255)

    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    kind = rng.choice(list(BACKGROUNDS))
    first, second = muted(), muted()
    if kind == "plain":
        weight = np.zeros((size, size), dtype=np.float32)
    elif kind == "gradient":
        angle = rng.uniform(0, 2 * math.pi)
        ramp = xx * math.cos(angle) + yy * math.sin(angle)
        weight = (ramp - ramp.min()) / max(float(ramp.max() - ramp.min()), 1.0)
    elif kind == "stripes":
        angle, period = rng.uniform(0, math.pi), rng.uniform(6, 20)
        weight = ((xx * math.cos(angle) + yy * math.sin(angle)) // (period / 2) % 2).astype(np.float32)
    elif kind == "checks":
        cell = int(rng.integers(6, 20))
        weight = ((xx // cell + yy // cell) % 2).astype(np.float32)
    else:
        coarse = rng.uniform(0, 1, (size // 8 + 1, size // 8 + 1)).astype(np.float32)
        weight = np.asarray(Image.fromarray(coarse).resize((size, size), Image.BILINEAR))
    image = first[None, None] * (1 - weight[..., None]) + second[None, None] * weight[..., None]
    return image + rng.normal(0, 3, image.shape)


def render_clip(
    rng: np.random.Generator,
    shapes: Sequence[ShapeDraft],
    paths: Sequence[np.ndarray],
    order: Sequence[int],
    config: ToyConfig,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw K moving shapes over a background.

    Args:
        shapes: the K shapes; paths: their (T, 2) centres; order: shape indices from back to front.
    Returns:
        frames (T, H, W, 3) uint8, visible masks (K, T, H, W) bool (each shape minus the shapes in front of
        it) and whole in-frame masks (K, T, H, W) bool.
    """
    size, frames = config.frame_size, config.num_frames
    background = draw_background(rng, size)
    full = np.stack(
        [
            np.stack([shape_mask(item.shape, *path[t], item.radius, size) for t in range(frames)])
            for item, path in zip(shapes, paths)
        ]
    )
    visible = full.copy()
    images = np.repeat(background[None], frames, axis=0)
    for position, index in enumerate(order):
        for front in order[position + 1 :]:
            visible[index] &= ~full[front]
        images[full[index]] = np.asarray(COLOURS[shapes[index].colour], dtype=np.float64)
    # A little sensor noise over everything, so that no colour is one exact value.
    images = images + rng.normal(0, 2, images.shape)
    return np.clip(np.round(images), 0, 255).astype(np.uint8), visible, full
