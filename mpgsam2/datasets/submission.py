"""Predicted masks in the layout each benchmark's server (or evaluation script) expects, and the scoring of a
folder of them against ground truth in the DAVIS layout."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
from PIL import Image

from ..export import DAVIS_PALETTE
from ..metrics import BOUND_TH, VOID_LABEL, evaluate_sequences
from ..video_io.sequences import natural_key
from .layouts import VideoExpressions

logger = logging.getLogger(__name__)


def write_expression_masks(
    out_dir: Path, fmt: str, item: VideoExpressions, exp_id: str, masks: np.ndarray, probabilities: np.ndarray
) -> None:
    """Ref-YouTube-VOS: 0/255 PNGs in ``Annotations/<video>/<exp_id>/``; MeViS: ``<video>/<exp_id>/`` grey
    PNGs (probabilities below 0.5 set to 0, the rest x 255, as the official script).

    Args:
        masks: (T, H, W) bool; probabilities: (T, H, W) float in [0, 1].
    """
    if fmt == "ytvos":
        folder = out_dir / "Annotations" / item.video / exp_id
        images = masks.astype(np.uint8) * 255
    elif fmt == "mevis":
        folder = out_dir / item.video / exp_id
        images = np.where(probabilities < 0.5, 0, probabilities * 255).astype(np.uint8)
    else:
        raise ValueError(f"Per-expression PNGs are for ytvos and mevis, not {fmt!r}.")
    folder.mkdir(parents=True, exist_ok=True)
    for name, image in zip(item.frame_names, images):
        Image.fromarray(image).save(folder / f"{name}.png")


def write_davis_annotators(
    out_dir: Path, item: VideoExpressions, probabilities_by_exp: dict[str, np.ndarray]
) -> None:
    """Ref-DAVIS17: per annotator, palette PNGs ``anno_<a>/<video>/<frame>.png``, as the official script.

    Expression ``i`` (in the meta file's order) is annotator ``i % 4``'s object ``i // 4 + 1``. A pixel takes
    the object of highest probability among those at or above 0.5, else the background.

    Args:
        probabilities_by_exp: exp_id -> (T, H, W) mask probabilities.
    """
    annotators: dict[int, list[np.ndarray]] = {}
    for i, exp_id in enumerate(item.expressions):
        annotators.setdefault(i % 4, []).append(probabilities_by_exp[exp_id])
    for annotator, objects in annotators.items():
        stacked = np.stack(objects)  # (objects, T, H, W), object k has label k + 1
        stacked = np.where(stacked < 0.5, 0.0, stacked)
        background = np.full((1, *stacked.shape[1:]), 0.1, dtype=stacked.dtype)
        labels = np.argmax(np.concatenate([background, stacked]), axis=0).astype(np.uint8)
        folder = out_dir / f"anno_{annotator}" / item.video
        folder.mkdir(parents=True, exist_ok=True)
        for t, name in enumerate(item.frame_names):
            image = Image.fromarray(labels[t])  # "L"; putpalette makes it "P"
            image.putpalette(DAVIS_PALETTE.ravel().tolist())
            image.save(folder / f"{name}.png")


def _read_label_png(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        if img.mode in ("P", "L"):
            return np.asarray(img, dtype=np.uint8)
        if img.mode == "1":
            return np.asarray(img, dtype=np.uint8)
        raise ValueError(f"{path} is a {img.mode} PNG; expected an indexed (palette) PNG of object ids")


def evaluate_folders(
    pred_dir: str | os.PathLike[str],
    gt_dir: str | os.PathLike[str],
    *,
    skip_first_last: bool = False,
    void_label: int | None = VOID_LABEL,
    bound_th: float = BOUND_TH,
) -> dict:
    """Evaluate DAVIS-style folders ``<dir>/<video>/<frame>.png`` of palette PNGs (pixel value = object id).

    Every video folder of ``gt_dir`` is evaluated on its ground-truth frames; ``pred_dir`` must have a PNG of
    the same name for each of them (extra predicted frames are ignored).

    Returns:
        ``{"videos": {video: evaluate_sequences(...) result}, "J", "F", "J&F", "num_videos", "num_objects"}``;
        the overall means are over all objects of all videos, as DAVIS reports them.

    Raises:
        FileNotFoundError: a video or frame has no prediction.
        ValueError: sizes differ, or a PNG is not indexed/grayscale.
    """
    pred_root, gt_root = Path(pred_dir), Path(gt_dir)
    if not gt_root.is_dir():
        raise FileNotFoundError(f"ground-truth folder {gt_root} does not exist")
    videos = sorted((d.name for d in gt_root.iterdir() if d.is_dir()), key=natural_key)
    results: dict[str, dict] = {}
    all_j: list[float] = []
    all_f: list[float] = []
    for video in videos:
        gt_frames = sorted((f.name for f in (gt_root / video).glob("*.png")), key=natural_key)
        if not gt_frames:
            logger.warning("skipping %s: no ground-truth PNG", gt_root / video)
            continue
        pred_video = pred_root / video
        if not pred_video.is_dir():
            raise FileNotFoundError(f"no prediction folder for video '{video}' (expected {pred_video})")
        gt_stack = np.stack([_read_label_png(gt_root / video / name) for name in gt_frames])
        pred_list = []
        for name in gt_frames:
            pred_png = pred_video / name
            if not pred_png.is_file():
                raise FileNotFoundError(f"no prediction for frame {name} of '{video}' (expected {pred_png})")
            pred_list.append(_read_label_png(pred_png))
        pred_stack = np.stack(pred_list)
        if pred_stack.shape != gt_stack.shape:
            raise ValueError(
                f"video '{video}': prediction {pred_stack.shape} vs ground truth {gt_stack.shape}"
            )
        res = evaluate_sequences(
            pred_stack, gt_stack, void_label=void_label, skip_first_last=skip_first_last, bound_th=bound_th
        )
        results[video] = res
        all_j.extend(o["J"] for o in res["objects"].values())
        all_f.extend(o["F"] for o in res["objects"].values())
    mean_j = float(np.mean(all_j)) if all_j else float("nan")
    mean_f = float(np.mean(all_f)) if all_f else float("nan")
    return {
        "videos": results,
        "J": mean_j,
        "F": mean_f,
        "J&F": (mean_j + mean_f) / 2.0,
        "num_videos": len(results),
        "num_objects": len(all_j),
    }
