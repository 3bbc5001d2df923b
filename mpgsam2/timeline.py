"""The presence timeline: each expression's object score and mask area over time, as a PNG (matplotlib, Agg).

User text is drawn as plain text: matplotlib is told not to parse ``$...$`` as math.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .export import atomic_target
from .render import RGB, clean_label, color_for


def _plain_legend_label(text: str) -> str:
    label = clean_label(text)
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
