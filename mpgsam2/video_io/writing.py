"""Writing browser-friendly H.264 MP4s (with a trimmed window of another file's audio), and checking them."""

from __future__ import annotations

import logging
import math
import os
import subprocess
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from .ffmpeg import (
    DEMUXER_WHITELIST,
    clockwise_rotation,
    ffmpeg_exe,
    ffmpeg_input_url,
    ffmpeg_problem,
    fps_fraction,
    input_args,
    last_frame_count,
    not_a_video,
    parse_header,
    run_ffmpeg,
    snap_fps,
)
from .reading import probe_video
from .types import VideoReadError, VideoWriteError

logger = logging.getLogger(__name__)


def _as_rgb_frame(frame: np.ndarray) -> np.ndarray:
    arr = np.asarray(frame)
    if arr.dtype != np.uint8:
        raise ValueError(f"frames must be uint8, got {arr.dtype}")
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ValueError(f"frames must be (H, W, 3) RGB, got shape {arr.shape}")
    return arr[:, :, :3]


def _even_pad(frame: np.ndarray) -> np.ndarray:
    """Pad odd heights/widths by repeating the last row/column: yuv420p needs even dimensions."""
    h, w = frame.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return np.ascontiguousarray(frame)
    return np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")


def _iter_frames(frames: Iterable[np.ndarray] | np.ndarray) -> Iterator[np.ndarray]:
    if isinstance(frames, np.ndarray):
        if frames.ndim not in (3, 4):
            raise ValueError(f"a frame array must be (T, H, W, 3), got shape {frames.shape}")
        yield from frames
    else:
        yield from frames


def _temp_sibling(path: Path, tag: str) -> Path:
    # Same folder as the destination so that the final os.replace is an atomic rename.
    return path.with_name(f".{path.stem}.{tag}.{uuid.uuid4().hex[:8]}.partial{path.suffix or '.mp4'}")


def write_video(
    path: str | os.PathLike[str],
    frames: Iterable[np.ndarray] | np.ndarray,
    fps: float,
    audio_from: str | os.PathLike[str] | None = None,
    audio_start_s: float = 0.0,
    audio_end_s: float | None = None,
    *,
    crf: int = 20,
    preset: str = "medium",
) -> Path:
    """Encode frames to an H.264 (libx264, yuv420p, ``+faststart``) MP4 that browsers play.

    Args:
        path: destination; written atomically (a temporary sibling renamed at the end), so a failure leaves
            nothing half-written.
        frames: ``(T, H, W, 3)`` uint8 array or any iterable of ``(H, W, 3)`` uint8 frames (streamed: only one
            frame is held at a time). Odd sizes are padded by one edge-replicated row/column.
        fps: output frame rate.
        audio_from: a file whose audio (if it has any) is copied into the output, re-encoded to AAC.
        audio_start_s: start of the audio window in ``audio_from``, seconds (the trim start of the clip).
        audio_end_s: end of that window; ``None`` means as long as the video. The audio never runs past the
            last video frame.
        crf, preset: libx264 quality and speed.

    Returns:
        The destination path.

    Raises:
        ValueError: no frames, or frames of the wrong dtype/shape/size.
        VideoWriteError: ffmpeg failed.
    """
    if not (fps > 0 and math.isfinite(fps)):
        raise ValueError(f"fps must be positive, got {fps}")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    video_tmp = _temp_sibling(out, "video")
    final_tmp: Path | None = None
    try:
        count = _encode_video(video_tmp, frames, fps, crf, preset)
        source_audio = _has_audio(Path(audio_from)) if audio_from is not None else False
        if source_audio:
            assert audio_from is not None
            duration = count / fps
            if audio_end_s is not None:
                duration = min(duration, max(0.0, audio_end_s - audio_start_s))
            final_tmp = _temp_sibling(out, "mux")
            if _mux_audio(video_tmp, Path(audio_from), audio_start_s, duration, final_tmp):
                os.replace(final_tmp, out)
                final_tmp = None
                return out
        os.replace(video_tmp, out)
        return out
    finally:
        for leftover in (video_tmp, final_tmp):
            if leftover is not None and leftover.exists():
                leftover.unlink()


def _has_audio(p: Path) -> bool:
    try:
        return probe_video(p).has_audio
    except VideoReadError as exc:
        logger.warning("not copying audio from %s: %s", p, exc)
        return False


def _encode_video(
    tmp: Path, frames: Iterable[np.ndarray] | np.ndarray, fps: float, crf: int, preset: str
) -> int:
    """Stream frames into libx264; return how many were written."""
    it = _iter_frames(frames)
    try:
        first = _even_pad(_as_rgb_frame(next(it)))
    except StopIteration:
        raise ValueError("write_video needs at least one frame") from None
    h, w = first.shape[:2]
    rate = fps_fraction(fps)
    cmd = [
        ffmpeg_exe(),
        "-hide_banner",
        "-nostdin",
        "-loglevel",
        "error",
        "-y",
        "-f",
        "rawvideo",
        "-pix_fmt",
        "rgb24",
        "-s",
        f"{w}x{h}",
        "-framerate",
        f"{rate.numerator}/{rate.denominator}",
        "-i",
        "pipe:0",
        "-an",
        "-c:v",
        "libx264",
        "-preset",
        preset,
        "-crf",
        str(crf),
        "-pix_fmt",
        "yuv420p",
        "-movflags",
        "+faststart",
        "-f",
        "mp4",
        str(tmp),
    ]
    # stderr goes to a file, not a pipe: a pipe nobody reads could fill up and stall ffmpeg.
    with tempfile.TemporaryFile() as errfile:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=errfile)
        assert proc.stdin is not None
        count = 0
        try:
            frame = first
            while True:
                if frame.shape[:2] != (h, w):
                    raise ValueError(f"frame {count} is {frame.shape[1]}x{frame.shape[0]}, expected {w}x{h}")
                proc.stdin.write(frame.tobytes())
                count += 1
                try:
                    frame = _even_pad(_as_rgb_frame(next(it)))
                except StopIteration:
                    break
            proc.stdin.close()
            rc = proc.wait()
        except BrokenPipeError:
            rc = proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        errfile.seek(0)
        err = errfile.read().decode("utf-8", errors="replace")
    if rc != 0:
        raise VideoWriteError(f"ffmpeg failed to encode the video (exit {rc}): {err.strip()[-2000:]}")
    logger.debug("encoded %d frames at %s fps into %s", count, rate, tmp)
    return count


def _mux_audio(video: Path, source: Path, start_s: float, duration_s: float, out: Path) -> bool:
    """Copy the video stream and add ``source``'s audio window; return False (and log) if that fails."""
    args = [
        "-loglevel",
        "error",
        "-y",
        "-i",
        str(video),
        *(["-ss", f"{start_s:.6f}"] if start_s > 0 else []),
        "-t",
        f"{duration_s:.6f}",
        "-format_whitelist",
        DEMUXER_WHITELIST,
        "-protocol_whitelist",
        "file",
        "-i",
        ffmpeg_input_url(source),
        "-map",
        "0:v:0",
        "-map",
        "1:a:0?",
        "-c:v",
        "copy",
        "-c:a",
        "aac",
        "-b:a",
        "128k",
        "-movflags",
        "+faststart",
        "-f",
        "mp4",
        str(out),
    ]
    res = run_ffmpeg(args)
    if res.returncode != 0:
        logger.warning(
            "could not copy the audio of %s; writing the video without sound: %s",
            source,
            res.stderr.decode("utf-8", errors="replace").strip()[-500:],
        )
        return False
    return True


# --------------------------------------------------------------------------------------------------------------
# Checking outputs


def ffprobe_summary(path: str | os.PathLike[str]) -> dict[str, object]:
    """Describe a video file the way ``ffprobe`` would, using ``ffmpeg -i`` and a full decode.

    Returns:
        ``{"codec", "pix_fmt", "fps", "width", "height", "num_frames", "has_audio", "audio_codec",
        "duration_s", "rotation", "format"}``; ``num_frames`` counts decoded frames (exact), ``width`` and
        ``height`` are the stored (unrotated) size.

    Raises:
        VideoReadError: the file is not a video.
    """
    p = Path(path)
    res = run_ffmpeg(
        [
            "-loglevel",
            "info",
            *input_args(p),
            "-map",
            "0:V:0?",
            "-fps_mode",
            "passthrough",
            "-f",
            "null",
            "-",
        ],
        timeout_s=600.0,
    )
    text = res.stderr.decode("utf-8", errors="replace").replace("\r", "\n")
    header = parse_header(text)
    if header.format_name is None or header.video is None:
        raise not_a_video(p, ffmpeg_problem(text))
    v = header.video
    fps = v.fps or v.tbr
    return {
        "format": header.format_name,
        "codec": v.codec,
        "pix_fmt": v.pix_fmt,
        "fps": snap_fps(fps) if fps else None,
        "width": v.width,
        "height": v.height,
        "num_frames": last_frame_count(text) or 0,
        "has_audio": header.has_audio,
        "audio_codec": header.audio_codec,
        "duration_s": header.duration_s,
        "rotation": clockwise_rotation(v.ccw_rotation),
    }
