"""A video file and expressions in, every output on disk: the library path shared by the CLI and the app.

decode (trim, fps, frame cap) -> VideoPredictor (SAM 2 features shared by all expressions, results streamed
frame by frame) -> overlay video with the source audio, prior views, presence timeline, palette PNG zip,
COCO RLE JSON, per-expression mask PNGs, a summary, and one zip bundling the downloads.
"""

from __future__ import annotations

import json
import logging
import os
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from . import render
from .video_io import Clip, read_video, write_video

logger = logging.getLogger(__name__)

ProgressFn = Callable[[int, int], None]


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

    def no_match_messages(self) -> list[str]:
        return [f'No match for "{s.expression}" in any frame.' for s in self.summaries if s.no_match]


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
) -> SegmentOutputs:
    """Run MPG-SAM 2 on a video file and write every output into ``out_dir``.

    Args:
        predictor: a :class:`mpgsam2.VideoPredictor`.
        video: the source file (its audio is copied onto the overlay video).
        expressions: referring expressions; blank ones are dropped.
        progress: called as ``progress(frames_done, total_frames)``.
        clip: frames already decoded with :func:`load_clip` (skips decoding again).
    """
    from .predictor import clean_expressions

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

    def overlays() -> Iterator[np.ndarray]:
        results = predictor.iter_segment(clip.frames, texts, clip_length=options.clip_length)
        for done, result in enumerate(results, 1):
            t = result.frame_index
            masks[:, t] = result.masks
            scores[:, t] = result.object_scores
            frame = clip.frames[t]
            rows = [
                _prior_view_row(frame, result.priors[k], result.masks[k], colors[k], options.view_height)
                for k in range(len(texts))
            ]
            view = folder / "priors" / f"frame_{t:05d}.jpg"
            Image.fromarray(np.concatenate(rows, axis=0)).save(view, quality=88)
            prior_views.append(view)
            if progress is not None:
                progress(done, num_frames)
            drawn = render.overlay_frame(frame, list(result.masks), colors, opacity=options.opacity)
            yield render.draw_legend(drawn, texts, colors) if len(texts) > 1 else drawn

    start = float(clip.timestamps_s[0]) if num_frames else 0.0
    end = start + num_frames / clip.fps
    overlay_video = write_video(
        folder / "overlay.mp4",
        overlays(),
        clip.fps,
        audio_from=video if clip.source.has_audio else None,
        audio_start_s=start,
        audio_end_s=end,
    )
    return _write_exports(folder, clip, texts, colors, masks, scores, overlay_video, prior_views)


def _write_exports(folder, clip, texts, colors, masks, scores, overlay_video, prior_views) -> SegmentOutputs:
    timestamps = np.asarray(clip.timestamps_s, dtype=np.float64)
    areas = masks.reshape(len(texts), clip.num_frames, -1).mean(axis=2)
    timeline = folder / "timeline.png"
    render.presence_timeline_png(timeline, timestamps, list(scores), list(areas), texts, colors)
    names = [f"{t:05d}" for t in range(clip.num_frames)]
    palette_zip = render.save_palette_pngs_zip(folder / "masks_palette.zip", list(masks), frame_names=names)
    rle_json = render.save_coco_rle_json(
        folder / "masks_rle.json", list(masks), texts, timestamps, clip.fps, clip.width, clip.height
    )
    masks_dir = folder / "masks"
    render.save_binary_mask_pngs(masks_dir, list(masks), texts, frame_names=names)

    summaries = []
    for k, text in enumerate(texts):
        visible = np.flatnonzero(masks[k].any(axis=(1, 2)))
        summaries.append(
            ExpressionSummary(
                expression=text,
                color=tuple(int(c) for c in colors[k]),
                frames_with_object=int((scores[k] > 0).sum()),
                frames_with_mask=int(len(visible)),
                first_visible_s=float(timestamps[visible[0]]) if len(visible) else None,
                last_visible_s=float(timestamps[visible[-1]]) if len(visible) else None,
                mean_area_percent=float(100 * areas[k][visible].mean()) if len(visible) else 0.0,
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
