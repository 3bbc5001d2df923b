"""Plain-text result summaries and the API's JSON (expressions are never interpreted as markup)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..pipeline.outputs import SegmentOutputs
from .estimates import Job, format_seconds
from .limits import color_name


def _spans_text(spans: Sequence[Sequence[float]]) -> str:
    return ", ".join(f"{a:.2f}-{b:.2f} s" for a, b in spans)


def summary_text(outputs: SegmentOutputs, seconds: float | None = None, untrained: bool = False) -> str:
    """A plain-text report of a run: what was processed, then one paragraph per expression, including a
    clear "no match in any frame" line for expressions that found nothing."""
    count = len(outputs.expressions)
    head = f"{outputs.num_frames} frames x {count} expression{'s' if count != 1 else ''}"
    if seconds is not None:
        head += f" in {format_seconds(seconds)}"
    lines = [head + f" ({outputs.width}x{outputs.height}, {outputs.fps:.2f} fps)."]
    if outputs.stopped:
        lines.append(
            f"Stopped early: the results cover the first {outputs.num_frames} of {outputs.frames_requested} "
            "frames."
        )
    if untrained:
        lines.append("UNTRAINED TEST MODEL: random weights, these masks mean nothing.")
    lines.extend(outputs.warnings)
    for k, item in enumerate(outputs.summaries):
        name = color_name(k, count)
        if item.no_match:
            lines.append(f'[{name}] No match for "{item.expression}" in any frame.')
            continue
        assert item.first_visible_s is not None and item.last_visible_s is not None
        text = (
            f'[{name}] "{item.expression}": in {item.frames_with_mask} of {outputs.num_frames} frames, '
            f"from {item.first_visible_s:.2f} s to {item.last_visible_s:.2f} s, "
            f"{item.mean_area_percent:.1f}% of the frame on average"
        )
        if item.absent_spans_s:
            text += f"; not visible {_spans_text(item.absent_spans_s)}"
        lines.append(text + ".")
    if outputs.clicks:
        lines.append("Corrected with points: " + clicks_text(outputs.clicks, outputs.expressions) + ".")
    return "\n".join(lines)


def clicks_text(clicks: Sequence[dict], expressions: Sequence[str]) -> str:
    """``[blue] "the ball": frame 12 at (320, 180) +, frame 14 at (300, 170) -; ...`` (+ target, - not it)."""
    parts = []
    for k, text in enumerate(expressions):
        points = [c for c in clicks if c["expression"] == text]
        if points:
            listed = ", ".join(
                f"frame {c['frame']} at ({c['x']:.0f}, {c['y']:.0f}) {'+' if c['positive'] else '-'}"
                for c in points
            )
            parts.append(f'[{color_name(k, len(expressions))}] "{text}": {listed}')
    return "; ".join(parts)


def result_json(
    outputs: SegmentOutputs, job: Job, seconds: float, device_label: str, untrained: bool
) -> dict[str, Any]:
    """What the ``/segment`` API returns next to the files."""
    return {
        "model": job.model,
        "untrained": untrained,
        "device": device_label,
        "seconds": round(seconds, 2),
        "video": {
            "frames": outputs.num_frames,
            "frames_requested": outputs.frames_requested,
            "stopped": outputs.stopped,
            "fps": outputs.fps,
            "width": outputs.width,
            "height": outputs.height,
            "source_width": outputs.source_width,
            "source_height": outputs.source_height,
        },
        "expressions": [
            {
                "expression": item.expression,
                "color": list(item.color),
                "color_name": color_name(k, len(outputs.summaries)),
                "frames_with_mask": item.frames_with_mask,
                "frames_with_object": item.frames_with_object,
                "first_visible_s": item.first_visible_s,
                "last_visible_s": item.last_visible_s,
                "mean_area_percent": round(item.mean_area_percent, 3),
                "absent_spans_s": [list(span) for span in item.absent_spans_s],
                "no_match": item.no_match,
            }
            for k, item in enumerate(outputs.summaries)
        ],
        "clicks": list(outputs.clicks),
        "warnings": list(outputs.warnings),
        "messages": [*outputs.warnings, *outputs.no_match_messages()],
    }


def download_files(outputs: SegmentOutputs) -> list[str]:
    """The files offered for download, the bundle first."""
    return [
        str(outputs.bundle_zip),
        str(outputs.overlay_video),
        str(outputs.palette_zip),
        str(outputs.rle_json),
    ]
