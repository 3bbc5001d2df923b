"""Drawing segmentation results (overlays, legends, prior views and frame views) with numpy, Pillow and
matplotlib's colour maps. The presence timeline is drawn by :mod:`mpgsam2.timeline`, mask files are written by
:mod:`mpgsam2.export`.

Conventions: frames are ``(H, W, 3)`` uint8 RGB; masks are ``(H, W)`` bool; a video's masks for one expression
are ``(T, H, W)`` bool; ``masks_per_expression`` is a list with one such array per expression, in the order of
``expressions``. Expression ``k`` (0-based) has colour ``color_for(k, K)`` and palette index / id ``k + 1``.

User text (the referring expressions) is only ever drawn as plain text: Pillow draws it verbatim and matplotlib
is told not to parse ``$...$`` as math.
"""

from __future__ import annotations

import colorsys
import logging
import re
from collections.abc import Iterable, Iterator, Sequence

import numpy as np

logger = logging.getLogger(__name__)

__all__ = [
    "PALETTE",
    "color_for",
    "draw_legend",
    "frame_view",
    "overlay_frame",
    "overlay_video_frames",
    "prior_view",
]

RGB = tuple[int, int, int]

#: Distinct overlay colours; the first (used when there is a single expression) is blue.
PALETTE: tuple[RGB, ...] = (
    (30, 144, 255),  # blue
    (255, 140, 0),  # orange
    (50, 205, 50),  # green
    (220, 20, 60),  # crimson
    (186, 85, 211),  # orchid
    (255, 215, 0),  # gold
    (0, 206, 209),  # turquoise
    (255, 105, 180),  # pink
    (139, 69, 19),  # brown
    (128, 128, 0),  # olive
)

#: Longest expression text shown in legends before it is cut with "...".
MAX_LABEL_CHARS = 40


def color_for(index: int, total: int = 1) -> RGB:
    """Colour of expression ``index`` (0-based) among ``total``.

    Up to ``len(PALETTE)`` expressions use :data:`PALETTE`; more use evenly spaced hues starting at blue, so
    that every expression still gets a distinct colour.
    """
    if index < 0:
        raise ValueError(f"index must be >= 0, got {index}")
    if total <= len(PALETTE):
        return PALETTE[index % len(PALETTE)]
    hue = (210.0 / 360.0 + index / total) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 1.0)
    return (round(r * 255), round(g * 255), round(b * 255))


# --------------------------------------------------------------------------------------------------------------
# Overlays


def _erode_square(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary erosion of ``(H, W)`` bool by a ``(2r+1)`` square; pixels beyond the image count as their edge.

    Edge replication means a mask touching the image border gets no outline along the border itself.
    """
    out = mask
    for axis in (0, 1):
        pad = [(0, 0), (0, 0)]
        pad[axis] = (radius, radius)
        padded = np.pad(out, pad, mode="edge").astype(np.int32)
        csum = np.cumsum(padded, axis=axis)
        zero_shape = list(csum.shape)
        zero_shape[axis] = 1
        csum = np.concatenate([np.zeros(zero_shape, dtype=np.int32), csum], axis=axis)
        width = 2 * radius + 1
        hi = np.take(csum, np.arange(width, csum.shape[axis]), axis=axis)
        lo = np.take(csum, np.arange(0, csum.shape[axis] - width), axis=axis)
        out = (hi - lo) == width
    return out


def _inner_edge(mask: np.ndarray, thickness: int) -> np.ndarray:
    """Pixels of ``mask`` within ``thickness`` px of its boundary (``(H, W)`` bool), computed on its bounding box."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return np.zeros_like(mask)
    cols = np.flatnonzero(mask.any(axis=0))
    h, w = mask.shape
    # A margin beyond the bounding box makes the crop behave exactly like the full frame.
    y0, y1 = max(0, rows[0] - thickness - 1), min(h, rows[-1] + thickness + 2)
    x0, x1 = max(0, cols[0] - thickness - 1), min(w, cols[-1] + thickness + 2)
    crop = mask[y0:y1, x0:x1]
    edge = np.zeros_like(mask)
    edge[y0:y1, x0:x1] = crop & ~_erode_square(crop, thickness)
    return edge


def _outline_px(height: int, width: int) -> int:
    # 3 px at 720p, scaled with the frame, never below 1.
    return max(1, int(min(height, width) / 720.0 * 2.5 + 0.5))


def overlay_frame(
    frame: np.ndarray,
    masks: Sequence[np.ndarray],
    colors: Sequence[RGB],
    opacity: float = 0.5,
    outline: bool = True,
) -> np.ndarray:
    """Alpha-blend each mask in its colour, with an opaque outline along the inside of its boundary.

    Args:
        frame: ``(H, W, 3)`` uint8 RGB.
        masks: ``(H, W)`` masks (bool, or anything nonzero = inside), drawn in order (later on top).
        colors: one RGB colour per mask.
        opacity: blend weight of the colour inside the mask, in [0, 1].
        outline: draw the outline (about 3 px at 720p).

    Returns:
        ``(H, W, 3)`` uint8; pixels outside every mask are exactly the input pixels.
    """
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"frame must be (H, W, 3) uint8, got {frame.shape} {frame.dtype}")
    if len(masks) != len(colors):
        raise ValueError(f"got {len(masks)} masks but {len(colors)} colours")
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must be in [0, 1], got {opacity}")
    h, w = frame.shape[:2]
    out = frame.copy()
    thickness = _outline_px(h, w)
    for mask, color in zip(masks, colors):
        m = np.asarray(mask).astype(bool, copy=False)
        if m.shape != (h, w):
            raise ValueError(f"mask shape {m.shape} does not match frame {(h, w)}")
        if not m.any():
            continue
        col = np.asarray(color, dtype=np.float32)
        blended = out[m].astype(np.float32) * (1.0 - opacity) + col * opacity
        out[m] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
        if outline:
            out[_inner_edge(m, thickness)] = np.asarray(color, dtype=np.uint8)
    return out


def clean_label(text: str, max_chars: int = MAX_LABEL_CHARS) -> str:
    """One line of at most ``max_chars`` characters: control characters become spaces, long text is cut."""
    one_line = " ".join(re.sub(r"[\x00-\x1f\x7f]", " ", str(text)).split())
    if len(one_line) > max_chars:
        one_line = one_line[: max_chars - 3].rstrip() + "..."
    return one_line


def _font(size: int):  # noqa: ANN202 - PIL font classes differ by build
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _draw_text_boxes(
    frame: np.ndarray,
    rows: Sequence[tuple[str, RGB | None]],
    corner: str = "top-left",
) -> np.ndarray:
    """Draw a translucent dark box of text rows (each with an optional colour square) in a corner."""
    from PIL import Image, ImageDraw

    h, w = frame.shape[:2]
    size = max(11, round(h / 40))
    font = _font(size)
    pad = max(4, size // 3)
    square = size
    img = Image.fromarray(frame).convert("RGBA")
    layer = Image.new("RGBA", img.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    line_h = max(square, size) + pad
    widths = []
    for text, color in rows:
        bbox = draw.textbbox((0, 0), text, font=font)
        widths.append((bbox[2] - bbox[0]) + (square + pad if color is not None else 0))
    box_w = max(widths) + 2 * pad
    box_h = line_h * len(rows) + pad
    margin = pad
    x0 = margin if "left" in corner else w - box_w - margin
    y0 = margin if "top" in corner else h - box_h - margin
    draw.rectangle((x0, y0, x0 + box_w, y0 + box_h), fill=(0, 0, 0, 150))
    y = y0 + pad
    for text, color in rows:
        x = x0 + pad
        if color is not None:
            draw.rectangle((x, y, x + square - 1, y + square - 1), fill=(*color, 255))
            x += square + pad
        # Plain text drawing: nothing in the expression is interpreted.
        draw.text((x, y), text, font=font, fill=(255, 255, 255, 255))
        y += line_h
    return np.asarray(Image.alpha_composite(img, layer).convert("RGB"), dtype=np.uint8)


def draw_legend(
    frame: np.ndarray,
    labels: Sequence[str],
    colors: Sequence[RGB],
    corner: str = "top-left",
) -> np.ndarray:
    """A small legend in a corner: a coloured square and the expression text (cut to 40 characters) per row.

    Args:
        frame: ``(H, W, 3)`` uint8.
        labels: expression texts, drawn verbatim (control characters become spaces).
        colors: one RGB colour per label.
        corner: "top-left", "top-right", "bottom-left" or "bottom-right".

    Returns:
        ``(H, W, 3)`` uint8 copy with the legend drawn.
    """
    if len(labels) != len(colors):
        raise ValueError(f"got {len(labels)} labels but {len(colors)} colours")
    if not labels:
        return np.asarray(frame).copy()
    rows = [(clean_label(text), tuple(int(c) for c in color)) for text, color in zip(labels, colors)]
    return _draw_text_boxes(np.asarray(frame), rows, corner)  # type: ignore[arg-type]


def overlay_video_frames(
    frames: Iterable[np.ndarray],
    masks_per_expression: Sequence[Sequence[np.ndarray] | np.ndarray],
    expressions: Sequence[str],
    opacity: float = 0.5,
    outline: bool = True,
) -> Iterator[np.ndarray]:
    """Yield overlay frames for a video: each expression in its colour, with a legend when there are 2+.

    Args:
        frames: iterable of ``(H, W, 3)`` uint8 frames (streamed; nothing is buffered).
        masks_per_expression: per expression, ``(T, H, W)`` bool (or a sequence of ``(H, W)`` masks).
        expressions: the expression texts, for the legend.
        opacity: mask blend weight.

    Yields:
        ``(H, W, 3)`` uint8 frames.
    """
    if len(masks_per_expression) != len(expressions):
        raise ValueError(f"got {len(masks_per_expression)} mask sets but {len(expressions)} expressions")
    total = len(expressions)
    colors = [color_for(k, total) for k in range(total)]
    for t, frame in enumerate(frames):
        masks = []
        for k, per_frame in enumerate(masks_per_expression):
            if t >= len(per_frame):
                raise ValueError(f"expression {k} has masks for {len(per_frame)} frames, frame {t} has none")
            masks.append(per_frame[t])
        out = overlay_frame(frame, masks, colors, opacity=opacity, outline=outline)
        if total >= 2:
            out = draw_legend(out, expressions, colors)
        yield out


def _resize_bilinear(prob: np.ndarray, height: int, width: int) -> np.ndarray:
    """``(h, w)`` float -> ``(height, width)`` float32, bilinear with half-pixel centres (Pillow "F" mode)."""
    from PIL import Image

    img = Image.fromarray(np.ascontiguousarray(prob, dtype=np.float32))
    return np.asarray(img.resize((width, height), Image.Resampling.BILINEAR), dtype=np.float32)


def prior_view(
    frame: np.ndarray,
    prior: np.ndarray,
    mask: np.ndarray,
    color: RGB = PALETTE[0],
    heat_opacity: float = 0.6,
    cmap: str = "inferno",
) -> np.ndarray:
    """Side by side: the mask prior as a heat map over the frame (left) and the final mask overlay (right).

    Args:
        frame: ``(H, W, 3)`` uint8.
        prior: ``(h, w)`` float probabilities in [0, 1] at any resolution; upsampled bilinearly to ``(H, W)``.
        mask: ``(H, W)`` bool final mask.
        color: colour of the final mask.
        heat_opacity: blend weight of the heat map.
        cmap: matplotlib colormap name.

    Returns:
        ``(H, 2W, 3)`` uint8 with the halves labelled "prior mask" and "final mask".
    """
    from matplotlib import colormaps

    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"frame must be (H, W, 3) uint8, got {frame.shape} {frame.dtype}")
    prior = np.asarray(prior, dtype=np.float32)
    if prior.ndim != 2:
        raise ValueError(f"prior must be (h, w), got {prior.shape}")
    h, w = frame.shape[:2]
    up = np.clip(_resize_bilinear(np.nan_to_num(prior), h, w), 0.0, 1.0)
    heat = colormaps[cmap](up)[..., :3] * 255.0
    left = np.rint(frame.astype(np.float32) * (1.0 - heat_opacity) + heat * heat_opacity).astype(np.uint8)
    right = overlay_frame(frame, [mask], [color])
    left = _draw_text_boxes(left, [("prior mask", None)])
    right = _draw_text_boxes(right, [("final mask", None)])
    return np.concatenate([left, right], axis=1)


def frame_view(
    frame: np.ndarray,
    priors: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    colors: Sequence[RGB],
    height: int = 360,
) -> np.ndarray:
    """What the model saw on one frame: one row per expression, [frame | prior heat map | final mask].

    Args:
        frame: ``(H, W, 3)`` uint8.
        priors: per expression, ``(h, w)`` prior probabilities; masks: per expression, ``(H, W)`` bool.
        colors: per expression.
        height: of each row, in pixels (the frame is scaled to it).
    Returns:
        ``(K * height, 3 * W', 3)`` uint8 with ``W'`` the scaled frame width.
    """
    from PIL import Image

    scale = height / frame.shape[0]
    size = (max(2, round(frame.shape[1] * scale)), height)
    small = np.asarray(Image.fromarray(frame).resize(size, Image.Resampling.BILINEAR))
    rows = []
    for prior, mask, color in zip(priors, masks, colors):
        small_mask = np.asarray(
            Image.fromarray(np.asarray(mask, dtype=bool)).resize(size, Image.Resampling.NEAREST)
        )
        rows.append(np.concatenate([small, prior_view(small, prior, small_mask, color)], axis=1))
    return np.concatenate(rows, axis=0)
