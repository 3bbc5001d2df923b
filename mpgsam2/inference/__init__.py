"""Inference: a video's frames and expressions in, per-frame masks out.

* :mod:`.predictor` - :class:`VideoPredictor`: the global stage once per clip, then SAM 2's tracking loop
  frame by frame, several expressions sharing each frame's image features;
* :mod:`.session` - :class:`VideoSession`: the per-video state (frames, global contexts, memory banks);
* :mod:`.frames` - the frames' checks and the official resize and normalisation.
"""

from __future__ import annotations

from .frames import as_frame_array, preprocess
from .predictor import ExpressionResult, FrameResult, VideoPredictor
from .session import ExpressionTrack, VideoSession

__all__ = [
    "ExpressionResult",
    "ExpressionTrack",
    "FrameResult",
    "VideoPredictor",
    "VideoSession",
    "as_frame_array",
    "preprocess",
]
