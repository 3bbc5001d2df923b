"""Referring video benchmark folders: Ref-YouTube-VOS, MeViS and Ref-DAVIS17 (inference layout).

All three describe a split with ``meta_expressions.json``::

    {"videos": {"<video>": {"frames": ["00000", ...],
                            "expressions": {"<exp_id>": {"exp": "a dog", "obj_id": "1", "anno_id": "0"}}}}}

next to ``JPEGImages/<video>/<frame>.jpg``. Results are written in the layout each benchmark server expects.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

FORMATS = ("ytvos", "mevis", "davis")


@dataclass(frozen=True)
class VideoExpressions:
    video: str
    frame_names: list[str]
    frame_dir: Path
    expressions: dict[str, dict]  # exp_id -> {"exp": text, "obj_id": ..., "anno_id": ...}

    def load_frames(self) -> np.ndarray:
        """(T, H, W, 3) uint8 RGB."""
        return np.stack(
            [
                np.asarray(Image.open(self.frame_dir / f"{name}.jpg").convert("RGB"))
                for name in self.frame_names
            ]
        )


def find_meta(root: Path, split: str) -> Path:
    """The split's meta_expressions.json in any of the benchmarks' usual places."""
    candidates = [
        root / split / "meta_expressions.json",
        root / "meta_expressions" / split / "meta_expressions.json",
        root / "meta_expressions.json",
    ]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"No meta_expressions.json for split {split!r} under {root}.")


def iter_videos(root: str | Path, split: str = "valid") -> Iterator[VideoExpressions]:
    """Every video of a split with its expressions, in sorted order."""
    root = Path(root)
    meta = json.loads(find_meta(root, split).read_text())["videos"]
    image_root = next(
        (
            p
            for p in (root / split / "JPEGImages", root / "JPEGImages" / split, root / "JPEGImages")
            if p.is_dir()
        ),
        None,
    )
    if image_root is None:
        raise FileNotFoundError(f"No JPEGImages folder for split {split!r} under {root}.")
    for video in sorted(meta):
        entry = meta[video]
        frames = entry.get("frames") or sorted(p.stem for p in (image_root / video).glob("*.jpg"))
        yield VideoExpressions(video, list(frames), image_root / video, entry["expressions"])


def write_expression_masks(
    out_dir: Path, fmt: str, item: VideoExpressions, exp_id: str, masks: np.ndarray, probabilities: np.ndarray
) -> None:
    """Ref-YouTube-VOS: 0/255 PNGs in ``Annotations/<video>/<exp_id>/``; MeViS: ``<video>/<exp_id>/`` grey
    PNGs (probabilities below 0.5 set to 0, the rest x 255, as the official script)."""
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
    from .export import DAVIS_PALETTE

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
