"""Training readers for Ref-YouTube-VOS, MeViS and Ref-DAVIS17 folders.

Each split is described by ``meta_expressions.json``::

    {"videos": {"<video>": {"frames": ["00000", ...],
                            "expressions": {"<exp_id>": {"exp": "a dog", "obj_id": "1", ...}}}}}

with frames in ``JPEGImages/<video>/<frame>.jpg``. The ground truth comes in one of two forms:

* Ref-YouTube-VOS and Ref-DAVIS17 (the ReferFormer conversion): palette PNGs
  ``Annotations/<video>/<frame>.png`` whose pixel value is the object id (``obj_id`` of the expression);
* MeViS: ``mask_dict.json`` mapping an annotation id to one COCO RLE (or null) per frame; an expression
  lists its ``anno_id`` (several objects possible), and its mask is their union.

The usual places are searched: ``<root>/<split>/...`` and ``<root>/meta_expressions/<split>/...``.
One training item is an (expression, anchor frame) pair, anchors every T frames
(:mod:`mpgsam2.data.sampling`); an item whose clip never shows the target is replaced by another random
item, as in the official datasets.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from ..datasets import find_meta
from .sampling import anchor_frames, sample_clip_frames
from .types import RawClip

logger = logging.getLogger(__name__)

MAX_RESAMPLES = 100


def clean_expression(text: str, lowercase: bool) -> str:
    """The official training clean-up: lower case and single spaces (inference uses the raw text)."""
    return " ".join(text.lower().split()) if lowercase else text


def _first_dir(candidates: list[Path]) -> Path | None:
    return next((p for p in candidates if p.is_dir()), None)


def _first_file(candidates: list[Path]) -> Path | None:
    return next((p for p in candidates if p.is_file()), None)


def decode_rle(rle: dict) -> np.ndarray:
    """(H, W) bool from a COCO RLE whose counts are a string or bytes."""
    from pycocotools import mask as mask_utils

    counts = rle["counts"]
    if isinstance(counts, list):  # uncompressed RLE
        rle = mask_utils.frPyObjects(rle, *rle["size"])
    return mask_utils.decode(rle).astype(bool)


@dataclass(frozen=True)
class EvalVideo:
    """One video of an annotated split, for evaluation (every frame, every expression)."""

    video: str
    frame_names: list[str]
    frame_dir: Path
    expressions: dict[str, dict]  # exp_id -> the meta entry ({"exp": text, "obj_id", ...})
    ground_truth: Callable[[str], np.ndarray]  # exp_id -> (T, H, W) bool on every frame

    def load_frames(self) -> np.ndarray:
        """(T, H, W, 3) uint8 RGB."""
        return np.stack(
            [np.asarray(Image.open(self.frame_dir / f"{n}.jpg").convert("RGB")) for n in self.frame_names]
        )


class ReferringVideoDataset(Dataset):
    """Clips of a referring video segmentation split with their masks (map-style, one item per anchor).

    Args:
        root: the dataset folder (``ref-youtube-vos``, ``mevis-release``, ``ref-davis``).
        split: ``train``, ``valid``, ``valid_u``...
        num_frames: frames per clip (T); 1 gives single frames through the video path.
        augment: called as ``augment(clip, rng)`` (see :class:`mpgsam2.data.augment.ClipAugmentation`).
        transform: called on the (augmented) :class:`RawClip`, e.g. :class:`mpgsam2.data.ClipTransform`.
        lowercase: lower-case the expressions (the official training does; inference does not).
        seed: with :meth:`set_epoch`, makes every item's sampling and augmentation reproducible.
        max_videos: keep only the first videos (sorted), for smoke tests.
    """

    name = "videos"

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        num_frames: int = 5,
        augment: Callable[[RawClip, random.Random], RawClip] | None = None,
        transform: Callable[[RawClip], object] | None = None,
        lowercase: bool = True,
        seed: int = 0,
        max_videos: int | None = None,
    ):
        self.root = Path(root)
        self.split = split
        self.num_frames = num_frames
        self.augment = augment
        self.transform = transform
        self.lowercase = lowercase
        self.seed = seed
        self.epoch = 0
        meta = json.loads(find_meta(self.root, split).read_text())["videos"]
        videos = sorted(meta)[:max_videos] if max_videos else sorted(meta)
        self.meta = {v: meta[v] for v in videos}
        image_root = _first_dir(
            [self.root / split / "JPEGImages", self.root / "JPEGImages" / split, self.root / "JPEGImages"]
        )
        if image_root is None:
            raise FileNotFoundError(f"No JPEGImages folder for split {split!r} under {self.root}.")
        self.image_root = image_root
        self.mask_dict_path = _first_file(
            [self.root / split / "mask_dict.json", self.root / "mask_dict.json"]
        )
        self.annotation_root = _first_dir(
            [self.root / split / "Annotations", self.root / "Annotations" / split, self.root / "Annotations"]
        )
        if self.mask_dict_path is None and self.annotation_root is None:
            raise FileNotFoundError(
                f"No ground truth for split {split!r} under {self.root}: expected Annotations/ "
                "(Ref-YouTube-VOS, Ref-DAVIS17) or mask_dict.json (MeViS)."
            )
        # Read once here (as the official code), so that data-loading workers share it instead of each
        # parsing MeViS's large file again.
        self.mask_dict: dict = json.loads(self.mask_dict_path.read_text()) if self.mask_dict_path else {}
        self.frames = {
            v: sorted(e.get("frames") or (p.stem for p in (image_root / v).glob("*.jpg")))
            for v, e in self.meta.items()
        }
        self.items = [
            (video, exp_id, anchor)
            for video, entry in self.meta.items()
            for exp_id in sorted(entry["expressions"], key=lambda e: (len(e), e))
            for anchor in anchor_frames(len(self.frames[video]), num_frames)
        ]
        if not self.items:
            raise ValueError(f"Split {split!r} under {self.root} has no expression to train on.")
        logger.info("%s %s: %d videos, %d clips", self.name, split, len(self.meta), len(self.items))

    def __len__(self) -> int:
        return len(self.items)

    def set_epoch(self, epoch: int) -> None:
        """Changes the random draws of every item (call before each epoch)."""
        self.epoch = epoch

    def object_mask(
        self, video: str, expression: dict, frame_index: int, size: tuple[int, int]
    ) -> np.ndarray:
        """(H, W) bool: the expression's target(s) on one frame of the video."""
        if self.mask_dict_path is not None:
            mask = np.zeros(size, dtype=bool)
            anno_ids = expression.get("anno_id", [])
            for anno_id in anno_ids if isinstance(anno_ids, list) else [anno_ids]:
                rle = self.mask_dict[str(anno_id)][frame_index]
                if rle is not None:
                    mask |= decode_rle(rle)
            return mask
        name = self.frames[video][frame_index]
        path = self.annotation_root / video / f"{name}.png"
        if not path.is_file():
            return np.zeros(size, dtype=bool)  # an unannotated frame: the object is absent
        with Image.open(path) as image:
            labels = np.asarray(image.convert("P") if image.mode not in ("P", "L") else image)
        obj_ids = expression["obj_id"] if isinstance(expression["obj_id"], list) else [expression["obj_id"]]
        return np.isin(labels, [int(i) for i in obj_ids])

    def load_clip(self, video: str, exp_id: str, frame_indices: list[int]) -> RawClip:
        """Frames and masks of the given frames of a video for one expression (no augmentation)."""
        expression = self.meta[video]["expressions"][exp_id]
        names = self.frames[video]
        frames = np.stack(
            [
                np.asarray(Image.open(self.image_root / video / f"{names[i]}.jpg").convert("RGB"))
                for i in frame_indices
            ]
        )
        size = frames.shape[1:3]
        masks = np.stack([self.object_mask(video, expression, i, size) for i in frame_indices])
        return RawClip(
            frames=frames,
            masks=masks,
            expression=clean_expression(expression["exp"], self.lowercase),
            frame_indices=tuple(frame_indices),
            source=f"{self.name}:{video}/{exp_id}",
        )

    def item_rng(self, index: int, attempt: int = 0) -> random.Random:
        return random.Random(f"{self.seed}/{self.epoch}/{index}/{attempt}")

    def raw_item(self, index: int) -> RawClip:
        """The item's clip (resampled to another item while the target is never visible), augmented."""
        rng = self.item_rng(index)
        for _ in range(MAX_RESAMPLES):
            video, exp_id, anchor = self.items[index]
            indices = sample_clip_frames(len(self.frames[video]), anchor, self.num_frames, rng)
            clip = self.load_clip(video, exp_id, indices)
            if clip.visible.any():
                return self.augment(clip, rng) if self.augment is not None else clip
            index = rng.randrange(len(self.items))
        raise RuntimeError(f"No visible target in {MAX_RESAMPLES} sampled clips of {self.root}.")

    def __getitem__(self, index: int):
        clip = self.raw_item(index)
        return self.transform(clip) if self.transform is not None else clip

    def iter_eval_videos(self) -> Iterator[EvalVideo]:
        """Every video with its expressions and ground truth on all frames (for evaluation)."""
        for video, entry in self.meta.items():
            names = self.frames[video]

            def ground_truth(exp_id: str, video: str = video, names: list[str] = names) -> np.ndarray:
                expression = self.meta[video]["expressions"][exp_id]
                with Image.open(self.image_root / video / f"{names[0]}.jpg") as first:
                    size = first.size[::-1]
                return np.stack([self.object_mask(video, expression, i, size) for i in range(len(names))])

            yield EvalVideo(video, list(names), self.image_root / video, entry["expressions"], ground_truth)


class RefYouTubeVOS(ReferringVideoDataset):
    """Ref-YouTube-VOS (``ref-youtube-vos/{train,valid}``, ``meta_expressions/<split>``, palette PNGs)."""

    name = "ytvos"


class MeViS(ReferringVideoDataset):
    """MeViS (``mevis-release/{train,valid_u,valid}`` with ``mask_dict.json``; several objects per expression)."""

    name = "mevis"


class RefDAVIS17(ReferringVideoDataset):
    """Ref-DAVIS17 in ReferFormer's Ref-YouTube-VOS layout (``ref-davis/{train,valid}``, palette PNGs)."""

    name = "davis"


VIDEO_DATASETS: dict[str, type[ReferringVideoDataset]] = {
    "ytvos": RefYouTubeVOS,
    "mevis": MeViS,
    "davis": RefDAVIS17,
}
