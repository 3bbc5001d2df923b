"""Tiny synthetic datasets in the benchmarks' folder layouts, for tests and CPU smoke runs.

Every video shows a red square moving right and a blue disc moving left over a noisy grey background; the
disc leaves the picture in the last frame (so that one frame has no target). Expressions: ``"0"`` the red
square (object 1), ``"1"`` the blue disc (object 2) and, for MeViS, ``"2"`` both shapes (two annotations).
RefCOCO items show one shape on a still image.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from ..export import DAVIS_PALETTE
from .layouts import VIDEO_FORMATS

EXPRESSIONS = {"0": ("the red square on the left", 1), "1": ("the blue circle", 2)}


def _shapes(frame_index: int, num_frames: int, height: int, width: int) -> dict[int, np.ndarray]:
    """Object id -> (H, W) bool mask on one frame."""
    yy, xx = np.mgrid[:height, :width]
    side = max(4, height // 4)
    progress = frame_index / max(num_frames - 1, 1)
    left = int(2 + progress * (width // 2 - side))
    top = height // 4
    square = (yy >= top) & (yy < top + side) & (xx >= left) & (xx < left + side)
    radius = max(3, height // 6)
    if frame_index == num_frames - 1 and num_frames > 2:
        disc = np.zeros((height, width), dtype=bool)  # out of the picture
    else:
        cx = width - radius - 2 - progress * (width // 3)
        cy = height - radius - 3
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
    return {1: square, 2: disc & ~square}


def _frame(objects: dict[int, np.ndarray], rng: np.random.Generator) -> np.ndarray:
    height, width = objects[1].shape
    image = np.full((height, width, 3), 120, dtype=np.int16) + rng.integers(-12, 12, (height, width, 3))
    image[objects[1]] = (215, 35, 35)
    image[objects[2]] = (35, 60, 215)
    return np.clip(image, 0, 255).astype(np.uint8)


def _rle(mask: np.ndarray) -> dict:
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def write_synthetic_videos(
    root: str | Path,
    layout: str = "ytvos",
    split: str = "train",
    num_videos: int = 2,
    num_frames: int = 6,
    size: tuple[int, int] = (48, 64),
    seed: int = 0,
) -> Path:
    """Write a small referring video dataset under ``root`` in a benchmark's layout; returns ``root``.

    Args:
        layout: ``"ytvos"`` (Ref-YouTube-VOS: ``meta_expressions/<split>/``, palette ``Annotations/``),
            ``"davis"`` (ReferFormer's Ref-DAVIS17 conversion, the same plus annotator ids) or ``"mevis"``
            (``<split>/meta_expressions.json`` and ``<split>/mask_dict.json`` RLEs).
        split: the split folder to write (call again for another split).
        size: (H, W) of the frames.
    """
    if layout not in VIDEO_FORMATS:
        raise ValueError(f"Unknown layout {layout!r}; choose one of {VIDEO_FORMATS}.")
    root = Path(root)
    rng = np.random.default_rng(seed)
    height, width = size
    videos_meta: dict[str, dict] = {}
    objects_meta: dict[str, dict] = {}
    mask_dict: dict[str, list] = {}
    for v in range(num_videos):
        video = f"vid{v:03d}"
        names = [f"{5 * t:05d}" for t in range(num_frames)]
        image_dir = root / split / "JPEGImages" / video
        image_dir.mkdir(parents=True, exist_ok=True)
        per_object: dict[int, list[np.ndarray]] = {1: [], 2: []}
        for t, name in enumerate(names):
            objects = _shapes(t, num_frames, height, width)
            Image.fromarray(_frame(objects, rng)).save(image_dir / f"{name}.jpg", quality=95)
            for obj_id, mask in objects.items():
                per_object[obj_id].append(mask)
            if layout in ("ytvos", "davis"):
                label = np.zeros((height, width), dtype=np.uint8)
                for obj_id, mask in objects.items():
                    label[mask] = obj_id
                annotation_dir = root / split / "Annotations" / video
                annotation_dir.mkdir(parents=True, exist_ok=True)
                png = Image.fromarray(label)  # "L"; putpalette makes it "P"
                png.putpalette(DAVIS_PALETTE.ravel().tolist())
                png.save(annotation_dir / f"{name}.png")
        expressions: dict[str, dict] = {}
        for exp_id, (text, obj_id) in EXPRESSIONS.items():
            entry: dict = {"exp": text, "obj_id": str(obj_id)}
            if layout == "davis":
                entry["anno_id"] = "0"
            if layout == "mevis":
                anno_id = f"{v * 10 + obj_id}"
                mask_dict[anno_id] = [_rle(m) if m.any() else None for m in per_object[obj_id]]
                entry = {"exp": text, "obj_id": [obj_id], "anno_id": [anno_id]}
            expressions[exp_id] = entry
        if layout == "mevis":
            expressions["2"] = {
                "exp": "the two shapes",
                "obj_id": [1, 2],
                "anno_id": [f"{v * 10 + 1}", f"{v * 10 + 2}"],
            }
        videos_meta[video] = {"expressions": expressions, "frames": names}
        objects_meta[video] = {
            "objects": {
                str(obj_id): {"category": ("square", "circle")[obj_id - 1], "frames": names}
                for obj_id in (1, 2)
            }
        }
    meta = {"videos": videos_meta}
    if layout == "mevis":
        (root / split / "meta_expressions.json").write_text(json.dumps(meta))
        (root / split / "mask_dict.json").write_text(json.dumps(mask_dict))
    else:
        meta_dir = root / "meta_expressions" / split
        meta_dir.mkdir(parents=True, exist_ok=True)
        (meta_dir / "meta_expressions.json").write_text(json.dumps(meta))
        (root / split / "meta.json").write_text(json.dumps({"videos": objects_meta}))
    return root


def write_synthetic_refcoco(
    root: str | Path,
    names: tuple[str, ...] = ("refcoco",),
    split: str = "train",
    num_images: int = 4,
    size: tuple[int, int] = (48, 64),
    seed: int = 0,
) -> Path:
    """Write COCO-style RefCOCO files (``<root>/<name>/instances_<name>_<split>.json``) and ``train2014/``.

    Each image holds both shapes; one expression refers to the square (a polygon annotation), the next to
    the disc (an RLE annotation), alternating.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    height, width = size
    image_dir = root / "train2014"
    image_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        images, annotations = [], []
        for i in range(num_images):
            objects = _shapes(i % 3, 4, height, width)
            file_name = f"COCO_train2014_{name.replace('+', 'p')}_{i:06d}.jpg"
            Image.fromarray(_frame(objects, rng)).save(image_dir / file_name, quality=95)
            obj_id = 1 + i % 2
            text, _ = EXPRESSIONS[str(obj_id - 1)]
            images.append(
                {"id": i + 1, "file_name": file_name, "height": height, "width": width, "caption": text}
            )
            mask = objects[obj_id]
            ys, xs = np.nonzero(mask)
            bbox = [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]
            if obj_id == 1:
                x0, y0, w, h = bbox
                segmentation: list | dict = [[x0, y0, x0 + w, y0, x0 + w, y0 + h, x0, y0 + h]]
            else:
                segmentation = _rle(mask)
            annotations.append(
                {
                    "id": i + 1,
                    "image_id": i + 1,
                    "category_id": obj_id,
                    "bbox": bbox,
                    "area": int(mask.sum()),
                    "iscrowd": 0,
                    "segmentation": segmentation,
                }
            )
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        categories = [{"id": 1, "name": "square"}, {"id": 2, "name": "circle"}]
        data = {"images": images, "annotations": annotations, "categories": categories}
        (folder / f"instances_{name}_{split}.json").write_text(json.dumps(data))
    return root
