"""Mask exports: DAVIS palette PNG zips, per-expression binary PNGs and COCO RLE JSON, with their readers.

numpy + Pillow (pycocotools for RLE, imported where used); every file is written to a temporary name and
renamed, so an interrupted run never leaves a half-written export.
"""

from __future__ import annotations

import io
import json
import os
import re
import uuid
import warnings
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .video_io.sequences import natural_key

__all__ = [
    "DAVIS_PALETTE",
    "atomic_target",
    "load_coco_rle_json",
    "load_palette_zip",
    "save_binary_mask_pngs",
    "save_coco_rle_json",
    "save_palette_pngs_zip",
]


@contextmanager
def atomic_target(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` to write, renamed onto ``path`` only if the block succeeds."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}.partial")
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


def _voc_palette() -> np.ndarray:
    """The PASCAL VOC / DAVIS colour map: ``(256, 3)`` uint8.

    Index ``i`` spreads its bits over the three channels, three bits per step, most significant first
    (1 -> dark red, 2 -> dark green, 3 -> olive, 4 -> dark blue, ...).
    """
    cmap = np.zeros((256, 3), dtype=np.uint8)
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        cmap[i] = (r, g, b)
    return cmap


#: ``(256, 3)`` uint8 palette embedded in the indexed PNG exports.
DAVIS_PALETTE: np.ndarray = _voc_palette()


def _check_mask_stack(masks_per_expression: Sequence[np.ndarray]) -> tuple[int, int, int]:
    if not masks_per_expression:
        raise ValueError("need at least one expression's masks")
    shape = np.shape(masks_per_expression[0])
    if len(shape) != 3:
        raise ValueError(f"masks must be (T, H, W), got {shape}")
    for k, m in enumerate(masks_per_expression):
        if np.shape(m) != shape:
            raise ValueError(f"expression {k} masks have shape {np.shape(m)}, expected {shape}")
    return int(shape[0]), int(shape[1]), int(shape[2])


def _label_map(masks_per_expression: Sequence[np.ndarray], t: int, height: int, width: int) -> np.ndarray:
    """``(H, W)`` uint8: 0 background, k+1 where expression k's mask is set (later expressions win overlaps)."""
    labels = np.zeros((height, width), dtype=np.uint8)
    for k, masks in enumerate(masks_per_expression):
        labels[np.asarray(masks[t]).astype(bool, copy=False)] = k + 1
    return labels


def _frame_png_name(t: int, frame_names: Sequence[str] | None) -> str:
    if frame_names is None:
        return f"{t:05d}.png"
    # Only the base name: names come from user uploads and must not place files outside the archive root.
    stem = Path(str(frame_names[t]).replace("\\", "/")).name
    stem = Path(stem).stem or f"{t:05d}"
    return f"{stem}.png"


def save_palette_pngs_zip(
    path: str | os.PathLike[str],
    masks_per_expression: Sequence[np.ndarray],
    frame_names: Sequence[str] | None = None,
) -> Path:
    """Zip of DAVIS-style indexed ("P" mode) PNGs, one per frame.

    Pixel value ``k`` (1..K) marks expression ``k - 1``; 0 is background; where masks overlap the later
    expression wins. The DAVIS/VOC palette is embedded so the files display in colour.

    Args:
        path: destination ``.zip``.
        masks_per_expression: per expression ``(T, H, W)`` bool; at most 255 expressions.
        frame_names: optional per-frame names (extensions are replaced by ``.png``); default ``00000.png``...
    """
    from PIL import Image

    t_count, h, w = _check_mask_stack(masks_per_expression)
    if len(masks_per_expression) > 255:
        raise ValueError("an 8-bit palette PNG holds at most 255 expressions")
    if frame_names is not None and len(frame_names) != t_count:
        raise ValueError(f"got {len(frame_names)} frame names for {t_count} frames")
    palette = DAVIS_PALETTE.reshape(-1).tolist()
    names = [_frame_png_name(t, frame_names) for t in range(t_count)]
    if len(set(names)) != len(names):
        raise ValueError("frame names must be unique")
    with atomic_target(path) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
        for t in range(t_count):
            img = Image.fromarray(_label_map(masks_per_expression, t, h, w))
            img.putpalette(palette)  # "L" becomes "P" with the palette attached
            buf = io.BytesIO()
            img.save(buf, format="PNG", optimize=False)
            # PNG data is already compressed; storing avoids compressing twice.
            zf.writestr(names[t], buf.getvalue())
    return Path(path)


def load_palette_zip(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a zip of indexed PNGs (as written by :func:`save_palette_pngs_zip`) into ``(T, H, W)`` uint8 indices.

    Frames are ordered by name (natural order).
    """
    from PIL import Image

    with zipfile.ZipFile(path) as zf:
        names = sorted((n for n in zf.namelist() if n.lower().endswith(".png")), key=natural_key)
        if not names:
            raise ValueError(f"{path} contains no PNG files")
        frames = []
        for name in names:
            with Image.open(io.BytesIO(zf.read(name))) as img:
                if img.mode not in ("P", "L"):
                    raise ValueError(f"{name} is a {img.mode} PNG; expected an indexed (P) or grayscale PNG")
                frames.append(np.asarray(img, dtype=np.uint8))
    return np.stack(frames)


def _slug(text: str, max_chars: int = 40) -> str:
    slug = re.sub(r"[^a-z0-9]+", "_", str(text).lower()).strip("_")[:max_chars].strip("_")
    return slug or "expression"


def save_binary_mask_pngs(
    folder: str | os.PathLike[str],
    masks_per_expression: Sequence[np.ndarray],
    expressions: Sequence[str],
    frame_names: Sequence[str] | None = None,
) -> list[Path]:
    """Write per expression a subfolder ``NN_<slug>`` of 0/255 grayscale PNGs, one per frame.

    The subfolder name keeps only ``[a-z0-9_]`` of the expression, so user text cannot escape ``folder``.

    Returns:
        The subfolders, in expression order.
    """
    from PIL import Image

    t_count, _, _ = _check_mask_stack(masks_per_expression)
    if len(expressions) != len(masks_per_expression):
        raise ValueError(f"got {len(masks_per_expression)} mask sets but {len(expressions)} expressions")
    root = Path(folder)
    out: list[Path] = []
    for k, (masks, text) in enumerate(zip(masks_per_expression, expressions)):
        sub = root / f"{k + 1:02d}_{_slug(text)}"
        sub.mkdir(parents=True, exist_ok=True)
        for t in range(t_count):
            binary = np.asarray(masks[t]).astype(bool, copy=False).astype(np.uint8) * 255
            Image.fromarray(binary).save(sub / _frame_png_name(t, frame_names))
        out.append(sub)
    return out


def save_coco_rle_json(
    path: str | os.PathLike[str],
    masks_per_expression: Sequence[np.ndarray],
    expressions: Sequence[str],
    timestamps_s: Sequence[float] | np.ndarray,
    fps: float,
    width: int,
    height: int,
) -> Path:
    """Write masks as COCO run-length encodings in one JSON file.

    Layout::

        {"format": "mpgsam2-coco-rle", "version": 1, "width": W, "height": H, "fps": fps, "num_frames": T,
         "expressions": [{"id": 1, "text": "..."}, ...],
         "annotations": [{"expression_id": 1, "expression": "...", "frame_index": t, "timestamp_s": s,
                          "segmentation": {"size": [H, W], "counts": "<COCO RLE string>"},
                          "area": pixels, "bbox": [x, y, w, h]}, ...]}

    Every (expression, frame) pair has an entry, empty masks included. ``segmentation`` is a standard COCO
    RLE object that ``pycocotools.mask.decode`` accepts once ``counts`` is encoded back to bytes.
    """
    from pycocotools import mask as mask_utils

    t_count, h, w = _check_mask_stack(masks_per_expression)
    if (h, w) != (height, width):
        raise ValueError(f"masks are {w}x{h} but width/height say {width}x{height}")
    if len(expressions) != len(masks_per_expression):
        raise ValueError(f"got {len(masks_per_expression)} mask sets but {len(expressions)} expressions")
    stamps = np.asarray(timestamps_s, dtype=np.float64)
    if stamps.shape != (t_count,):
        raise ValueError(f"got {stamps.shape} timestamps for {t_count} frames")
    annotations = []
    for k, (masks, text) in enumerate(zip(masks_per_expression, expressions)):
        # pycocotools wants column-major (H, W, N) uint8.
        stack = np.asfortranarray(np.asarray(masks).astype(bool).transpose(1, 2, 0).astype(np.uint8))
        rles = mask_utils.encode(stack)
        areas = mask_utils.area(rles)
        boxes = mask_utils.toBbox(rles)
        for t, rle in enumerate(rles):
            annotations.append(
                {
                    "expression_id": k + 1,
                    "expression": str(text),
                    "frame_index": t,
                    "timestamp_s": float(stamps[t]),
                    "segmentation": {"size": [int(h), int(w)], "counts": rle["counts"].decode("utf-8")},
                    "area": int(areas[t]),
                    "bbox": [float(v) for v in boxes[t]],
                }
            )
    doc = {
        "format": "mpgsam2-coco-rle",
        "version": 1,
        "width": int(width),
        "height": int(height),
        "fps": float(fps),
        "num_frames": t_count,
        "expressions": [{"id": k + 1, "text": str(text)} for k, text in enumerate(expressions)],
        "annotations": annotations,
    }
    with atomic_target(path) as tmp:
        tmp.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    return Path(path)


def load_coco_rle_json(path: str | os.PathLike[str]) -> list[np.ndarray]:
    """Decode a file written by :func:`save_coco_rle_json` into per-expression ``(T, H, W)`` bool masks."""
    from pycocotools import mask as mask_utils

    doc = json.loads(Path(path).read_text(encoding="utf-8"))
    t_count, h, w = int(doc["num_frames"]), int(doc["height"]), int(doc["width"])
    ids = [int(e["id"]) for e in doc["expressions"]]
    out = {i: np.zeros((t_count, h, w), dtype=bool) for i in ids}
    anns = doc["annotations"]
    if anns:
        rles = [
            {
                "size": [int(v) for v in a["segmentation"]["size"]],
                "counts": a["segmentation"]["counts"].encode("utf-8"),
            }
            for a in anns
        ]
        # One batched decode: (H, W, N) uint8. pycocotools' Cython result predates numpy 2's __array__(copy=)
        # protocol and numpy warns about it on every call; the data is unaffected.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*copy keyword.*", category=DeprecationWarning)
            decoded = np.asarray(mask_utils.decode(rles))
        for n, ann in enumerate(anns):
            out[int(ann["expression_id"])][int(ann["frame_index"])] = decoded[:, :, n].astype(bool)
    return [out[i] for i in ids]
