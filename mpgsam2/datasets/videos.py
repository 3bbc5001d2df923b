"""Training readers for Ref-YouTube-VOS, MeViS and Ref-DAVIS17 folders (read by
:class:`mpgsam2.datasets.layouts.BenchmarkSplit`).

One training item is an (expression, anchor frame) pair, anchors every T frames
(:mod:`mpgsam2.datasets.sampling`); an item whose clip never shows the target is replaced by another random
item, as in the official datasets.
"""

from __future__ import annotations

import copy
import logging
import random
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..expressions import clean_expression
from .layouts import BenchmarkSplit, VideoExpressions, expression_mask
from .samples import RawClip
from .sampling import anchor_frames, sample_clip_frames

logger = logging.getLogger(__name__)

#: Draws of another item before giving up on a dataset without a visible target.
MAX_RESAMPLES = 100
#: An expression's optional list in ``meta_expressions.json`` (the toy writer's): the names of the frames where
#: its target is fully hidden while another object that its words fit is in view.
HIDDEN_LOOKALIKE_FRAMES = "hidden_lookalike_frames"


def no_lookalike_frames(setting: str, data: str = "training data") -> ValueError:
    """The refusal of ``setting`` on ``data`` that lists no :data:`HIDDEN_LOOKALIKE_FRAMES` (to raise)."""
    return ValueError(
        f"{setting} needs {data} that lists the frames where each target is hidden with a look-alike in view "
        f"(the toy writer's {HIDDEN_LOOKALIKE_FRAMES!r}); a toy split written by an older version lacks them: "
        "delete it to have it written again."
    )


def training_text(text: str, lowercase: bool) -> str:
    """The official training clean-up: the one expression rule, then lower case (inference keeps the case)."""
    cleaned = clean_expression(text)
    return cleaned.lower() if lowercase else cleaned


class ReferringVideoDataset(Dataset):
    """Clips of a referring video segmentation split with their masks (map-style, one item per anchor).

    Args:
        root: the dataset folder (``ref-youtube-vos``, ``mevis-release``, ``ref-davis``).
        split: ``train``, ``valid``, ``valid_u``...
        num_frames: frames per clip (T); 1 gives single frames through the video path.
        augment: called as ``augment(clip, rng)`` (see :class:`mpgsam2.datasets.augment.ClipAugmentation`).
        transform: called on the (augmented) :class:`RawClip`, e.g. :class:`mpgsam2.datasets.ClipTransform`.
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
        self.benchmark = BenchmarkSplit(root, split, max_videos, require_ground_truth=True)
        self.root = self.benchmark.root
        self.split = split
        self.num_frames = num_frames
        self.augment = augment
        self.transform = transform
        self.lowercase = lowercase
        self.seed = seed
        self.epoch = 0
        self.meta = self.benchmark.meta
        self.frames = self.benchmark.frames
        # ``labeller(video, object_ids)`` -> the patch labels of one frame of ``video`` from its (H, W)
        # object ids (None: unannotated), added to every clip when set
        # (:func:`mpgsam2.training.kept_heads.label_stage_frames`).
        self.patch_labeller: Callable[[str, np.ndarray | None], torch.Tensor] | None = None
        self.is_anchored_view = False  # set on the views of :meth:`anchored_on_lookalikes`
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

    def anchored_on_lookalikes(self) -> ReferringVideoDataset | None:
        """A view of this dataset (the same files, transform and draws) whose items are anchored on the frames
        where the target is hidden with a look-alike in view (:data:`HIDDEN_LOOKALIKE_FRAMES`), one item per
        such frame, so that every clip holds one; None when the split records no such frame."""
        items = []
        for video, entry in self.meta.items():
            position = {name: index for index, name in enumerate(self.frames[video])}
            for exp_id, expression in sorted(entry["expressions"].items(), key=lambda e: (len(e[0]), e[0])):
                items += [
                    (video, exp_id, position[name]) for name in expression.get(HIDDEN_LOOKALIKE_FRAMES, ())
                ]
        if not items:
            return None
        view = copy.copy(self)
        view.items = items
        view.is_anchored_view = True
        return view

    def set_epoch(self, epoch: int) -> None:
        """Changes the random draws of every item (call before each epoch)."""
        self.epoch = epoch

    def load_clip(self, video: str, exp_id: str, frame_indices: list[int]) -> RawClip:
        """Frames and masks of the given frames of a video for one expression (no augmentation)."""
        expression = self.meta[video]["expressions"][exp_id]
        frames = self.benchmark.load_frames(video, frame_indices)
        size = frames.shape[1:3]
        patch_labels = None
        if self.patch_labeller is None:
            masks = np.stack([self.benchmark.object_mask(video, expression, i, size) for i in frame_indices])
        else:
            # One read of each frame's PNG gives both the target's mask and the patch labels.
            object_ids = [self.benchmark.object_ids(video, i) for i in frame_indices]
            masks = np.stack([expression_mask(ids, expression, size) for ids in object_ids])
            patch_labels = torch.stack([self.patch_labeller(video, ids) for ids in object_ids])
        return RawClip(
            frames=frames,
            masks=masks,
            expression=training_text(expression["exp"], self.lowercase),
            frame_indices=tuple(frame_indices),
            source=f"{self.name}:{video}/{exp_id}",
            patch_labels=patch_labels,
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

    def iter_eval_videos(self) -> Iterator[VideoExpressions]:
        """Every video with its expressions and ground truth on all frames (for evaluation)."""
        return iter(self.benchmark)


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
