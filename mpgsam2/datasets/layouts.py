"""Referring video benchmark folders: Ref-YouTube-VOS, MeViS and Ref-DAVIS17, read one way for inference,
evaluation and training.

Each split is described by ``meta_expressions.json``::

    {"videos": {"<video>": {"frames": ["00000", ...],
                            "expressions": {"<exp_id>": {"exp": "a dog", "obj_id": "1", "anno_id": "0"}}}}}

with frames in ``JPEGImages/<video>/<frame>.jpg``. The ground truth, where a split has one, comes in one of
two forms:

* Ref-YouTube-VOS and Ref-DAVIS17 (the ReferFormer conversion): palette PNGs
  ``Annotations/<video>/<frame>.png`` whose pixel value is the object id (``obj_id`` of the expression);
* MeViS: ``mask_dict.json`` mapping an annotation id to one COCO RLE (or null) per frame; an expression
  lists its ``anno_id`` (several objects possible), and its mask is their union.

The usual places are searched: ``<root>/<split>/...``, ``<root>/meta_expressions/<split>/...`` and
``<root>/...``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

#: The benchmark layouts (and the names of their readers and submission formats).
VIDEO_FORMATS = ("ytvos", "mevis", "davis")
#: MeViS is segmented in independent clips of this many frames, as the official MeViS inference does; the
#: other benchmarks whole videos at once.
MEVIS_CLIP_LENGTH = 24


def default_clip_length(fmt: str) -> int | None:
    """Frames per independent clip for a benchmark's videos (None: the whole video at once)."""
    return MEVIS_CLIP_LENGTH if fmt == "mevis" else None


def _first_dir(candidates: list[Path]) -> Path | None:
    return next((p for p in candidates if p.is_dir()), None)


def _first_file(candidates: list[Path]) -> Path | None:
    return next((p for p in candidates if p.is_file()), None)


def find_meta(root: Path, split: str) -> Path:
    """The split's meta_expressions.json in any of the benchmarks' usual places."""
    meta = _first_file(
        [
            root / split / "meta_expressions.json",
            root / "meta_expressions" / split / "meta_expressions.json",
            root / "meta_expressions.json",
        ]
    )
    if meta is None:
        raise FileNotFoundError(f"No meta_expressions.json for split {split!r} under {root}.")
    return meta


def decode_rle(rle: dict) -> np.ndarray:
    """(H, W) bool from a COCO RLE whose counts are a string, bytes or a list (uncompressed)."""
    from pycocotools import mask as mask_utils

    if isinstance(rle["counts"], list):
        rle = mask_utils.frPyObjects(rle, *rle["size"])
    return mask_utils.decode(rle).astype(bool)


def read_object_ids(path: Path) -> np.ndarray:
    """(H, W): the object ids of a palette PNG."""
    with Image.open(path) as image:
        return np.asarray(image.convert("P") if image.mode not in ("P", "L") else image)


def expression_mask(object_ids: np.ndarray | None, expression: dict, size: tuple[int, int]) -> np.ndarray:
    """(H, W) bool: an expression's target(s) (its ``obj_id``, one or a list) in a frame's object ids;
    empty where the frame has no annotation (None: the object is absent)."""
    if object_ids is None:
        return np.zeros(size, dtype=bool)
    obj_ids = expression["obj_id"] if isinstance(expression["obj_id"], list) else [expression["obj_id"]]
    return np.isin(object_ids, [int(i) for i in obj_ids])


def _load_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


@dataclass(frozen=True)
class VideoExpressions:
    """One video of a split with its expressions."""

    split: BenchmarkSplit
    video: str
    frame_names: list[str]
    expressions: dict[str, dict]  # exp_id -> the meta entry ({"exp": text, "obj_id": ..., ...})

    @property
    def frame_dir(self) -> Path:
        return self.split.image_root / self.video

    def load_frames(self) -> np.ndarray:
        """(T, H, W, 3) uint8 RGB, every frame."""
        return np.stack([_load_rgb(self.frame_dir / f"{name}.jpg") for name in self.frame_names])

    def ground_truth(self, exp_id: str) -> np.ndarray:
        """(T, H, W) bool: the expression's target(s) on every frame."""
        with Image.open(self.frame_dir / f"{self.frame_names[0]}.jpg") as first:
            size = first.size[::-1]
        entry = self.expressions[exp_id]
        return np.stack(
            [self.split.object_mask(self.video, entry, t, size) for t in range(len(self.frame_names))]
        )


class BenchmarkSplit:
    """A split of a referring video benchmark folder.

    Args:
        root: the dataset folder (``ref-youtube-vos``, ``mevis-release``, ``ref-davis``).
        split: ``train``, ``valid``, ``valid_u``...
        max_videos: keep only the first videos (sorted), for smoke tests.
        require_ground_truth: refuse a split without masks (training and evaluation need them).
    """

    def __init__(
        self, root: str | Path, split: str, max_videos: int | None = None, require_ground_truth: bool = False
    ):
        self.root = Path(root)
        self.split = split
        meta = json.loads(find_meta(self.root, split).read_text())["videos"]
        videos = sorted(meta)[:max_videos] if max_videos else sorted(meta)
        self.meta = {v: meta[v] for v in videos}
        image_root = _first_dir(
            [self.root / split / "JPEGImages", self.root / "JPEGImages" / split, self.root / "JPEGImages"]
        )
        if image_root is None:
            raise FileNotFoundError(f"No JPEGImages folder for split {split!r} under {self.root}.")
        self.image_root = image_root
        mask_dict_path = _first_file([self.root / split / "mask_dict.json", self.root / "mask_dict.json"])
        self.annotation_root = _first_dir(
            [self.root / split / "Annotations", self.root / "Annotations" / split, self.root / "Annotations"]
        )
        if require_ground_truth and mask_dict_path is None and self.annotation_root is None:
            raise FileNotFoundError(
                f"No ground truth for split {split!r} under {self.root}: expected Annotations/ "
                "(Ref-YouTube-VOS, Ref-DAVIS17) or mask_dict.json (MeViS)."
            )
        # Read once here (as the official code), so that data-loading workers share it instead of each
        # parsing MeViS's large file again.
        self.mask_dict: dict | None = json.loads(mask_dict_path.read_text()) if mask_dict_path else None
        self.frames = {
            v: list(e.get("frames") or sorted(p.stem for p in (image_root / v).glob("*.jpg")))
            for v, e in self.meta.items()
        }

    def load_frames(self, video: str, indices: list[int]) -> np.ndarray:
        """(len(indices), H, W, 3) uint8 RGB: some frames of a video."""
        names = self.frames[video]
        return np.stack([_load_rgb(self.image_root / video / f"{names[i]}.jpg") for i in indices])

    def object_mask(
        self, video: str, expression: dict, frame_index: int, size: tuple[int, int]
    ) -> np.ndarray:
        """(H, W) bool: the expression's target(s) on one frame; empty where a frame has no annotation."""
        if self.mask_dict is not None:
            mask = np.zeros(size, dtype=bool)
            anno_ids = expression.get("anno_id", [])
            for anno_id in anno_ids if isinstance(anno_ids, list) else [anno_ids]:
                rle = self.mask_dict[str(anno_id)][frame_index]
                if rle is not None:
                    mask |= decode_rle(rle)
            return mask
        return expression_mask(self.object_ids(video, frame_index), expression, size)

    def object_ids(self, video: str, frame_index: int) -> np.ndarray | None:
        """(H, W) uint8: the object id of each pixel of one frame (its palette PNG, 0 where no object is);
        None where the frame has no annotation."""
        if self.annotation_root is None:
            raise FileNotFoundError(
                f"Split {self.split!r} under {self.root} has no ground truth (Annotations/)."
            )
        path = self.annotation_root / video / f"{self.frames[video][frame_index]}.png"
        return read_object_ids(path) if path.is_file() else None

    def __iter__(self) -> Iterator[VideoExpressions]:
        """Every video of the split with its expressions, in sorted order."""
        for video, entry in self.meta.items():
            yield VideoExpressions(self, video, self.frames[video], entry["expressions"])

    def __len__(self) -> int:
        return len(self.meta)
