"""Single frames of a video split with the category of the object under each image patch.

Ref-YouTube-VOS's ``<split>/meta.json`` (from YouTube-VOS) names the category of every object of every video::

    {"videos": {"<video>": {"objects": {"<obj_id>": {"category": "person", "frames": ["00000", ...]}}}}}

and its palette PNGs hold each object's mask under its ``obj_id``. :class:`PatchCategories` reads both: one frame
of each video, with a label per patch of BEiT-3's grid, for the categories stage
(:mod:`mpgsam2.training.categories`), which teaches the image encoder what things are before it learns which of
them words point at.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ..inference.frames import preprocess
from ..modeling.config import MPGSAM2Config
from .layouts import BenchmarkSplit, read_object_ids

#: The per-object meta file of a split, beside its JPEGImages folder.
OBJECT_META = "meta.json"
#: A patch belongs to an object when that object covers more than this share of it.
OWNED_SHARE = 0.5
#: The label of a patch that no object owns (background, or shared by several): cross-entropy skips it.
IGNORED = -100
#: The directions of the extremes (see :func:`extreme_targets`): (image axis, sign), axis 0 the rows.
DIRECTIONS = {"left": (1, -1), "right": (1, 1), "top": (0, -1), "bottom": (0, 1)}
#: Among which objects an extreme is taken: every object in view, or those of the object's own category.
EXTREME_GROUPS = ("all", "category")
#: A target of :func:`extreme_targets` that says nothing (the object is not in view, or alone in its group).
NO_EXTREME = -1


def object_meta_path(root: str | Path, split: str) -> Path:
    """Where a split's per-object meta file lies (``<root>/<split>/meta.json``)."""
    return Path(root) / split / OBJECT_META


def read_object_categories(root: str | Path, split: str) -> dict[str, dict[int, str]]:
    """``{video: {obj_id: category}}`` from the split's meta file (empty when it has none)."""
    path = object_meta_path(root, split)
    if not path.is_file():
        return {}
    videos = json.loads(path.read_text()).get("videos", {})
    return {
        video: {int(obj_id): entry["category"] for obj_id, entry in (meta.get("objects") or {}).items()}
        for video, meta in videos.items()
    }


def owned_patches(masks: np.ndarray, grid: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Which object owns each patch of a ``grid`` x ``grid`` split of each frame.

    Args:
        masks: (K, T, H, W) bool masks of K objects.
    Returns:
        ``(owned, owner)``: (T, P) bool, True where one object covers more than :data:`OWNED_SHARE` of the
        patch, and (T, P) int64 the index of the object covering most of it (P = grid * grid, row-major).
    """
    objects, frames = masks.shape[:2]
    covered = torch.from_numpy(masks.astype(np.float32)).flatten(0, 1)[:, None]
    shares = F.interpolate(covered, size=(grid, grid), mode="area").view(objects, frames, grid * grid)
    best, owner = shares.max(0)
    return best > OWNED_SHARE, owner


def extreme_targets(masks: np.ndarray, categories: list[str]) -> torch.Tensor:
    """Whether each object is the farthest one in each direction, among all objects in view and among
    those of its category: the relations that "the circle on the left" asks about.

    Args:
        masks: (K, H, W) bool visible masks of K objects on one frame.
        categories: the K objects' categories.
    Returns:
        (K, G * D) int64, G = len(EXTREME_GROUPS) and D = len(DIRECTIONS) (group-major): 1 where the object's
        centre is beyond every other centre of the group in that direction, 0 where it is not,
        :data:`NO_EXTREME` where the object is not in view or no other member of the group is.
    """
    in_view = masks.reshape(len(masks), -1).any(-1)
    centres = np.zeros((len(masks), 2))
    for k in np.flatnonzero(in_view):
        centres[k] = np.argwhere(masks[k]).mean(0)
    targets = torch.full((len(masks), len(EXTREME_GROUPS) * len(DIRECTIONS)), NO_EXTREME, dtype=torch.int64)
    for k in np.flatnonzero(in_view):
        for g, group in enumerate(EXTREME_GROUPS):
            others = [
                j
                for j in np.flatnonzero(in_view)
                if j != k and (group == "all" or categories[j] == categories[k])
            ]
            if not others:
                continue
            for d, (axis, sign) in enumerate(DIRECTIONS.values()):
                beyond = all(sign * (centres[k, axis] - centres[j, axis]) > 0 for j in others)
                targets[k, g * len(DIRECTIONS) + d] = int(beyond)
    return targets


def flip_patch_labels(labels: torch.Tensor) -> torch.Tensor:
    """The patch labels of the left-right mirror of the frames they label.

    Args:
        labels: (T, P) or (T, P, 1 + G * D) as :meth:`PatchCategories.patch_labels` gives for T frames, P a
            square grid's patches (row-major).
    Returns:
        The same shape: each row of patches reversed, and with the extremes "left" and "right" swapped in
        every group (the object farthest left is the farthest right of the mirror).
    """
    frames, patches = labels.shape[:2]
    grid = math.isqrt(patches)
    if grid * grid != patches:
        raise ValueError(f"Patch labels of {patches} patches are not a square grid's.")
    flipped = labels.reshape(frames, grid, grid, *labels.shape[2:]).flip(2).reshape(labels.shape)
    if labels.dim() == 2:
        return flipped
    order = list(range(labels.shape[-1]))
    left, right = list(DIRECTIONS).index("left"), list(DIRECTIONS).index("right")
    for group in range(len(EXTREME_GROUPS)):
        # Column 0 is the category; each group's directions follow.
        base = 1 + group * len(DIRECTIONS)
        order[base + left], order[base + right] = base + right, base + left
    return flipped[..., order]


class PatchCategories(Dataset):
    """One frame of each video of a split (another at each epoch), with the category of each patch.

    Args:
        root, split: a Ref-YouTube-VOS-layout folder whose split has palette PNGs and a ``meta.json``.
        image_size, mean, std: BEiT-3's input size and normalisation (the model's configuration).
        grid: BEiT-3's patches per side (``image_size // patch_size``).
        categories: the label order; default: the split's categories, sorted. Objects of other categories
            are left out of the labels.
        extremes: also label each owned patch with its object's :func:`extreme_targets`.
    Items:
        ``(image, labels)``: (3, image_size, image_size) float32, and (grid * grid,) int64 category indices,
        :data:`IGNORED` where no object owns the patch; with ``extremes``, (grid * grid, 1 + G * D): the
        category, then the owner's extreme targets (:data:`NO_EXTREME` where no object owns the patch).
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        image_size: int,
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
        grid: int,
        seed: int = 0,
        max_videos: int | None = None,
        categories: tuple[str, ...] | None = None,
        extremes: bool = False,
    ):
        self.benchmark = BenchmarkSplit(root, split, max_videos, require_ground_truth=True)
        if self.benchmark.annotation_root is None:
            raise FileNotFoundError(f"The categories stage needs palette PNGs (Annotations/) under {root}.")
        objects = read_object_categories(root, split)
        self.objects = {v: objects[v] for v in self.benchmark.meta if objects.get(v)}
        if not self.objects:
            raise FileNotFoundError(
                f"No object categories for split {split!r} under {root}: expected {object_meta_path(root, split)}"
                ' with {"videos": {video: {"objects": {obj_id: {"category": ...}}}}}.'
            )
        self.videos = sorted(self.objects)
        self.categories = categories or tuple(sorted({c for o in self.objects.values() for c in o.values()}))
        self.image_size, self.mean, self.std, self.grid = image_size, mean, std, grid
        self.seed, self.epoch = seed, 0
        self.extremes = extremes

    @classmethod
    def for_model(cls, root: str | Path, split: str, config: MPGSAM2Config, **options) -> PatchCategories:
        """The split's frames at the input size, normalisation and patch grid of ``config``'s BEiT-3
        (``options``: the other arguments)."""
        beit3, preprocessing = config.beit3, config.preprocess
        return cls(
            root, split, beit3.image_size, preprocessing.mean, preprocessing.std, beit3.grid_size, **options
        )

    def set_epoch(self, epoch: int) -> None:
        """Draw other frames: each (seed, epoch, video) picks its own."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        video = self.videos[index]
        names = self.benchmark.frames[video]
        frame = int(np.random.default_rng((self.seed, self.epoch, index)).integers(len(names)))
        image = preprocess(
            self.benchmark.load_frames(video, [frame])[0], self.image_size, self.mean, self.std
        )
        return image, self.patch_labels(video, names[frame])

    def patch_labels(self, video: str, frame_name: str) -> torch.Tensor:
        """(grid * grid,) int64: the category index of the object owning each patch of one frame; with
        ``extremes``, (grid * grid, 1 + G * D) with its extreme targets after it (see the class)."""
        path = self.benchmark.annotation_root / video / f"{frame_name}.png"
        return self.labels_of(video, read_object_ids(path) if path.is_file() else None)

    def labels_of(self, video: str, object_ids: np.ndarray | None) -> torch.Tensor:
        """:meth:`patch_labels` of a frame of ``video`` already read: its (H, W) object ids, or None where
        the frame has no annotation (it teaches nothing)."""
        patches = self.grid * self.grid
        labels = torch.full((patches,), IGNORED, dtype=torch.int64)
        width = len(EXTREME_GROUPS) * len(DIRECTIONS) if self.extremes else 0
        relations = torch.full((patches, width), NO_EXTREME, dtype=torch.int64)
        known = [(i, c) for i, c in self.objects[video].items() if c in self.categories]
        if object_ids is not None and known:
            masks = np.stack([object_ids == obj_id for obj_id, _ in known])
            owned, owner = owned_patches(masks[:, None], self.grid)
            index = torch.tensor([self.categories.index(c) for _, c in known])
            labels = torch.where(owned[0], index[owner[0]], labels)
            if self.extremes:
                targets = extreme_targets(masks, [c for _, c in known])[owner[0]]
                relations = torch.where(owned[0, :, None], targets, relations)
        return torch.cat([labels[:, None], relations], 1) if self.extremes else labels
