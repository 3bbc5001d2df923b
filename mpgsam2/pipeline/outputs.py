"""Every output of a run, written from its :class:`~mpgsam2.pipeline.collector.RunResult`: the overlay video
with the source audio, the presence timeline, the mask exports, a summary and one zip bundling the downloads."""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .. import export, render
from ..timeline import presence_timeline_png
from ..video_io import write_video
from .collector import RunResult

BUNDLE_NAME = "mpgsam2_results.zip"


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
    # Things the user should know: frames downscaled or damaged, expressions cut or made of unknown words, a
    # run interrupted part-way. Plain text; expressions appear verbatim (never render these as markup).
    warnings: tuple[str, ...] = ()
    source_width: int = 0  # the video's own size (larger than width x height when downscaled)
    source_height: int = 0
    # The points that corrected expressions: {"expression", "frame", "x", "y", "positive"} each.
    clicks: tuple[dict, ...] = ()

    def no_match_messages(self) -> list[str]:
        return [f'No match for "{s.expression}" in any frame.' for s in self.summaries if s.no_match]


def absent_spans(visible: np.ndarray, timestamps: np.ndarray, fps: float) -> tuple[tuple[float, float], ...]:
    """(start, end) seconds of each run of frames where ``visible`` (T,) is False."""
    spans = []
    t, count = 0, len(visible)
    while t < count:
        if visible[t]:
            t += 1
            continue
        first = t
        while t < count and not visible[t]:
            t += 1
        end = float(timestamps[t]) if t < count else float(timestamps[t - 1]) + 1.0 / fps
        spans.append((round(float(timestamps[first]), 3), round(end, 3)))
    return tuple(spans)


def summarise(result: RunResult) -> list[ExpressionSummary]:
    """Per expression: frames with a mask or an object, first and last visible time, absent spans, area."""
    timestamps = np.asarray(result.clip.timestamps_s, dtype=np.float64)
    count = len(result.expressions)
    areas = result.masks.reshape(count, result.num_frames, -1).mean(axis=2)
    summaries = []
    for k, text in enumerate(result.expressions):
        present = result.masks[k].any(axis=(1, 2))
        visible = np.flatnonzero(present)
        summaries.append(
            ExpressionSummary(
                expression=text,
                color=tuple(int(c) for c in result.colors[k]),
                frames_with_object=int((result.object_scores[k] > 0).sum()),
                frames_with_mask=int(len(visible)),
                first_visible_s=float(timestamps[visible[0]]) if len(visible) else None,
                last_visible_s=float(timestamps[visible[-1]]) if len(visible) else None,
                mean_area_percent=float(100 * areas[k][visible].mean()) if len(visible) else 0.0,
                absent_spans_s=absent_spans(present, timestamps, result.clip.fps),
            )
        )
    return summaries


def write_outputs(
    result: RunResult, folder: str | os.PathLike, video: str | os.PathLike | None, opacity: float = 0.5
) -> SegmentOutputs:
    """Write every output of ``result`` into ``folder``.

    Args:
        video: the source file, whose audio is copied onto the overlay video (None: no audio).
        opacity: of the masks in the overlay video.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    clip, texts, colors = result.clip, list(result.expressions), list(result.colors)
    done = result.num_frames

    def overlays():
        for t in range(done):
            drawn = render.overlay_frame(clip.frames[t], list(result.masks[:, t]), colors, opacity=opacity)
            yield render.draw_legend(drawn, texts, colors) if len(texts) > 1 else drawn

    start = float(clip.timestamps_s[0]) if done else 0.0
    overlay_video = Path(
        write_video(
            folder / "overlay.mp4",
            overlays(),
            clip.fps,
            audio_from=video if video is not None and clip.source.has_audio else None,
            audio_start_s=start,
            audio_end_s=start + done / clip.fps,
        )
    )
    timestamps = np.asarray(clip.timestamps_s, dtype=np.float64)
    masks = list(result.masks)
    areas = [m.reshape(done, -1).mean(axis=1) for m in masks]
    timeline = folder / "timeline.png"
    presence_timeline_png(timeline, timestamps, list(result.object_scores), areas, texts, colors)
    names = [f"{t:05d}" for t in range(done)]
    palette_zip = Path(export.save_palette_pngs_zip(folder / "masks_palette.zip", masks, frame_names=names))
    rle_json = Path(
        export.save_coco_rle_json(
            folder / "masks_rle.json", masks, texts, timestamps, clip.fps, clip.width, clip.height
        )
    )
    masks_dir = folder / "masks"
    export.save_binary_mask_pngs(masks_dir, masks, texts, frame_names=names)

    summaries = summarise(result)
    clicks = tuple(
        {"expression": texts[k], **click.to_dict()}
        for k in sorted(result.clicks)
        for click in result.clicks[k]
    )
    summary_json = folder / "summary.json"
    summary = {
        "video": {"frames": done, "fps": clip.fps, "width": clip.width, "height": clip.height},
        "expressions": [asdict(s) | {"no_match": s.no_match} for s in summaries],
        "clicks": list(clicks),
        "warnings": list(result.notes),
    }
    summary_json.write_text(json.dumps(summary, indent=2, ensure_ascii=False))
    bundle = folder / BUNDLE_NAME
    with zipfile.ZipFile(bundle, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in (overlay_video, palette_zip, rle_json, timeline, summary_json):
            archive.write(path, path.name)
    return SegmentOutputs(
        folder=folder,
        overlay_video=overlay_video,
        prior_views=list(result.frame_views),
        timeline_png=timeline,
        palette_zip=palette_zip,
        rle_json=rle_json,
        masks_dir=masks_dir,
        summary_json=summary_json,
        bundle_zip=bundle,
        num_frames=done,
        fps=clip.fps,
        width=clip.width,
        height=clip.height,
        expressions=texts,
        summaries=summaries,
        frames_requested=result.frames_requested,
        stopped=result.stopped,
        warnings=result.notes,
        source_width=clip.source.width,
        source_height=clip.source.height,
        clicks=clicks,
    )
