"""The typed per-video state: frames, the expressions' global contexts and their memory bank.

The model holds no per-video state; everything that lives for one video and one run lives here, so two
videos (or two users) never share anything but the weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..modeling.mask_prior import GlobalContext, TrackingContext
from ..tokenizer import EncodedExpression


def empty_memory_bank() -> dict:
    """sam2's memory bank layout, read by its memory selection: frame index -> {maskmem_features, ...}."""
    return {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}


@dataclass
class VideoSession:
    """One clip's frames and the K expressions tracked together over it.

    The memory bank holds the K expressions' memories as batches of K: they advance frame by frame in
    lockstep (see :func:`mpgsam2.modeling.sam2_adapter.track_step`). With ``archive`` (see
    :meth:`~mpgsam2.inference.predictor.VideoPredictor.init_session`'s ``keep_memories``), every frame's
    memory also stays, so that an expression can be re-tracked from any frame after clicks.
    """

    frames: np.ndarray  # (T, H, W, 3) uint8, the clip's frames at their own resolution
    expressions: list[EncodedExpression]
    contexts: list[GlobalContext]  # per expression, from the global stage
    tracking: TrackingContext  # the same, batched for tracking
    frame_offset: int = 0  # index of this clip's first frame in the whole video (clip-wise mode)
    # How far back memories and object pointers are read; older entries are freed.
    memory_frames: int = 6
    pointer_frames: int = 15
    memory_bank: dict = field(default_factory=empty_memory_bank)
    # The next frame, already on its way to the device (see VideoPredictor.propagate).
    prefetched: tuple[int, torch.Tensor] | None = None
    # frame -> its memory (batch of K), kept for re-tracking; None when memories are not kept.
    archive: dict[int, dict] | None = None
    clicks: dict[int, list] = field(default_factory=dict)  # expression -> its clicks so far

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) of the frames."""
        return int(self.frames.shape[1]), int(self.frames.shape[2])

    def remember(self, frame_index: int, memory: dict) -> None:
        """Store a frame's memory (batch of K) in the bank (and the archive), freeing what no later frame can
        read. The first frame stored (tracked with an empty bank) is the conditioning frame, and stays."""
        if self.archive is not None:
            if self.archive:
                # Every frame's positional code of its memory is the same: one copy serves them all.
                memory = {**memory, "maskmem_pos_enc": next(iter(self.archive.values()))["maskmem_pos_enc"]}
            self.archive[frame_index] = memory
        store(self.memory_bank, frame_index, memory, False, self.memory_frames, self.pointer_frames)


def store(
    bank: dict, frame_index: int, memory: dict, conditioning: bool, memory_frames: int, pointer_frames: int
) -> None:
    """Put a frame's memory in a bank: as a conditioning memory when asked, or when the bank is empty (the
    initial frame); then free what no later frame can read (memory features older than ``memory_frames``,
    object pointers older than ``pointer_frames``; conditioning memories stay)."""
    initial = not (bank["cond_frame_outputs"] or bank["non_cond_frame_outputs"])
    if conditioning or initial:
        bank["non_cond_frame_outputs"].pop(frame_index, None)
        bank["cond_frame_outputs"][frame_index] = memory
    else:
        bank["non_cond_frame_outputs"][frame_index] = memory
    past = bank["non_cond_frame_outputs"]
    past.pop(frame_index - pointer_frames - 1, None)
    stale = past.get(frame_index - memory_frames - 1)
    if stale is not None:
        # Only the object pointer is still read this far back; the memory features can go.
        past[frame_index - memory_frames - 1] = {"obj_ptr": stale["obj_ptr"]}
