"""Frames as the model takes them: the RGB array checks, and the official resize and normalisation."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image


def as_frame_array(frames: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    """(T, H, W, 3) uint8 from an array or a list of (H, W, 3) frames; a clear error otherwise."""
    array = np.asarray(frames) if not isinstance(frames, np.ndarray) else frames
    if array.ndim == 3 and array.shape[-1] == 3:
        array = array[None]
    if array.ndim != 4 or array.shape[-1] != 3 or array.shape[0] == 0:
        raise ValueError(f"Frames must be RGB, shaped (T, H, W, 3) with T >= 1; got {array.shape}.")
    if array.dtype != np.uint8:
        raise ValueError(f"Frames must be uint8 (0-255); got {array.dtype}.")
    return array


def preprocess(frame: np.ndarray, size: int, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, size, size) float32: squashed with PIL bilinear and normalised (official)."""
    resized = np.asarray(Image.fromarray(frame).resize((size, size), Image.BILINEAR), dtype=np.float32)
    tensor = torch.from_numpy(resized / 255.0).permute(2, 0, 1)
    mean_t = torch.tensor(mean, dtype=torch.float32)[:, None, None]
    std_t = torch.tensor(std, dtype=torch.float32)[:, None, None]
    return (tensor - mean_t) / std_t
