"""Which frames a read keeps (trim window, target fps, frame cap) and at what size, for both readers."""

from __future__ import annotations

import math
from pathlib import Path

from .types import VideoInfo, VideoReadError


class FrameSelector:
    """Decides, frame by frame in presentation order, which frames a trim window and a target fps keep.

    The target rate is applied by timestamp buckets of width ``1 / target_fps`` counted from the first kept
    frame: the first frame in each bucket is kept. This never invents or duplicates frames, and works for
    variable-frame-rate input.
    """

    def __init__(
        self,
        start_s: float | None,
        end_s: float | None,
        target_fps: float | None,
        source_fps: float,
        max_frames: int | None,
    ) -> None:
        self.start_s = start_s
        self.end_s = end_s
        self.max_frames = max_frames
        self.step_fps = target_fps if target_fps is not None and target_fps < source_fps else None
        self.first_t: float | None = None
        self.last_bucket = -1
        self.kept = 0

    # Timestamps are rounded decimals from ffmpeg's log; the tolerance absorbs that rounding.
    _EPS = 1e-6

    def done(self) -> bool:
        return self.max_frames is not None and self.kept >= self.max_frames

    def past_end(self, t: float) -> bool:
        return self.end_s is not None and t >= self.end_s - self._EPS

    def keep(self, t: float) -> bool:
        if self.done() or self.past_end(t):
            return False
        if self.start_s is not None and t < self.start_s - self._EPS:
            return False
        if self.first_t is None:
            self.first_t = t
        if self.step_fps is not None:
            bucket = math.floor((t - self.first_t) * self.step_fps + 1e-4)
            if bucket <= self.last_bucket:
                return False
            self.last_bucket = bucket
        self.kept += 1
        return True


def validate_read_args(
    start_s: float | None, end_s: float | None, fps: float | None, max_frames: int | None
) -> None:
    if start_s is not None and start_s < 0:
        raise VideoReadError(f"The trim start ({start_s:g} s) is negative; choose a start of 0 s or later.")
    if start_s is not None and end_s is not None and end_s <= start_s:
        raise VideoReadError(
            f"The trim window {start_s:g}-{end_s:g} s is empty; choose an end time after the start time."
        )
    if end_s is not None and end_s <= 0:
        raise VideoReadError(f"The trim end ({end_s:g} s) must be after 0 s.")
    if fps is not None and not (fps > 0 and math.isfinite(fps)):
        raise VideoReadError(f"The target frame rate ({fps}) must be a positive number of frames per second.")
    if max_frames is not None and max_frames < 1:
        raise VideoReadError(f"max_frames ({max_frames}) must be at least 1.")


def empty_window_error(
    path: Path, info: VideoInfo, start_s: float | None, end_s: float | None
) -> VideoReadError:
    lo = 0.0 if start_s is None else start_s
    hi = "the end" if end_s is None else f"{end_s:g} s"
    return VideoReadError(
        f"The trim window {lo:g} s to {hi} of '{path.name}' contains no frame; the video is "
        f"{info.duration_s:.2f} s long. Choose a start and end between 0 and {info.duration_s:.2f} s."
    )


def fit_within(width: int, height: int, max_side: int | None) -> tuple[int, int]:
    """(width, height) scaled down so that the longer side is at most ``max_side``, both even; unchanged
    when already small enough."""
    if max_side is None or max(width, height) <= max_side:
        return width, height
    scale = max_side / max(width, height)
    return max(2, int(width * scale) // 2 * 2), max(2, int(height * scale) // 2 * 2)
