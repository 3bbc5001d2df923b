"""RefCOCO, RefCOCO+ and RefCOCOg for image pre-training, in the COCO-style layout of the official code.

The official pre-training (inherited from ReferFormer / MDETR) reads one COCO-format file per dataset,
``<root>/<name>/instances_<name>_<split>.json``, in which every "image" entry is one referring expression
(``file_name``, ``caption``) and its annotations are the referred object (polygons or RLE); the pictures are
COCO's ``<root>/train2014/<file_name>``. Crowd annotations and empty boxes are dropped, as officially.
Each item is a one-frame clip of kind ``"image"``, which the trainer sends through the official single-image
path (:func:`mpgsam2.training.image_forward`).
"""

from __future__ import annotations

import json
import logging
import random
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from .samples import RawClip
from .videos import MAX_RESAMPLES, training_text

logger = logging.getLogger(__name__)

REFCOCO_NAMES = ("refcoco", "refcoco+", "refcocog")


def annotation_mask(annotation: dict, height: int, width: int) -> np.ndarray:
    """(H, W) bool of one COCO annotation (polygons, compressed or uncompressed RLE)."""
    from pycocotools import mask as mask_utils

    segmentation = annotation["segmentation"]
    if isinstance(segmentation, list):
        if not segmentation:
            return np.zeros((height, width), dtype=bool)
        rles = mask_utils.frPyObjects(segmentation, height, width)
        return mask_utils.decode(rles).reshape(height, width, -1).any(axis=2)
    if isinstance(segmentation["counts"], list):
        segmentation = mask_utils.frPyObjects(segmentation, height, width)
    return mask_utils.decode(segmentation).astype(bool)


class RefCOCO(Dataset):
    """Referring expressions on COCO images, one item per expression.

    Args:
        root: the folder holding ``train2014/`` and ``refcoco/``, ``refcoco+/``, ``refcocog/``.
        names: which of the three to use (the official pre-training concatenates all three).
        split: ``train`` or ``val``.
        augment, transform, lowercase, seed: as :class:`mpgsam2.datasets.ReferringVideoDataset` (the official
            pre-training does not lower-case RefCOCO expressions, hence the default).
        image_dir: the images' folder under ``root``.
        max_items: keep only the first items of each file, for smoke tests.
    """

    def __init__(
        self,
        root: str | Path,
        names: Sequence[str] = REFCOCO_NAMES,
        split: str = "train",
        augment: Callable[[RawClip, random.Random], RawClip] | None = None,
        transform: Callable[[RawClip], object] | None = None,
        lowercase: bool = False,
        seed: int = 0,
        image_dir: str = "train2014",
        max_items: int | None = None,
    ):
        self.root = Path(root)
        self.image_root = self.root / image_dir
        self.augment = augment
        self.transform = transform
        self.lowercase = lowercase
        self.seed = seed
        self.epoch = 0
        if not self.image_root.is_dir():
            raise FileNotFoundError(f"No image folder {self.image_root}.")
        self.items: list[tuple[str, dict, list[dict]]] = []
        for name in names:
            path = self.root / name / f"instances_{name}_{split}.json"
            if not path.is_file():
                raise FileNotFoundError(f"No {name} annotations at {path}.")
            data = json.loads(path.read_text())
            by_image: dict[int, list[dict]] = defaultdict(list)
            for annotation in data["annotations"]:
                if annotation.get("iscrowd", 0) == 0:
                    by_image[annotation["image_id"]].append(annotation)
            images = sorted(data["images"], key=lambda i: i["id"])[:max_items]
            for image in images:
                kept = [a for a in by_image.get(image["id"], []) if a["bbox"][2] > 0 and a["bbox"][3] > 0]
                self.items.append((name, image, kept))
            logger.info("%s %s: %d expressions", name, split, len(images))
        if not self.items:
            raise ValueError(f"No RefCOCO expression found under {self.root}.")

    def __len__(self) -> int:
        return len(self.items)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def load_item(self, index: int) -> RawClip:
        """One image and the union of its referred annotations, as a one-frame clip."""
        name, image, annotations = self.items[index]
        with Image.open(self.image_root / image["file_name"]) as picture:
            frame = np.asarray(picture.convert("RGB"))
        height, width = frame.shape[:2]
        mask = np.zeros((height, width), dtype=bool)
        for annotation in annotations:
            mask |= annotation_mask(annotation, height, width)
        return RawClip(
            frames=frame[None],
            masks=mask[None],
            expression=training_text(image["caption"], self.lowercase),
            frame_indices=(0,),
            source=f"{name}:{image['id']}",
            kind="image",
        )

    def __getitem__(self, index: int):
        rng = random.Random(f"{self.seed}/{self.epoch}/{index}")
        for _ in range(MAX_RESAMPLES):
            clip = self.load_item(index)
            if clip.visible.any():
                clip = self.augment(clip, rng) if self.augment is not None else clip
                return self.transform(clip) if self.transform is not None else clip
            index = rng.randrange(len(self.items))
        raise RuntimeError(f"No visible target in {MAX_RESAMPLES} sampled RefCOCO items.")
