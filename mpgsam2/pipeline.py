"""A video file and expressions in, every output on disk: the library path shared by the CLI and the app.

decode (trim, fps, frame cap) -> VideoPredictor (SAM 2 features shared by all expressions, results streamed
frame by frame) -> overlay video with the source audio, prior views, presence timeline, palette PNG zip,
COCO RLE JSON, per-expression mask PNGs, a summary, and one zip bundling the downloads.

:func:`iter_segment_video` reports each finished frame as it goes (with its prior view on disk, so a user
interface can show it at once) and can stop early: the outputs then cover the frames finished so far.
:func:`segment_video` is the same run for callers that only want the outputs.
"""

from __future__ import annotations

import json
import logging
import os
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
from PIL import Image

from . import export, render
from .video_io import Clip, VideoReadError, probe_video, read_video, write_video

logger = logging.getLogger(__name__)

#: Frames whose longer side exceeds this are downscaled while decoding (8K phone clips would need gigabytes).
DEFAULT_MAX_SIDE = 1920


class ClipTooLongError(VideoReadError):
    """The part of the video to process is longer than ``SegmentOptions.max_duration_s``."""


class RunInterrupted(RuntimeError):
    """The model's loop failed part-way; ``outputs`` (when not None) are complete outputs for the frames
    finished before the failure (``outputs.stopped`` is True)."""

    def __init__(self, message: str, outputs: SegmentOutputs | None = None):
        super().__init__(message)
        self.outputs = outputs

    def __reduce__(self):  # picklable across processes (ZeroGPU workers), outputs included
        return (type(self), (str(self), self.outputs))


class RunOutOfMemory(RunInterrupted):
    """The device ran out of memory; its cache was freed and the message says what to reduce."""


ProgressFn = Callable[[int, int], None]
StopFn = Callable[[], bool]


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


@dataclass(frozen=True)
class ExpressionSummary:
    expression: str
    color: tuple[int, int, int]
    frames_with_object: int  # frames whose object score is > 0
    frames_with_mask: int  # frames with at least one mask pixel
    first_visible_s: float | None
    last_visible_s: float | None
    mean_area_percent: float  # over the frames with a mask
    # Time spans (start, end) in seconds where the expression has no mask: hidden, not yet in view, or gone.
    # A span ends where the next frame starts (the last one: one frame period after its last frame).
    absent_spans_s: tuple[tuple[float, float], ...] = ()

    @property
    def no_match(self) -> bool:
        return self.frames_with_mask == 0


@dataclass(frozen=True)
class SegmentOutputs:
    """Paths of everything a run wrote, and what it found."""

    folder: Path
    overlay_video: Path
    prior_views: list[Path]  # one image per frame: [frame | prior heat map | final mask] per expression
    timeline_png: Path
    palette_zip: Path
    rle_json: Path
    masks_dir: Path
    summary_json: Path
    bundle_zip: Path
    num_frames: int
    fps: float
    width: int
    height: int
    expressions: list[str]
    summaries: list[ExpressionSummary] = field(default_factory=list)
    frames_requested: int = 0  # frames selected by the options; more than num_frames when stopped early
    stopped: bool = False  # True when the run stopped early; the outputs cover the first num_frames frames
    seconds: float = 0.0  # wall time of the run: decoding, the model, rendering and every export
    # Things the user should know: frames downscaled, expressions cut or made of unknown words, a run
    # interrupted part-way. Plain text; expressions appear verbatim (never render these as markup).
    warnings: tuple[str, ...] = ()
    source_width: int = 0  # the video's own size (larger than width x height when downscaled)
    source_height: int = 0

    def no_match_messages(self) -> list[str]:
        return [f'No match for "{s.expression}" in any frame.' for s in self.summaries if s.no_match]


@dataclass(frozen=True)
class FrameDone:
    """One frame finished by :func:`iter_segment_video`."""

    frame_index: int  # position in the decoded clip
    done: int  # frames finished so far, this one included
    total: int  # frames in the clip
    prior_view: Path  # [frame | prior heat map | final mask] per expression, already written
    # This frame's results, so that a caller in another process (ZeroGPU) can still write the outputs of the
    # frames done when the run is cut off (see :func:`outputs_from_frames`).
    masks: np.ndarray | None = None  # (K, H, W) bool
    object_scores: np.ndarray | None = None  # (K,) float32


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


def load_clip(path: str | os.PathLike, options: SegmentOptions) -> Clip:
    """Decode the part of the video that ``options`` selects (raises ``VideoReadError`` with advice).

    Raises:
        ClipTooLongError: the part to process is longer than ``options.max_duration_s`` (checked from the
            metadata, before decoding anything).
    """
    if options.max_duration_s is not None:
        info = probe_video(path)
        window = window_seconds(info.duration_s, options.start_s, options.end_s)
        if window > options.max_duration_s + 1e-6:
            whole = options.start_s is None and options.end_s is None
            raise ClipTooLongError(too_long_message(window, options.max_duration_s, whole))
    return read_video(
        path,
        start_s=options.start_s,
        end_s=options.end_s,
        fps=options.fps,
        max_frames=options.max_frames,
        max_side=options.max_side,
    )


def is_out_of_memory(error: BaseException) -> bool:
    """True for CUDA's ``OutOfMemoryError`` and the plain out-of-memory errors of other devices (MPS)."""
    try:
        import torch

        if isinstance(error, torch.cuda.OutOfMemoryError):
            return True
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()


def free_device_memory() -> None:
    """Give the memory cached by torch back to the device after a failed run."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    mps = getattr(torch, "mps", None)
    if mps is not None and torch.backends.mps.is_available():
        mps.empty_cache()


def expression_warnings(predictor, texts: list[str]) -> list[str]:
    """What the tokenizer had to do to each expression: cut one longer than BEiT-3's text positions, or
    find no known word in it (the model then sees only the image). Empty for predictors without one."""
    tokenizer = getattr(predictor, "tokenizer", None)
    if tokenizer is None:
        return []
    warnings = []
    for number, text in enumerate(texts, 1):
        encoded = tokenizer.encode(text)
        if encoded.truncated:
            warnings.append(
                f"Expression {number} is longer than the {tokenizer.max_tokens} tokens the model reads; only "
                "its beginning was used. Shorten it."
            )
        if encoded.unknown_only:
            warnings.append(
                f"Expression {number} has no word the model knows; it segmented from the image alone. "
                "Rephrase it in plain words."
            )
    return warnings


def _prior_view_row(frame: np.ndarray, prior: np.ndarray, mask: np.ndarray, color, height: int) -> np.ndarray:
    """[frame | prior heat map | final mask] at ``height`` pixels."""
    scale = height / frame.shape[0]
    size = (max(2, round(frame.shape[1] * scale)), height)
    small = np.asarray(Image.fromarray(frame).resize(size, Image.BILINEAR))
    small_mask = np.asarray(Image.fromarray(mask).resize(size, Image.NEAREST))
    return np.concatenate([small, render.prior_view(small, prior, small_mask, color)], axis=1)


def segment_video(
    predictor,
    video: str | os.PathLike,
    expressions: list[str],
    out_dir: str | os.PathLike,
    options: SegmentOptions | None = None,
    progress: ProgressFn | None = None,
    clip: Clip | None = None,
    should_stop: StopFn | None = None,
) -> SegmentOutputs:
    """Run MPG-SAM 2 on a video file and write every output into ``out_dir``.

    Args:
        predictor: a :class:`mpgsam2.VideoPredictor`.
        video: the source file (its audio is copied onto the overlay video).
        expressions: referring expressions; blank ones are dropped.
        progress: called as ``progress(frames_done, total_frames)``.
        clip: frames already decoded with :func:`load_clip` (skips decoding again).
        should_stop: polled after each frame; when it returns True the run stops and writes the outputs of
            the frames finished so far (see :func:`iter_segment_video`).
    """
    for event in iter_segment_video(predictor, video, expressions, out_dir, options, clip, should_stop):
        if isinstance(event, SegmentOutputs):
            return event
        if progress is not None:
            progress(event.done, event.total)
    raise RuntimeError("iter_segment_video ended without outputs")  # unreachable


def iter_segment_video(
    predictor,
    video: str | os.PathLike,
    expressions: list[str],
    out_dir: str | os.PathLike,
    options: SegmentOptions | None = None,
    clip: Clip | None = None,
    should_stop: StopFn | None = None,
) -> Iterator[FrameDone | SegmentOutputs]:
    """Run MPG-SAM 2 like :func:`segment_video`, yielding a :class:`FrameDone` per frame, then the outputs.

    The model's loop comes first (one prior view JPEG per frame, written before its ``FrameDone``); the
    overlay video and the exports are written after it from the masks kept in memory, so a run that stops
    early (``should_stop()`` returned True after some frame) still ends with complete, consistent outputs
    for the frames it finished, ``SegmentOutputs.stopped`` set. The last item is always the
    :class:`SegmentOutputs`. Closing the generator early writes nothing more.
    """
    from .predictor import clean_expressions

    started = time.monotonic()
    options = options or SegmentOptions()
    texts = clean_expressions(expressions)
    clip = clip if clip is not None else load_clip(video, options)
    notes = expression_warnings(predictor, texts)
    folder = Path(out_dir)
    (folder / "priors").mkdir(parents=True, exist_ok=True)
    num_frames, height, width = clip.num_frames, clip.height, clip.width
    colors = [render.color_for(k, len(texts)) for k in range(len(texts))]

    masks = np.zeros((len(texts), num_frames, height, width), dtype=bool)
    scores = np.zeros((len(texts), num_frames), dtype=np.float32)
    prior_views: list[Path] = []
    done = 0
    results = predictor.iter_segment(clip.frames, texts, clip_length=options.clip_length)
    failure: Exception | None = None
    try:
        for result in results:
            t = result.frame_index
            masks[:, t] = result.masks
            scores[:, t] = result.object_scores
            rows = [
                _prior_view_row(
                    clip.frames[t], result.priors[k], result.masks[k], colors[k], options.view_height
                )
                for k in range(len(texts))
            ]
            view = folder / "priors" / f"frame_{t:05d}.jpg"
            Image.fromarray(np.concatenate(rows, axis=0)).save(view, quality=88)
            prior_views.append(view)
            done += 1
            yield FrameDone(
                frame_index=t,
                done=done,
                total=num_frames,
                prior_view=view,
                masks=np.asarray(result.masks, dtype=bool),
                object_scores=np.asarray(result.object_scores, dtype=np.float32),
            )
            if done < num_frames and should_stop is not None and should_stop():
                logger.info("stopped after %d of %d frames", done, num_frames)
                break
    except Exception as error:  # the model failed part-way: keep what is done, then say what happened
        failure = error
    finally:
        close = getattr(results, "close", None)
        if close is not None:
            close()

    outputs = None
    if failure is not None:
        out_of_memory = is_out_of_memory(failure)
        if out_of_memory:
            free_device_memory()
        if done:
            notes.append(f"The run failed after {done} of {num_frames} frames; the results cover those.")
            outputs = _finish(video, folder, clip, texts, colors, masks, scores, prior_views, done, options)
            outputs = replace(
                outputs,
                frames_requested=num_frames,
                warnings=(*_clip_notes(clip), *notes),
                seconds=time.monotonic() - started,
            )
        kept = f" The outputs cover the first {done} frames." if done else ""
        if out_of_memory:
            raise RunOutOfMemory(
                f"Out of device memory after {done} of {num_frames} frames ({len(texts)} expression(s) at "
                f"{width}x{height}). Lower the maximum number of frames, the frame rate, the resolution "
                f"(max_side) or the number of expressions.{kept}",
                outputs,
            ) from failure
        raise RunInterrupted(
            f"The run failed after {done} of {num_frames} frames ({type(failure).__name__}: {failure}).{kept}",
            outputs,
        ) from failure

    outputs = _finish(video, folder, clip, texts, colors, masks, scores, prior_views, done, options)
    yield replace(
        outputs,
        frames_requested=num_frames,
        warnings=(*_clip_notes(clip), *notes),
        seconds=time.monotonic() - started,
    )


def _clip_notes(clip: Clip) -> list[str]:
    source = clip.source
    if (source.width, source.height) != (clip.width, clip.height) and source.width and source.height:
        return [
            f"Frames were downscaled from {source.width}x{source.height} to {clip.width}x{clip.height} "
            "while decoding."
        ]
    return []


def _finish(video, folder, clip, texts, colors, masks, scores, prior_views, done, options) -> SegmentOutputs:
    """The overlay video and every export for the first ``done`` frames (all of them when none is missing)."""
    stopped = done < clip.num_frames
    if stopped:
        # Frames come in order, so the finished ones are the first `done`.
        clip = replace(clip, frames=clip.frames[:done], timestamps_s=clip.timestamps_s[:done])
        masks, scores = masks[:, :done], scores[:, :done]

    def overlays() -> Iterator[np.ndarray]:
        for t in range(done):
            drawn = render.overlay_frame(clip.frames[t], list(masks[:, t]), colors, opacity=options.opacity)
            yield render.draw_legend(drawn, texts, colors) if len(texts) > 1 else drawn

    start = float(clip.timestamps_s[0]) if done else 0.0
    end = start + done / clip.fps
    overlay_video = write_video(
        folder / "overlay.mp4",
        overlays(),
        clip.fps,
        audio_from=video if clip.source.has_audio else None,
        audio_start_s=start,
        audio_end_s=end,
    )
    outputs = _write_exports(folder, clip, texts, colors, masks, scores, overlay_video, prior_views[:done])
    return replace(outputs, stopped=stopped, source_width=clip.source.width, source_height=clip.source.height)


def outputs_from_frames(
    video: str | os.PathLike,
    expressions: list[str],
    out_dir: str | os.PathLike,
    options: SegmentOptions,
    frames: list[FrameDone],
    frames_requested: int,
    reason: str,
    clip: Clip | None = None,
) -> SegmentOutputs | None:
    """Complete outputs for the frames a run finished before it was cut off elsewhere (a ZeroGPU worker
    past its duration): decodes the clip again and writes everything from the frames' masks. None when no
    frame has its masks. ``reason`` joins the warnings."""
    from .predictor import clean_expressions

    frames = [f for f in frames if f.masks is not None and f.object_scores is not None]
    if not frames:
        return None
    started = time.monotonic()
    texts = clean_expressions(expressions)
    clip = clip if clip is not None else load_clip(video, options)
    done = min(len(frames), clip.num_frames)
    first = frames[0].masks
    if first.shape[1:] != (clip.height, clip.width) or first.shape[0] != len(texts):
        logger.warning("the frames done do not match the clip; no partial outputs")
        return None
    masks = np.zeros((len(texts), clip.num_frames, clip.height, clip.width), dtype=bool)
    scores = np.zeros((len(texts), clip.num_frames), dtype=np.float32)
    for t, frame in enumerate(frames[:done]):
        masks[:, t] = frame.masks
        scores[:, t] = frame.object_scores
    colors = [render.color_for(k, len(texts)) for k in range(len(texts))]
    folder = Path(out_dir)
    views = [f.prior_view for f in frames[:done]]
    outputs = _finish(video, folder, clip, texts, colors, masks, scores, views, done, options)
    return replace(
        outputs,
        frames_requested=frames_requested,
        stopped=True,
        warnings=(*_clip_notes(clip), reason),
        seconds=time.monotonic() - started,
    )


def _absent_spans(visible: np.ndarray, timestamps: np.ndarray, fps: float) -> tuple[tuple[float, float], ...]:
    """(start, end) seconds of each run of frames where ``visible`` is False."""
    spans = []
    t = 0
    n = len(visible)
    while t < n:
        if visible[t]:
            t += 1
            continue
        first = t
        while t < n and not visible[t]:
            t += 1
        end = float(timestamps[t]) if t < n else float(timestamps[t - 1]) + 1.0 / fps
        spans.append((round(float(timestamps[first]), 3), round(end, 3)))
    return tuple(spans)


def _write_exports(folder, clip, texts, colors, masks, scores, overlay_video, prior_views) -> SegmentOutputs:
    timestamps = np.asarray(clip.timestamps_s, dtype=np.float64)
    areas = masks.reshape(len(texts), clip.num_frames, -1).mean(axis=2)
    timeline = folder / "timeline.png"
    render.presence_timeline_png(timeline, timestamps, list(scores), list(areas), texts, colors)
    names = [f"{t:05d}" for t in range(clip.num_frames)]
    palette_zip = export.save_palette_pngs_zip(folder / "masks_palette.zip", list(masks), frame_names=names)
    rle_json = export.save_coco_rle_json(
        folder / "masks_rle.json", list(masks), texts, timestamps, clip.fps, clip.width, clip.height
    )
    masks_dir = folder / "masks"
    export.save_binary_mask_pngs(masks_dir, list(masks), texts, frame_names=names)

    summaries = []
    for k, text in enumerate(texts):
        present = masks[k].any(axis=(1, 2))
        visible = np.flatnonzero(present)
        summaries.append(
            ExpressionSummary(
                expression=text,
                color=tuple(int(c) for c in colors[k]),
                frames_with_object=int((scores[k] > 0).sum()),
                frames_with_mask=int(len(visible)),
                first_visible_s=float(timestamps[visible[0]]) if len(visible) else None,
                last_visible_s=float(timestamps[visible[-1]]) if len(visible) else None,
                mean_area_percent=float(100 * areas[k][visible].mean()) if len(visible) else 0.0,
                absent_spans_s=_absent_spans(present, timestamps, clip.fps),
            )
        )
    summary_json = folder / "summary.json"
    summary = {
        "video": {"frames": clip.num_frames, "fps": clip.fps, "width": clip.width, "height": clip.height},
        "expressions": [asdict(s) | {"no_match": s.no_match} for s in summaries],
    }
    summary_json.write_text(json.dumps(summary, indent=2, ensure_ascii=False))
    bundle = folder / "mpgsam2_results.zip"
    with zipfile.ZipFile(bundle, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in (overlay_video, palette_zip, rle_json, timeline, summary_json):
            archive.write(path, Path(path).name)
    return SegmentOutputs(
        folder=folder,
        overlay_video=Path(overlay_video),
        prior_views=prior_views,
        timeline_png=timeline,
        palette_zip=Path(palette_zip),
        rle_json=Path(rle_json),
        masks_dir=masks_dir,
        summary_json=summary_json,
        bundle_zip=bundle,
        num_frames=clip.num_frames,
        fps=clip.fps,
        width=clip.width,
        height=clip.height,
        expressions=texts,
        summaries=summaries,
    )
