"""DAVIS-style video segmentation metrics in numpy: J (region IoU), F (boundary F-measure) and J&F.

The definitions follow the DAVIS 2017 benchmark:

* J: intersection over union of the binary masks; two empty masks give J = 1.
* F: boundaries of both masks are extracted with :func:`seg2bmap`; a boundary pixel counts as matched when a
  boundary pixel of the other mask lies within a disk of radius ``ceil(bound_th * sqrt(h^2 + w^2))``
  (``bound_th = 0.008`` of the image diagonal); precision and recall are the matched fractions and F their
  harmonic mean. When neither mask has a boundary pixel F = 1; when exactly one has none F = 0. Note that a
  mask covering the *whole* image has no boundary pixel under ``seg2bmap`` (there is no background to border),
  so an empty prediction against a full-frame ground truth scores F = 1 exactly as in DAVIS.
* Void pixels (value 255 in DAVIS ground-truth PNGs) are excluded from both.

Argument order follows the DAVIS code: ``db_eval_iou(annotation, segmentation)`` and
``db_eval_boundary(annotation, segmentation)`` take the ground truth first.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence

import numpy as np

logger = logging.getLogger(__name__)

__all__ = [
    "BOUND_TH",
    "VOID_LABEL",
    "db_eval_boundary",
    "db_eval_iou",
    "evaluate_sequences",
    "f_measure",
    "seg2bmap",
]

#: Boundary tolerance as a fraction of the image diagonal (DAVIS default).
BOUND_TH = 0.008
#: Ground-truth palette index that marks pixels excluded from evaluation.
VOID_LABEL = 255


def seg2bmap(seg: np.ndarray, width: int | None = None, height: int | None = None) -> np.ndarray:
    """Boundary map of a binary mask, as in the DAVIS benchmark.

    A pixel is a boundary pixel when it differs from its right, lower or lower-right neighbour (pixels beyond
    the right/bottom edge count as background, except that the last row only compares to the right, the last
    column only downwards and the bottom-right pixel is never a boundary). The boundary therefore runs along
    the right/bottom inside and the left/top outside of a region: a solid ``n x n`` square yields ``4n``
    boundary pixels forming the outline of an ``(n+1) x (n+1)`` square shifted up-left by one pixel.

    Args:
        seg: ``(H, W)`` mask (nonzero = foreground).
        width, height: requested output size; only the mask's own size is supported (DAVIS rescales here, which
            this evaluation never needs).

    Returns:
        ``(H, W)`` bool boundary map.
    """
    seg = np.asarray(seg).astype(bool)
    if seg.ndim != 2:
        raise ValueError(f"seg2bmap needs a 2-D mask, got shape {seg.shape}")
    h, w = seg.shape
    width = w if width is None else width
    height = h if height is None else height
    if (width, height) != (w, h):
        raise ValueError(
            f"seg2bmap only supports the mask's own size {w}x{h}, not {width}x{height}; resize the masks first"
        )
    right = np.zeros_like(seg)
    below = np.zeros_like(seg)
    below_right = np.zeros_like(seg)
    right[:, :-1] = seg[:, 1:]
    below[:-1, :] = seg[1:, :]
    below_right[:-1, :-1] = seg[1:, 1:]
    bmap = (seg ^ right) | (seg ^ below) | (seg ^ below_right)
    bmap[-1, :] = seg[-1, :] ^ right[-1, :]
    bmap[:, -1] = seg[:, -1] ^ below[:, -1]
    bmap[-1, -1] = False
    return bmap


def _horizontal_dilate(mask: np.ndarray, half_width: int) -> np.ndarray:
    """``(H, W)`` bool: True where any pixel within ``half_width`` columns in the same row is True."""
    if half_width == 0:
        return mask.copy()
    h, w = mask.shape
    csum = np.zeros((h, w + 1), dtype=np.int32)
    np.cumsum(mask, axis=1, dtype=np.int32, out=csum[:, 1:])
    cols = np.arange(w)
    hi = np.minimum(cols + half_width + 1, w)
    lo = np.maximum(cols - half_width, 0)
    return (csum[:, hi] - csum[:, lo]) > 0


def _dilate_disk(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation of ``(H, W)`` bool by the disk ``{(dy, dx): dy^2 + dx^2 <= radius^2}``.

    Pixels beyond the image are background (as in the DAVIS code's OpenCV dilation). The disk is split into
    rows: each row ``dy`` is a horizontal run of half-width ``floor(sqrt(r^2 - dy^2))``, so the dilation is a
    few running-sum passes instead of one shift per disk pixel.
    """
    mask = np.asarray(mask, dtype=bool)
    if radius <= 0:
        return mask.copy()
    h, _ = mask.shape
    out = np.zeros_like(mask)
    runs: dict[int, np.ndarray] = {}
    for dy in range(-radius, radius + 1):
        half = math.isqrt(radius * radius - dy * dy)
        if half not in runs:
            runs[half] = _horizontal_dilate(mask, half)
        run = runs[half]
        # out[y] |= run[y + dy], for rows where y + dy is inside the image.
        if dy >= 0:
            if dy < h:
                out[: h - dy] |= run[dy:]
        elif -dy < h:
            out[-dy:] |= run[: h + dy]
    return out


def _bound_radius(shape: tuple[int, int], bound_th: float) -> int:
    # DAVIS: a threshold >= 1 is a pixel radius, below 1 a fraction of the diagonal, rounded up.
    if bound_th >= 1:
        return int(bound_th)
    return int(math.ceil(bound_th * math.hypot(shape[0], shape[1])))


def f_measure(
    foreground_mask: np.ndarray,
    gt_mask: np.ndarray,
    void_pixels: np.ndarray | None = None,
    bound_th: float = BOUND_TH,
) -> float:
    """Boundary F-measure of one predicted ``(H, W)`` mask against one ground-truth ``(H, W)`` mask."""
    fg = np.asarray(foreground_mask).astype(bool)
    gt = np.asarray(gt_mask).astype(bool)
    if fg.ndim != 2 or fg.shape != gt.shape:
        raise ValueError(f"masks must be 2-D and of one shape, got {fg.shape} and {gt.shape}")
    if void_pixels is not None:
        keep = ~np.asarray(void_pixels).astype(bool)
        fg = fg & keep
        gt = gt & keep
    radius = _bound_radius(fg.shape, bound_th)
    fg_boundary = seg2bmap(fg)
    gt_boundary = seg2bmap(gt)
    n_fg = int(fg_boundary.sum())
    n_gt = int(gt_boundary.sum())
    if n_fg == 0 and n_gt == 0:
        return 1.0
    if n_fg == 0 or n_gt == 0:
        # Precision 1 and recall 0 (or the reverse): the harmonic mean is 0.
        return 0.0
    fg_matched = int((fg_boundary & _dilate_disk(gt_boundary, radius)).sum())
    gt_matched = int((gt_boundary & _dilate_disk(fg_boundary, radius)).sum())
    precision = fg_matched / n_fg
    recall = gt_matched / n_gt
    if precision + recall == 0:
        return 0.0
    return 2.0 * precision * recall / (precision + recall)


def db_eval_iou(
    annotation: np.ndarray, segmentation: np.ndarray, void_pixels: np.ndarray | None = None
) -> float | np.ndarray:
    """Region similarity J (IoU) of ``segmentation`` against ``annotation``.

    Args:
        annotation: ground truth, ``(H, W)`` or ``(T, H, W)``, nonzero = foreground.
        segmentation: prediction of the same shape.
        void_pixels: optional mask of the same shape (or broadcastable) of pixels to ignore.

    Returns:
        A float for 2-D input, ``(T,)`` float64 for 3-D input. Where both masks are empty J = 1.
    """
    gt = np.asarray(annotation).astype(bool)
    pred = np.asarray(segmentation).astype(bool)
    if gt.shape != pred.shape:
        raise ValueError(f"annotation {gt.shape} and segmentation {pred.shape} differ in shape")
    keep = (
        np.ones_like(gt)
        if void_pixels is None
        else ~np.broadcast_to(np.asarray(void_pixels).astype(bool), gt.shape)
    )
    inter = np.sum(gt & pred & keep, axis=(-2, -1)).astype(np.float64)
    union = np.sum((gt | pred) & keep, axis=(-2, -1)).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        j = np.where(union == 0, 1.0, inter / np.where(union == 0, 1.0, union))
    return float(j) if j.ndim == 0 else j


def db_eval_boundary(
    annotation: np.ndarray,
    segmentation: np.ndarray,
    void_pixels: np.ndarray | None = None,
    bound_th: float = BOUND_TH,
) -> float | np.ndarray:
    """Boundary F-measure of ``segmentation`` against ``annotation``, per frame.

    Args:
        annotation: ground truth, ``(H, W)`` or ``(T, H, W)``.
        segmentation: prediction of the same shape.
        void_pixels: optional ignored pixels, same shape.
        bound_th: tolerance, a fraction of the diagonal (< 1) or pixels (>= 1).

    Returns:
        A float for 2-D input, ``(T,)`` float64 for 3-D input.
    """
    gt = np.asarray(annotation)
    pred = np.asarray(segmentation)
    if gt.shape != pred.shape:
        raise ValueError(f"annotation {gt.shape} and segmentation {pred.shape} differ in shape")
    if gt.ndim == 2:
        return f_measure(pred, gt, void_pixels, bound_th)
    if gt.ndim != 3:
        raise ValueError(f"expected (H, W) or (T, H, W) masks, got {gt.shape}")
    void = None if void_pixels is None else np.broadcast_to(np.asarray(void_pixels), gt.shape)
    return np.array(
        [f_measure(pred[t], gt[t], None if void is None else void[t], bound_th) for t in range(gt.shape[0])],
        dtype=np.float64,
    )


# --------------------------------------------------------------------------------------------------------------
# Sequences and folders

MaskSet = np.ndarray | Sequence[np.ndarray] | Mapping[int, np.ndarray]


def _as_objects(
    masks: MaskSet, void_label: int | None
) -> tuple[dict[int, np.ndarray], np.ndarray | None, tuple]:
    """Normalise to ``{object_id: (T, H, W) bool}``, the void mask (label maps only) and the ``(T, H, W)`` shape."""
    if isinstance(masks, Mapping):
        objects = {int(k): np.asarray(v).astype(bool) for k, v in masks.items()}
        shape = next(iter(objects.values())).shape if objects else ()
        return objects, None, shape
    if isinstance(masks, np.ndarray) and masks.dtype != bool and masks.ndim == 3:
        labels = masks
        void = (labels == void_label) if void_label is not None else None
        ids = [int(i) for i in np.unique(labels) if i != 0 and (void_label is None or i != void_label)]
        return {i: labels == i for i in ids}, void, labels.shape
    if isinstance(masks, np.ndarray) and masks.ndim == 3:
        # A single boolean (T, H, W) array is one object.
        return {1: masks.astype(bool)}, None, masks.shape
    objects = {k + 1: np.asarray(m).astype(bool) for k, m in enumerate(masks)}
    shape = next(iter(objects.values())).shape if objects else ()
    return objects, None, shape


def _recall(values: np.ndarray) -> float:
    # DAVIS "recall": the fraction of frames scoring above 0.5.
    return float(np.mean(values > 0.5)) if values.size else float("nan")


def evaluate_sequences(
    pred: MaskSet,
    gt: MaskSet,
    *,
    object_ids: Sequence[int] | None = None,
    void: np.ndarray | None = None,
    void_label: int | None = VOID_LABEL,
    skip_first_last: bool = False,
    bound_th: float = BOUND_TH,
) -> dict:
    """J, F and J&F per object and their means for one video.

    Args:
        pred: predicted masks in one of three forms: a ``(T, H, W)`` integer label map (object ids = values),
            a list of per-object ``(T, H, W)`` bool arrays (ids 1..K), or a ``{id: (T, H, W) bool}`` mapping.
        gt: ground truth in one of the same forms (a label map's ``void_label`` pixels are void).
        object_ids: objects to score; default every id present in ``gt`` or ``pred`` (an id missing from one
            side is an empty mask there, so hallucinated objects are penalised).
        void: extra ``(T, H, W)`` bool pixels to ignore.
        void_label: label-map value marking void pixels in ``gt``; ``None`` disables it.
        skip_first_last: drop the first and last frame, as the DAVIS semi-supervised protocol does (the first
            frame's mask is given there).
        bound_th: boundary tolerance for F.

    Returns:
        ``{"objects": {id: {"J", "F", "J&F", "J_recall", "F_recall", "J_per_frame", "F_per_frame"}},
        "J", "F", "J&F", "num_objects", "num_frames"}``; the means are over objects (each object's score being
        its mean over frames); NaN when there is no object.
    """
    pred_objs, _, pred_shape = _as_objects(pred, None)
    gt_objs, gt_void, gt_shape = _as_objects(gt, void_label)
    shape = gt_shape or pred_shape
    if pred_shape and gt_shape and pred_shape != gt_shape:
        raise ValueError(f"prediction {pred_shape} and ground truth {gt_shape} differ in shape")
    if len(shape) != 3:
        raise ValueError(f"expected (T, H, W) masks, got {shape}")
    ignore = np.zeros(shape, dtype=bool)
    if gt_void is not None:
        ignore |= gt_void
    if void is not None:
        ignore |= np.asarray(void).astype(bool)
    ids = sorted(set(gt_objs) | set(pred_objs)) if object_ids is None else [int(i) for i in object_ids]
    frames = slice(1, -1) if skip_first_last and shape[0] > 2 else slice(None)
    empty = np.zeros(shape, dtype=bool)
    objects: dict[int, dict] = {}
    for oid in ids:
        g = gt_objs.get(oid, empty)[frames]
        p = pred_objs.get(oid, empty)[frames]
        v = ignore[frames]
        j = np.atleast_1d(db_eval_iou(g, p, v))
        f = np.atleast_1d(db_eval_boundary(g, p, v, bound_th))
        objects[oid] = {
            "J": float(j.mean()),
            "F": float(f.mean()),
            "J&F": float((j.mean() + f.mean()) / 2.0),
            "J_recall": _recall(j),
            "F_recall": _recall(f),
            "J_per_frame": j.tolist(),
            "F_per_frame": f.tolist(),
        }
    mean_j = float(np.mean([o["J"] for o in objects.values()])) if objects else float("nan")
    mean_f = float(np.mean([o["F"] for o in objects.values()])) if objects else float("nan")
    return {
        "objects": objects,
        "J": mean_j,
        "F": mean_f,
        "J&F": (mean_j + mean_f) / 2.0,
        "num_objects": len(objects),
        "num_frames": int(np.zeros(shape[0], dtype=bool)[frames].size),
    }
