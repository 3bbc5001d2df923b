"""Inference: a video's frames and expressions in, per-frame masks out.

* :mod:`.predictor` - :class:`VideoPredictor`: the global stage once per clip, then SAM 2's tracking loop
  frame by frame, several expressions sharing each frame's image features;
* :mod:`.session` - :class:`VideoSession`: the per-video state (frames, global contexts, memory banks);
* :mod:`.frames` - the frames' checks and the official resize and normalisation;
* :mod:`.results` - per-frame results (masks packed to bits) and their one transfer from the device.
"""

from __future__ import annotations

from .frames import as_frame_array, preprocess
from .predictor import VideoPredictor
from .results import ExpressionResult, FrameResult
from .session import VideoSession

__all__ = [
    "ExpressionResult",
    "FrameResult",
    "VideoPredictor",
    "VideoSession",
    "as_frame_array",
    "preprocess",
]
