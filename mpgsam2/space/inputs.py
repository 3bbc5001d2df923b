"""Input checks: the raw form values to a checked :class:`Job`, or :class:`InputError` naming every field to
change. The video is probed (cheap: no decoding) and the frames to process estimated, so impossible or
too-large requests are refused before any GPU time is spent.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ..datasets.layouts import default_clip_length
from ..expressions import ExpressionError, clean_expressions
from ..pipeline.clips import ClipTooLongError, SegmentOptions, check_duration
from ..video_io import VideoInfo, VideoReadError, fit_within, probe_video
from . import limits
from .estimates import (
    Job,
    TimingLog,
    describe_estimate,
    gpu_duration,
    gpu_seconds_needed,
    max_frames_within,
)
from .limits import DEFAULT_MAX_FRAMES, MAX_EXPRESSION_CHARS, MAX_EXPRESSIONS, MAX_FRAMES
from .points import PointError, parse_points


class InputError(ValueError):
    """Form values that cannot run; ``problems`` maps each field to change to a message saying how.

    Messages never repeat the user's expressions: they are shown where text could be read as markup.
    """

    def __init__(self, problems: Mapping[str, str]):
        self.problems = dict(problems)
        super().__init__(" ".join(self.problems.values()))


def without_paths(message: str, path: str | os.PathLike | None) -> str:
    """``message`` with the upload's path and file name replaced by neutral words.

    Upload names are chosen by users; error messages are shown where text may be read as markup, so they
    must not carry the name back.
    """
    if path is None:
        return message
    p = Path(path)
    for text, neutral in ((str(p.resolve()), "the uploaded file"), (str(p), "the uploaded file")):
        message = message.replace(text, neutral)
    if p.name:
        message = message.replace(f"'{p.name}'", "the uploaded file").replace(p.name, "the uploaded file")
    return message[:1].upper() + message[1:]


def parse_expressions(text: str | Sequence[str] | None) -> list[str]:
    """Expressions from a text box (one per line) or a list, by the library's one rule
    (:func:`mpgsam2.expressions.clean_expressions`), within the app's own limits.

    Raises:
        InputError: none given, more than :data:`MAX_EXPRESSIONS`, one too long, or one repeated.
    """
    try:
        expressions = clean_expressions(text, max_count=MAX_EXPRESSIONS)
    except ExpressionError as error:
        raise InputError({"expressions": str(error)}) from None
    for number, expression in enumerate(expressions, 1):
        if len(expression) > MAX_EXPRESSION_CHARS:
            raise InputError(
                {
                    "expressions": f"Expression {number} is {len(expression)} characters long; shorten it to "
                    f"at most {MAX_EXPRESSION_CHARS}."
                }
            )
    return expressions


def _number(value: Any, name: str, label: str, problems: dict[str, str]) -> float | None:
    """A finite float, None for empty values; records a problem for anything else."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        problems[name] = f"The {label} must be a number."
        return None
    if not math.isfinite(number):
        problems[name] = f"The {label} must be a finite number."
        return None
    return number


def segment_options(
    start_s: Any = None,
    end_s: Any = None,
    fps: Any = None,
    max_frames: Any = DEFAULT_MAX_FRAMES,
    opacity: Any = 0.5,
) -> SegmentOptions:
    """:class:`SegmentOptions` from form values, where 0 or empty means "not set" for every field but opacity:
    start 0 = the beginning, end 0 = the end of the video, fps 0 = the source rate, frame cap 0 = the largest
    allowed (:data:`MAX_FRAMES`).

    Raises:
        InputError: for every value out of range, with the field to change.
    """
    problems: dict[str, str] = {}
    start = _number(start_s, "start_s", "trim start", problems)
    end = _number(end_s, "end_s", "trim end", problems)
    rate = _number(fps, "fps", "frame rate", problems)
    cap = _number(max_frames, "max_frames", "maximum number of frames", problems)
    alpha = _number(opacity, "opacity", "mask opacity", problems)
    if start is not None and start < 0:
        problems["start_s"] = "The trim start must be 0 s or later."
    if end is not None and end < 0:
        problems["end_s"] = "The trim end must be 0 (the end of the video) or a positive time."
    if start and end and end <= start:
        problems["end_s"] = f"The trim end ({end:g} s) must be after the trim start ({start:g} s)."
    if rate is not None and rate < 0:
        problems["fps"] = "The frame rate must be positive, or 0 for the video's own rate."
    if cap is not None and (cap < 0 or cap != int(cap)):
        problems["max_frames"] = (
            f"The maximum number of frames must be a whole number from 1 to {MAX_FRAMES}."
        )
    elif cap is not None and cap > MAX_FRAMES:
        problems["max_frames"] = (
            f"At most {MAX_FRAMES} frames run at once; lower the maximum number of frames."
        )
    if alpha is None:
        alpha = 0.5
    elif not 0.0 <= alpha <= 1.0:
        problems["opacity"] = "The mask opacity must be between 0 and 1."
    if problems:
        raise InputError(problems)
    return SegmentOptions(
        start_s=start or None,
        end_s=end or None,
        fps=rate or None,
        max_frames=int(cap) if cap else MAX_FRAMES,
        opacity=float(alpha),
        max_side=limits.MAX_SIDE or None,
        max_duration_s=limits.MAX_CLIP_SECONDS or None,
    )


@functools.lru_cache(maxsize=64)
def _probe_cached(path: str, size: int, mtime_ns: int) -> VideoInfo:
    return probe_video(path)


def probe(path: str | os.PathLike) -> VideoInfo:
    """``probe_video`` with a small cache keyed by path, size and modification time (the estimate re-reads
    the same upload on every form change)."""
    p = Path(path)
    if not p.exists():
        raise VideoReadError(f"Could not find '{p.name}'. Upload the video again.")
    stat = p.stat()
    return _probe_cached(str(p), stat.st_size, stat.st_mtime_ns)


def estimate_frames(info: VideoInfo, options: SegmentOptions) -> int:
    """How many frames ``read_video`` will keep for ``options``, from the nominal timestamps ``i / fps``.

    Exact for constant-frame-rate files starting at 0 s (the usual case); a close estimate otherwise.

    Raises:
        InputError: the trim window holds no frame (start at or after the end of the video).
    """
    stamps = np.arange(info.num_frames, dtype=np.float64) / info.fps
    keep = np.ones(info.num_frames, dtype=bool)
    eps = 1e-6
    if options.start_s is not None:
        keep &= stamps >= options.start_s - eps
    if options.end_s is not None:
        keep &= stamps < options.end_s - eps
    kept = stamps[keep]
    if kept.size == 0:
        raise InputError(
            {
                "start_s": f"The trim window holds no frame: the video is {info.duration_s:.2f} s long. "
                f"Choose a start before {info.duration_s:.2f} s."
            }
        )
    if options.fps is not None and options.fps < info.fps:
        # The first frame of each 1/fps bucket, counted from the first kept frame (as read_video does).
        buckets = np.floor((kept - kept[0]) * options.fps + 1e-4)
        count = int(np.unique(buckets).size)
    else:
        count = int(kept.size)
    if options.max_frames is not None:
        count = min(count, options.max_frames)
    return count


def plan_job(
    video: str | os.PathLike | None,
    expressions: str | Sequence[str] | None,
    model: str,
    start_s: Any = None,
    end_s: Any = None,
    fps: Any = None,
    max_frames: Any = DEFAULT_MAX_FRAMES,
    opacity: Any = 0.5,
    points: str | None = None,
    *,
    models: Sequence[str] | None = None,
    max_gpu_seconds: float | None = None,
    timings: TimingLog | None = None,
) -> Job:
    """Check every form value and describe the run, or raise :class:`InputError` listing what to change.

    Args:
        video: path of the uploaded video (or a frame zip / image, as ``read_video`` accepts).
        expressions: one per line, or a list.
        model: a model name offered by the app.
        points: clicks that correct expressions, one per line: ``EXPRESSION:FRAME:X,Y`` (``:neg`` for "not
            here"), in the processed frames' indices and pixels.
        models: the model names the app offers (any name when None).
        max_gpu_seconds: on ZeroGPU, refuse runs whose GPU reservation would exceed this.
        timings: measured speeds that refine the GPU estimate.
    """
    problems: dict[str, str] = {}
    texts: list[str] = []
    try:
        texts = parse_expressions(expressions)
    except InputError as error:
        problems.update(error.problems)
    if models is not None and model not in models:
        problems["model"] = f"Choose one of the models offered: {', '.join(models)}."
    options: SegmentOptions | None = None
    try:
        options = segment_options(start_s, end_s, fps, max_frames, opacity)
    except InputError as error:
        problems.update(error.problems)
    info: VideoInfo | None = None
    if video is None or not str(video).strip():
        problems["video"] = "Upload a video (mp4, webm, mov, mkv, avi or gif) first."
    else:
        try:
            info = probe(video)
        except VideoReadError as error:
            problems["video"] = without_paths(str(error), video)
    if problems or info is None or options is None:
        raise InputError(problems or {"video": "Upload a video first."})

    frames = estimate_frames(info, options)  # raises InputError for an empty trim window
    try:
        check_duration(info.duration_s, options)
    except ClipTooLongError as error:
        raise InputError({"end_s": str(error)}) from None
    if model == "mevis":
        options = replace(options, clip_length=default_clip_length("mevis"))
    width, height = fit_within(info.width, info.height, options.max_side)
    try:
        clicks = parse_points(points, texts, frames, width, height)
    except PointError as error:
        raise InputError({"points": str(error)}) from None
    if clicks and options.clip_length is not None:
        raise InputError(
            {
                "points": f"The {model} model tracks in separate clips of {options.clip_length} frames, and "
                "points correct one whole track: remove the points, or choose another model to correct a "
                "target."
            }
        )
    job = Job(
        video=str(video),
        expressions=tuple(texts),
        model=model,
        options=options,
        frames=frames,
        width=width,
        height=height,
        source_fps=info.fps,
        has_audio=info.has_audio,
        clicks=clicks,
    )
    if job.memory_bytes > limits.MEMORY_BUDGET_BYTES:
        gib = job.memory_bytes / 1024**3
        raise InputError(
            {
                "max_frames": f"{frames} frames of {width}x{height} with {len(texts)} expression(s) "
                f"need about {gib:.1f} GiB of memory (at most {limits.MEMORY_BUDGET_BYTES / 1024**3:.0f}); lower "
                "the maximum number of frames or the frame rate, or trim the video."
            }
        )
    if max_gpu_seconds is not None:
        needed = gpu_seconds_needed(job, timings)
        if needed > max_gpu_seconds:
            fitting = max_frames_within(job, max_gpu_seconds, timings)
            raise InputError(
                {
                    "max_frames": f"{frames} frames x {len(texts)} expression(s) would need about "
                    f"{needed:.0f} s of GPU time, more than the {max_gpu_seconds:.0f} s a run may take here. "
                    f"Lower the maximum number of frames to {fitting} or less, lower the frame rate, trim "
                    "the video or use fewer expressions."
                }
            )
    return job


def estimate_line(
    video: str | os.PathLike | None,
    expressions: str | Sequence[str] | None,
    model: str,
    start_s: Any = None,
    end_s: Any = None,
    fps: Any = None,
    max_frames: Any = DEFAULT_MAX_FRAMES,
    *,
    device_kind: str,
    device_label: str,
    timings: TimingLog | None = None,
    models: Sequence[str] | None = None,
    max_gpu_seconds: float | None = None,
) -> str:
    """The estimate shown before a run (plain text): the work, the expected time, the GPU reservation on
    ZeroGPU, or what to change first."""
    if video is None or not str(video).strip():
        return "Upload a video to see how much work it is."
    try:
        texts = parse_expressions(expressions)
    except InputError:
        texts = []
    try:
        job = plan_job(
            video,
            texts or ["(no expression yet)"],
            model,
            start_s,
            end_s,
            fps,
            max_frames,
            models=models,
            max_gpu_seconds=max_gpu_seconds,
            timings=timings,
        )
    except InputError as error:
        return "To change before running: " + " ".join(error.problems.values())
    if not texts:
        return f"{job.frames} frames selected at {job.width}x{job.height}; type at least one expression."
    line = describe_estimate(job, device_kind, device_label, timings)
    if max_gpu_seconds is not None:
        line += f" ZeroGPU reserves {gpu_duration(job, timings, max_gpu_seconds)} s for it."
    return line
