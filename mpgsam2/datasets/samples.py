"""The two forms of a training sample: raw frames and masks, and the model-ready tensors."""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch

KINDS = ("video", "image")


@dataclass(frozen=True)
class RawClip:
    """A clip as read from disk (T frames of one video, or one image for RefCOCO), before any resizing."""

    frames: np.ndarray  # (T, H, W, 3) uint8 RGB
    masks: np.ndarray  # (T, H, W) bool, the referred object(s)
    expression: str
    frame_indices: tuple[int, ...]  # positions in the source video (all 0 for an image)
    source: str  # "<dataset>:<video>/<expression id>" for messages and logs
    kind: str = "video"  # "video": the tracking path; "image": the official single-image pre-training path
    # (T, P) or (T, P, 1 + G * D) int64: the category (and extreme targets) of the object owning each patch of
    # BEiT-3's grid on each frame (:class:`mpgsam2.datasets.object_categories.PatchCategories`), for the kept
    # categories head trained on the stage's own frames; None when not asked for.
    patch_labels: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.frames.ndim != 4 or self.frames.shape[-1] != 3 or self.frames.dtype != np.uint8:
            raise ValueError(f"{self.source}: frames must be (T, H, W, 3) uint8, got {self.frames.shape}.")
        if self.masks.shape != self.frames.shape[:3]:
            raise ValueError(
                f"{self.source}: masks {self.masks.shape} do not match frames {self.frames.shape}."
            )
        if self.kind not in KINDS:
            raise ValueError(f"{self.source}: kind must be one of {KINDS}, not {self.kind!r}.")
        if self.patch_labels is not None and len(self.patch_labels) != len(self.frames):
            raise ValueError(
                f"{self.source}: {len(self.patch_labels)} frames of patch labels for {len(self.frames)} frames."
            )

    @property
    def visible(self) -> np.ndarray:
        """(T,) bool: frames in which the target is visible (the official ``valid``)."""
        return self.masks.reshape(len(self.masks), -1).any(axis=1)


@dataclass(frozen=True)
class TrainingClip:
    """Model inputs and targets of one clip (S = SAM 2's square input size, L text tokens)."""

    sam_images: torch.Tensor  # (T, 3, S, S) float32, normalised
    beit_images: torch.Tensor  # (T, 3, 224, 224) float32, normalised
    masks: torch.Tensor  # (T, S, S) float32 0/1, the ground truth resized with nearest neighbours
    visible: torch.Tensor  # (T,) bool, target visible in the original-resolution mask
    input_ids: torch.Tensor  # (L,) int64
    text_padding: torch.Tensor  # (L,) bool
    expression: str
    source: str
    kind: str = "video"
    patch_labels: torch.Tensor | None = None  # (T, P) or (T, P, 1 + G * D), as :attr:`RawClip.patch_labels`

    @property
    def num_frames(self) -> int:
        return int(self.sam_images.shape[0])

    def to(self, device: torch.device | str) -> TrainingClip:
        """A copy with every tensor on ``device``."""
        values = {}
        for f in fields(self):
            value = getattr(self, f.name)
            values[f.name] = value.to(device, non_blocking=True) if isinstance(value, torch.Tensor) else value
        return TrainingClip(**values)

    def pin_memory(self) -> TrainingClip:
        """A copy with every tensor in pinned memory (the DataLoader's ``pin_memory`` calls this), so that
        :meth:`to` copies to CUDA without blocking."""
        values = {}
        for f in fields(self):
            value = getattr(self, f.name)
            values[f.name] = value.pin_memory() if isinstance(value, torch.Tensor) else value
        return TrainingClip(**values)
