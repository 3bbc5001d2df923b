"""Frames as the model takes them: the RGB array checks, the official resize, and the normalisation.

The official scripts squash each frame to a square with PIL's bilinear filter (which antialiases when it
shrinks) and normalise it with ImageNet's mean and deviation. The resize stays PIL's, on the host, since
no device kernel gives PIL's numbers; the resized frame travels to the device as uint8 (a quarter of the
bytes of float32) and is normalised there.
"""

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


def resize(frame: np.ndarray, size: int) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, size, size) uint8: squashed to a square with PIL's bilinear filter (official)."""
    square = np.array(Image.fromarray(np.ascontiguousarray(frame)).resize((size, size), Image.BILINEAR))
    return torch.from_numpy(square).permute(2, 0, 1)


class Normalizer:
    """ImageNet's normalisation of uint8 images (official), with its constants made once on ``device``."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], device: torch.device | str = "cpu"):
        self.mean = torch.tensor(mean, dtype=torch.float32, device=device)[:, None, None]
        self.std = torch.tensor(std, dtype=torch.float32, device=device)[:, None, None]

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """(..., 3, S, S) uint8 on the normaliser's device -> float32."""
        return (images.float() / 255.0 - self.mean) / self.std


def preprocess(frame: np.ndarray, size: int, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, size, size) float32 on the host: :func:`resize`, then the normalisation."""
    return Normalizer(mean, std)(resize(frame, size))


def to_device(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Host uint8 images on ``device``: on CUDA through pinned memory without waiting (the copy overlaps the
    work already queued), elsewhere (or where memory cannot be pinned) as a plain copy."""
    if device.type == "cuda":
        try:
            return images.pin_memory().to(device, non_blocking=True)
        except RuntimeError:  # no page-locked memory here (a locked-memory limit, an emulated GPU)
            pass
    return images.to(device)
