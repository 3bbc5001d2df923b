"""A video file and expressions in, every output on disk.

* :mod:`.clips` - what part of a video to process (:class:`SegmentOptions`) and decoding it;
* :mod:`.run` - the run: the model's loop frame by frame, stopping early, failures part-way;
* :mod:`.collector` - per-frame results as they arrive, and the one value (:class:`RunResult`) the outputs are
  written from;
* :mod:`.outputs` - the overlay video, timeline, mask exports, summary and bundle (:class:`SegmentOutputs`).
"""

from __future__ import annotations

from .clips import DEFAULT_MAX_SIDE, ClipTooLongError, SegmentOptions, load_clip
from .collector import FrameDone, ResultCollector, RunResult
from .outputs import ExpressionSummary, SegmentOutputs, write_outputs
from .run import LoopFailure, RunInterrupted, RunOutOfMemory, frame_results, iter_segment_video, segment_video

__all__ = [
    "DEFAULT_MAX_SIDE",
    "ClipTooLongError",
    "ExpressionSummary",
    "FrameDone",
    "LoopFailure",
    "ResultCollector",
    "RunInterrupted",
    "RunOutOfMemory",
    "RunResult",
    "SegmentOptions",
    "SegmentOutputs",
    "frame_results",
    "iter_segment_video",
    "load_clip",
    "segment_video",
    "write_outputs",
]
