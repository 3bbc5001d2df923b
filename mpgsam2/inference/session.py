"""The typed per-video state: frames, each expression's global context and memory bank.

The model holds no per-video state; everything that lives for one video and one run lives here, so two
videos (or two users) never share anything but the weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..modeling.mask_prior import GlobalContext
from ..tokenizer import EncodedExpression


@dataclass
class ExpressionTrack:
    """One expression's state over one clip."""

    expression: EncodedExpression
    context: GlobalContext
    merged_embeddings: torch.Tensor  # (T * 49, C) the pixel-level fusion's keys, constant over the clip
    # sam2's memory bank layout, read by its memory selection: frame index -> {maskmem_features, ...}
    output_dict: dict = field(
        default_factory=lambda: {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}
    )


@dataclass
class VideoSession:
    """Frames (uint8, converted to model inputs on demand) and the tracks of every expression."""

    frames: np.ndarray  # (T, H, W, 3) uint8, the clip's frames at their own resolution
    tracks: list[ExpressionTrack]
    frame_offset: int = 0  # index of this clip's first frame in the whole video (clip-wise mode)
    # How far back memories and object pointers are read; older entries are freed.
    memory_frames: int = 6
    pointer_frames: int = 15

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) of the frames."""
        return int(self.frames.shape[1]), int(self.frames.shape[2])

    def remember(self, track: ExpressionTrack, frame_index: int, memory: dict) -> None:
        """Store a frame's memory and free what no later frame can read.

        The first frame stored (tracked with an empty bank) is the conditioning frame, and stays.
        """
        bank = track.output_dict
        initial = not (bank["cond_frame_outputs"] or bank["non_cond_frame_outputs"])
        part = "cond_frame_outputs" if initial else "non_cond_frame_outputs"
        track.output_dict[part][frame_index] = memory
        past = track.output_dict["non_cond_frame_outputs"]
        past.pop(frame_index - self.pointer_frames - 1, None)
        stale = past.get(frame_index - self.memory_frames - 1)
        if stale is not None:
            # Only the object pointer is still read this far back; the memory features can go.
            past[frame_index - self.memory_frames - 1] = {"obj_ptr": stale["obj_ptr"]}
