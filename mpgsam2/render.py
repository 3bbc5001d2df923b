"""Drawing segmentation results (overlays, legends, prior views, the presence timeline) with numpy, Pillow
and matplotlib (Agg) only. Mask files are written by :mod:`mpgsam2.export`.

Conventions: frames are ``(H, W, 3)`` uint8 RGB; masks are ``(H, W)`` bool; a video's masks for one expression
are ``(T, H, W)`` bool; ``masks_per_expression`` is a list with one such array per expression, in the order of
``expressions``. Expression ``k`` (0-based) has colour ``color_for(k, K)`` and palette index / id ``k + 1``.

User text (the referring expressions) is only ever drawn as plain text: Pillow draws it verbatim and matplotlib
is told not to parse ``$...$`` as math.
"""

from __future__ import annotations

import colorsys
import logging
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from .export import atomic_target

logger = logging.getLogger(__name__)

__all__ = [
    "PALETTE",
    "color_for",
    "draw_legend",
    "overlay_frame",
    "overlay_video_frames",
    "presence_timeline_png",
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


def _clean_label(text: str, max_chars: int = MAX_LABEL_CHARS) -> str:
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
    rows = [(_clean_label(text), tuple(int(c) for c in color)) for text, color in zip(labels, colors)]
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


# --------------------------------------------------------------------------------------------------------------
# Files


def _plain_legend_label(text: str) -> str:
    label = _clean_label(text)
    # matplotlib hides legend entries whose label starts with "_"; a leading space keeps them visible.
    return " " + label if label.startswith("_") else label


def presence_timeline_png(
    path: str | os.PathLike[str],
    timestamps_s: Sequence[float] | np.ndarray,
    object_scores: Sequence[np.ndarray],
    mask_areas: Sequence[np.ndarray],
    expressions: Sequence[str],
    colors: Sequence[RGB] | None = None,
) -> Path:
    """Plot per-expression presence over time and save it as a PNG.

    Top panel: the object-score logit of each expression (with a line at 0, where SAM 2 decides "absent").
    Bottom panel: the mask area in % of the frame.

    Args:
        path: destination PNG.
        timestamps_s: ``(T,)`` frame times.
        object_scores: per expression a ``(T,)`` array of logits.
        mask_areas: per expression a ``(T,)`` array of mask area fractions in [0, 1].
        expressions: the expression texts (legend labels, shown verbatim).
        colors: per-expression colours; default :func:`color_for`.
    """
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    t = np.asarray(timestamps_s, dtype=np.float64)
    k = len(expressions)
    if len(object_scores) != k or len(mask_areas) != k:
        raise ValueError("object_scores, mask_areas and expressions must have one entry per expression")
    cols = list(colors) if colors is not None else [color_for(i, k) for i in range(k)]
    # parse_math off: an expression like "the $5 bill" must not be parsed as TeX math.
    with matplotlib.rc_context({"text.parse_math": False, "text.usetex": False}):
        fig = Figure(figsize=(9.0, 5.0), dpi=100)
        FigureCanvasAgg(fig)
        ax_score, ax_area = fig.subplots(2, 1, sharex=True)
        for i in range(k):
            scores = np.asarray(object_scores[i], dtype=np.float64)
            areas = np.asarray(mask_areas[i], dtype=np.float64) * 100.0
            if scores.shape != t.shape or areas.shape != t.shape:
                raise ValueError(
                    f"expression {i}: scores {scores.shape} / areas {areas.shape} vs times {t.shape}"
                )
            rgb = tuple(c / 255.0 for c in cols[i])
            label = _plain_legend_label(expressions[i])
            ax_score.plot(t, scores, color=rgb, linewidth=1.6, label=label)
            ax_area.plot(t, areas, color=rgb, linewidth=1.6, label=label)
        ax_score.axhline(0.0, color="0.4", linestyle="--", linewidth=1.0)
        ax_score.set_ylabel("object score (logit)")
        ax_score.set_title("target presence per expression (above 0 = present)")
        ax_area.set_ylabel("mask area (% of frame)")
        ax_area.set_xlabel("time (s)")
        ax_area.set_ylim(bottom=0.0)
        for ax in (ax_score, ax_area):
            ax.grid(True, alpha=0.3)
        if k:
            ax_score.legend(loc="best", fontsize="small")
        fig.tight_layout()
        with atomic_target(path) as tmp:
            fig.savefig(tmp, format="png")
    return Path(path)
