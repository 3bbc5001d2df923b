"""What part of a video a run processes (:class:`SegmentOptions`) and decoding it (:func:`load_clip`)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..video_io import Clip, VideoReadError, probe_video, read_video

#: Frames whose longer side exceeds this are downscaled while decoding (8K phone clips would need gigabytes).
DEFAULT_MAX_SIDE = 1920


class ClipTooLongError(VideoReadError):
    """The part of the video to process is longer than ``SegmentOptions.max_duration_s``."""


@dataclass(frozen=True)
class SegmentOptions:
    """What to process and how to draw it."""

    start_s: float | None = None
    end_s: float | None = None
    fps: float | None = None  # target frames per second (never above the source's)
    max_frames: int | None = None
    opacity: float = 0.5
    clip_length: int | None = None  # None: whole video at once (Ref-YouTube-VOS); 24: MeViS-style clips
    view_height: int = 360  # height of each row of the per-frame prior views
    max_side: int | None = DEFAULT_MAX_SIDE  # longer frame side after decoding (larger frames are downscaled)
    max_duration_s: float | None = None  # refuse (before decoding) a part to process longer than this


def window_seconds(duration_s: float, start_s: float | None, end_s: float | None) -> float:
    """Length of the part of a ``duration_s`` video between ``start_s`` and ``end_s`` (None: the ends)."""
    end = duration_s if end_s is None else min(end_s, duration_s)
    return max(0.0, end - (start_s or 0.0))


def too_long_message(window_s: float, limit_s: float, whole: bool) -> str:
    what = "The video is" if whole else "The part to process is"
    return (
        f"{what} {window_s:.0f} s long; at most {limit_s:g} s are processed in one run. Trim it to a window "
        f"of at most {limit_s:g} s (start and end times), and lower the frame rate to keep the run short."
    )


def check_duration(duration_s: float, options: SegmentOptions) -> None:
    """Raise :class:`ClipTooLongError` when the part ``options`` select is longer than allowed."""
    if options.max_duration_s is None:
        return
    window = window_seconds(duration_s, options.start_s, options.end_s)
    if window > options.max_duration_s + 1e-6:
        whole = options.start_s is None and options.end_s is None
        raise ClipTooLongError(too_long_message(window, options.max_duration_s, whole))


def load_clip(path: str | os.PathLike, options: SegmentOptions) -> Clip:
    """Decode the part of the video that ``options`` selects (raises ``VideoReadError`` with advice).

    Raises:
        ClipTooLongError: the part to process is longer than ``options.max_duration_s`` (checked from the
            metadata, before decoding anything).
    """
    if options.max_duration_s is not None:
        check_duration(probe_video(path).duration_s, options)
    return read_video(
        path,
        start_s=options.start_s,
        end_s=options.end_s,
        fps=options.fps,
        max_frames=options.max_frames,
        max_side=options.max_side,
    )
