"""What the predictor hands back: per frame, only what callers use, in one transfer from the device.

A frame's masks are packed to bits on the device, and they, the priors, the object scores (and the logits,
when asked for) travel to the host in one copy: on CUDA into pinned memory without blocking, so that the
host waits for a frame only while the device already works on the next one. Packed masks are also what
crosses a process boundary (a ZeroGPU worker) at every frame.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

#: np.packbits' order: the first pixel of each group of 8 is the most significant bit.
_BIT_WEIGHTS = (128, 64, 32, 16, 8, 4, 2, 1)


@dataclass(frozen=True)
class FrameResult:
    """All expressions' results on one frame (K expressions, frame H x W, prior grid g x g)."""

    frame_index: int  # position in the video (clip-wise mode: counted from the video's first frame)
    packed_masks: np.ndarray  # (K, ceil(H * W / 8)) uint8: np.packbits of the (K, H * W) masks
    height: int
    width: int
    priors: np.ndarray  # (K, g, g) float32 prior-mask probabilities
    object_scores: np.ndarray  # (K,) float32 object-score logits (> 0: the target is visible)
    logits: np.ndarray | None = None  # (K, H, W) float32 mask logits, when asked for
    # Which of the run's expressions the K rows are (None: all of them, in order); a refinement's are one.
    expressions: tuple[int, ...] | None = None

    @functools.cached_property
    def masks(self) -> np.ndarray:
        """(K, H, W) bool: sigmoid(logits) > the mask threshold."""
        count = self.packed_masks.shape[0]
        flat = np.unpackbits(self.packed_masks, axis=1, count=self.height * self.width)
        return flat.reshape(count, self.height, self.width).view(bool)

    @classmethod
    def pack(
        cls, frame_index: int, masks: np.ndarray, object_scores: np.ndarray, priors: np.ndarray
    ) -> FrameResult:
        """From host arrays: (K, H, W) bool masks, (K,) scores, (K, g, g) priors."""
        count, height, width = masks.shape
        return cls(
            frame_index=int(frame_index),
            packed_masks=np.packbits(masks.reshape(count, height * width), axis=1),
            height=height,
            width=width,
            priors=np.asarray(priors, dtype=np.float32),
            object_scores=np.asarray(object_scores, dtype=np.float32),
        )

    def __getstate__(self) -> dict:
        # The unpacked masks (a cache) stay behind: pickles carry the packed bits only.
        return {k: v for k, v in self.__dict__.items() if k != "masks"}


@dataclass(frozen=True)
class ExpressionResult:
    """One expression over the whole video (T frames)."""

    expression: str
    masks: np.ndarray  # (T, H, W) bool
    priors: np.ndarray  # (T, g, g) float32
    object_scores: np.ndarray  # (T,) float32
    logits: np.ndarray | None = None  # (T, H, W) float32, when asked for


def bit_weights(device: torch.device) -> torch.Tensor:
    """The weights of :func:`pack_bits` on ``device`` (made once per clip, not per frame)."""
    return torch.tensor(_BIT_WEIGHTS, dtype=torch.uint8, device=device)


def pack_bits(masks: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """(K, N) bool on any device -> (K, ceil(N / 8)) uint8, in :func:`numpy.packbits`' order."""
    count, length = masks.shape
    padded = torch.nn.functional.pad(masks.to(torch.uint8), (0, -length % 8))
    return (padded.view(count, -1, 8) * weights).sum(dim=2, dtype=torch.uint8)


class PendingFrame:
    """One frame's results on their way to the host: :meth:`result` waits for them."""

    def __init__(
        self,
        frame_index: int,
        masks: torch.Tensor,
        priors: torch.Tensor,
        object_scores: torch.Tensor,
        logits: torch.Tensor | None,
        bit_weights: torch.Tensor,
        expressions: tuple[int, ...] | None = None,
    ):
        """Start the transfer. masks: (K, H, W) bool; priors: (K, g, g); object_scores: (K,); logits:
        (K, H, W) or None; ``bit_weights``: from :func:`bit_weights`."""
        count, height, width = masks.shape
        self.frame_index, self.height, self.width = frame_index, height, width
        self.expressions = expressions
        parts = [
            pack_bits(masks.reshape(count, -1), bit_weights),
            _bytes(priors.reshape(count, -1)),
            _bytes(object_scores.reshape(count, 1)),
        ]
        if logits is not None:
            parts.append(_bytes(logits.reshape(count, -1)))
        self.sizes = [part.shape[1] for part in parts]
        self.prior_shape = tuple(priors.shape[1:])
        device_buffer = torch.cat(parts, dim=1)
        self.host, self.ready = _start_copy(device_buffer)

    def result(self) -> FrameResult:
        if self.ready is not None:
            self.ready.synchronize()
        host = self.host.numpy()
        bounds = np.cumsum([0, *self.sizes])
        parts = [host[:, a:b] for a, b in zip(bounds[:-1], bounds[1:])]
        count = host.shape[0]
        logits = None
        if len(parts) == 4:
            logits = np.ascontiguousarray(parts[3]).view(np.float32).reshape(count, self.height, self.width)
        return FrameResult(
            frame_index=self.frame_index,
            packed_masks=np.ascontiguousarray(parts[0]),
            height=self.height,
            width=self.width,
            priors=np.ascontiguousarray(parts[1]).view(np.float32).reshape(count, *self.prior_shape),
            object_scores=np.ascontiguousarray(parts[2]).view(np.float32).reshape(count),
            logits=logits,
            expressions=self.expressions,
        )


def _start_copy(buffer: torch.Tensor) -> tuple[torch.Tensor, torch.cuda.Event | None]:
    """The buffer's copy on the host, and on CUDA the event that says it is there (the copy runs behind the
    work already queued); elsewhere, or where memory cannot be pinned, a plain (waiting) copy."""
    if buffer.device.type == "cuda":
        try:
            host = torch.empty(buffer.shape, dtype=torch.uint8, pin_memory=True)
            host.copy_(buffer, non_blocking=True)
            ready = torch.cuda.Event()
            ready.record()
            return host, ready
        except RuntimeError:  # no page-locked memory here (a locked-memory limit, an emulated GPU)
            pass
    return buffer.cpu(), None


def _bytes(values: torch.Tensor) -> torch.Tensor:
    """(K, N) float32 -> (K, 4 N) uint8, the same bytes."""
    return values.float().contiguous().view(torch.uint8)
