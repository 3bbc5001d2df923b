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
from .video_io import Clip, read_video, write_video

logger = logging.getLogger(__name__)

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

    def no_match_messages(self) -> list[str]:
        return [f'No match for "{s.expression}" in any frame.' for s in self.summaries if s.no_match]


@dataclass(frozen=True)
class FrameDone:
    """One frame finished by :func:`iter_segment_video`."""

    frame_index: int  # position in the decoded clip
    done: int  # frames finished so far, this one included
    total: int  # frames in the clip
    prior_view: Path  # [frame | prior heat map | final mask] per expression, already written


def load_clip(path: str | os.PathLike, options: SegmentOptions) -> Clip:
    """Decode the part of the video that ``options`` selects (raises ``VideoReadError`` with advice)."""
    return read_video(
        path, start_s=options.start_s, end_s=options.end_s, fps=options.fps, max_frames=options.max_frames
    )


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
    folder = Path(out_dir)
    (folder / "priors").mkdir(parents=True, exist_ok=True)
    num_frames, height, width = clip.num_frames, clip.height, clip.width
    colors = [render.color_for(k, len(texts)) for k in range(len(texts))]

    masks = np.zeros((len(texts), num_frames, height, width), dtype=bool)
    scores = np.zeros((len(texts), num_frames), dtype=np.float32)
    prior_views: list[Path] = []
    done = 0
    results = predictor.iter_segment(clip.frames, texts, clip_length=options.clip_length)
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
            yield FrameDone(frame_index=t, done=done, total=num_frames, prior_view=view)
            if done < num_frames and should_stop is not None and should_stop():
                logger.info("stopped after %d of %d frames", done, num_frames)
                break
    finally:
        close = getattr(results, "close", None)
        if close is not None:
            close()

    stopped = done < num_frames
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
    outputs = _write_exports(folder, clip, texts, colors, masks, scores, overlay_video, prior_views)
    yield replace(outputs, frames_requested=num_frames, stopped=stopped, seconds=time.monotonic() - started)


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
