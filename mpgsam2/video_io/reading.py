"""Reading: :func:`probe_video` and :func:`read_video` for every input, and decoding video files with ffmpeg."""

from __future__ import annotations

import dataclasses
import io
import logging
import math
import os
import queue
import re
import subprocess
import threading
import zipfile
from collections import deque
from fractions import Fraction
from pathlib import Path

import numpy as np

from .ffmpeg import (
    ffmpeg_exe,
    ffmpeg_problem,
    input_args,
    not_a_video,
    probe_file,
    truncated_error,
    truncation_line,
)
from .selection import FrameSelector, empty_window_error, fit_within, validate_read_args
from .sequences import probe_sequence, read_sequence
from .types import IMAGE_EXTENSIONS, SUPPORTED_HINT, Clip, VideoInfo, VideoReadError

logger = logging.getLogger(__name__)


def _is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def probe_video(path: str | os.PathLike[str]) -> VideoInfo:
    """Read a video's metadata (size after rotation, average fps, frame count, duration, audio, codec).

    Works for every input :func:`read_video` accepts; frame folders, zips and images report
    :data:`IMAGE_SEQUENCE_FPS` and no audio.

    Raises:
        VideoReadError: the path is missing or is not a readable video.
    """
    p = Path(path)
    if not p.exists():
        raise VideoReadError(f"Could not find '{p}'. Check the path, or upload the file again.")
    if p.is_dir() or _is_image_file(p) or zipfile.is_zipfile(p):
        return probe_sequence(p)
    return probe_file(p)


def read_video(
    path: str | os.PathLike[str],
    start_s: float | None = None,
    end_s: float | None = None,
    fps: float | None = None,
    max_frames: int | None = None,
    max_side: int | None = None,
) -> Clip:
    """Decode a video, a GIF, a folder or zip of frames, or a single image into upright RGB frames.

    Args:
        path: an mp4/webm/mov/mkv/avi/gif file, a still image (a one-frame clip), a folder of frames or a zip
            of frames (jpg/png, sorted by name in natural order: ``2.png`` before ``10.png``).
        start_s: keep frames whose timestamp is at or after this time (seconds from the start of the file).
        end_s: keep frames whose timestamp is before this time.
        fps: target frame rate; when lower than the source rate, frames are selected by timestamp (see
            :class:`FrameSelector`). Never invents frames: a higher target keeps every frame.
        max_frames: memory guard; stop after this many kept frames.
        max_side: memory guard for huge frames (8K phones): frames whose longer side exceeds this are
            downscaled (aspect kept, even sizes) while decoding. ``Clip.source`` keeps the original size.

    Returns:
        A :class:`Clip` with ``frames`` ``(T, H, W, 3)`` uint8 and ``timestamps_s`` ``(T,)`` float64.

    Raises:
        VideoReadError: not a video, truncated/corrupt, no frames, or a trim window that contains no frame.
    """
    validate_read_args(start_s, end_s, fps, max_frames)
    p = Path(path)
    if not p.exists():
        raise VideoReadError(f"Could not find '{p}'. Check the path, or upload the file again.")
    if max_side is not None and max_side < 2:
        raise VideoReadError(f"max_side must be at least 2 pixels, got {max_side}.")
    if p.is_dir() or _is_image_file(p) or zipfile.is_zipfile(p):
        clip = read_sequence(p, start_s, end_s, fps, max_frames, max_side)
    else:
        clip = _read_ffmpeg(p, start_s, end_s, fps, max_frames, max_side)
    source = clip.source
    if (source.width, source.height) != (clip.width, clip.height):
        downscaled = (
            f"Frames were downscaled from {source.width}x{source.height} to {clip.width}x{clip.height} "
            "while decoding."
        )
        clip = dataclasses.replace(clip, notes=(downscaled, *clip.notes))
    return clip


# --------------------------------------------------------------------------------------------------------------
# Decoding video files with ffmpeg


_SHOWINFO_RE = re.compile(r"\bn:\s*(\d+)\s+pts:\s*(\S+)\s+pts_time:(\S+).*?\bs:(\d+)x(\d+)")
_TIME_BASE_RE = re.compile(r"config in time_base:\s*(\d+)/(\d+)")


def _drain_stderr(stream: io.BufferedReader, frames_q: queue.Queue, log_tail: deque[str]) -> None:
    """Thread body: turn ffmpeg's showinfo lines into ``(n, seconds or None, w, h)`` items on ``frames_q``
    and keep the last other lines (the diagnostics) in ``log_tail``."""
    time_base: Fraction | None = None
    for raw in stream:
        line = raw.decode("utf-8", errors="replace").rstrip()
        if "showinfo" not in line:
            log_tail.append(line)
            continue
        tb = _TIME_BASE_RE.search(line)
        if tb and int(tb.group(2)) > 0:
            time_base = Fraction(int(tb.group(1)), int(tb.group(2)))
            continue
        m = _SHOWINFO_RE.search(line)
        if not m:
            continue  # side-data lines of the previous frame
        t: float | None
        if time_base is not None and re.fullmatch(r"-?\d+", m.group(2)):
            # Exact: integer pts times the time base (pts_time is printed with only 6 significant digits).
            t = float(int(m.group(2)) * time_base)
        else:
            try:
                t = float(m.group(3))
            except ValueError:  # "NOPTS": a frame without a timestamp
                t = None
        frames_q.put((int(m.group(1)), t, int(m.group(4)), int(m.group(5))))
    frames_q.put(None)  # end of stream sentinel


def _read_exact(stream: io.BufferedReader, nbytes: int) -> bytes:
    chunks: list[bytes] = []
    remaining = nbytes
    while remaining > 0:
        chunk = stream.read(remaining)
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _expected_count(
    info: VideoInfo, start_s: float | None, end_s: float | None, fps: float | None, max_frames: int | None
) -> int:
    """An upper estimate of how many frames a read keeps, to size the frame buffer once."""
    lo = start_s or 0.0
    hi = info.duration_s if end_s is None else min(end_s, info.duration_s)
    rate = min(fps, info.fps) if fps is not None else info.fps
    estimate = min(info.num_frames, math.ceil(max(0.0, hi - lo) * rate) + 2)
    return max(1, min(estimate, max_frames) if max_frames is not None else estimate)


class _FrameBuffer:
    """Frames written straight into one preallocated ``(N, H, W, 3)`` array.

    Collecting a list and stacking it at the end would briefly need twice the clip's memory; this needs it
    once (plus a rare regrowth when a variable-frame-rate file has more frames than its header suggests).
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.data: np.ndarray | None = None
        self.count = 0

    def append(self, frame: np.ndarray) -> None:
        if self.data is None:
            self.data = np.empty((self.capacity, *frame.shape), dtype=np.uint8)
        elif self.count == self.data.shape[0]:
            grown = np.empty((max(self.count + 1, int(self.count * 1.5)), *frame.shape), dtype=np.uint8)
            grown[: self.count] = self.data
            self.data = grown
        self.data[self.count] = frame
        self.count += 1

    def array(self) -> np.ndarray:
        assert self.data is not None
        if self.count == self.data.shape[0]:
            return self.data
        if self.count >= 0.9 * self.data.shape[0]:
            return self.data[: self.count]  # a view: the few spare slots are not worth a copy
        return self.data[: self.count].copy()


def _read_ffmpeg(
    p: Path,
    start_s: float | None,
    end_s: float | None,
    fps: float | None,
    max_frames: int | None,
    max_side: int | None = None,
) -> Clip:
    info = probe_file(p)
    target = fit_within(info.width, info.height, max_side)
    # Scaling runs after the autorotate filters, so it sees (and targets) the upright size.
    scale = [] if target == (info.width, info.height) else [f"scale={target[0]}:{target[1]}:flags=area"]
    if start_s is not None and start_s >= info.duration_s:
        raise empty_window_error(p, info, start_s, end_s)
    # Input seeking skips the decoding of everything before the window. It starts one second early (ffmpeg
    # then discards frames before the seek point) and the exact window is applied below by timestamp, so
    # rounding at the seek point can never drop a frame that belongs to the window.
    seek = max(0.0, start_s - 1.0) if start_s is not None and start_s > 1.0 else 0.0
    cmd = [
        ffmpeg_exe(),
        "-hide_banner",
        "-nostdin",
        "-nostats",
        "-loglevel",
        "info",
        *(["-ss", f"{seek:.6f}"] if seek > 0 else []),
        *input_args(p),
        # Capital V: the first video stream that is not cover art (an attached picture).
        "-map",
        "0:V:0",
        "-an",
        "-sn",
        "-dn",
        # showinfo logs each frame's presentation time; it runs after the autorotate filters ffmpeg inserts,
        # so its size is the upright size. Passthrough keeps every decoded frame exactly once.
        "-vf",
        ",".join([*scale, "showinfo=checksum=0"]),
        "-fps_mode",
        "passthrough",
        "-f",
        "rawvideo",
        "-pix_fmt",
        "rgb24",
        "pipe:1",
    ]
    logger.debug("decoding with %s", " ".join(cmd))
    selector = FrameSelector(start_s, end_s, fps, info.fps, max_frames)
    buffer = _FrameBuffer(_expected_count(info, start_s, end_s, fps, max_frames))
    stamps: list[float] = []
    last_ts: float | None = None
    frames_q: queue.Queue = queue.Queue()
    log_tail: deque[str] = deque(maxlen=200)
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    reader = threading.Thread(target=_drain_stderr, args=(proc.stderr, frames_q, log_tail), daemon=True)
    reader.start()
    decoded = 0
    stopped_early = False
    first_size: tuple[int, int] | None = None
    try:
        while True:
            item = frames_q.get()
            if item is None:
                break
            _, t, w, h = item
            nbytes = w * h * 3
            data = _read_exact(proc.stdout, nbytes)
            if len(data) < nbytes:
                break
            if first_size is None:
                first_size = (w, h)
            elif (w, h) != first_size:
                raise VideoReadError(
                    f"The frame size of '{p.name}' changes mid-stream ({first_size[0]}x{first_size[1]} to "
                    f"{w}x{h}); re-encode it at one resolution and upload it again."
                )
            # A frame without a timestamp sits one frame after the previous one.
            if t is not None:
                ts = t + seek
            else:
                ts = last_ts + 1.0 / info.fps if last_ts is not None else seek + decoded / info.fps
            last_ts = ts
            decoded += 1
            if selector.past_end(ts) or selector.done():
                stopped_early = True
                break
            if selector.keep(ts):
                buffer.append(np.frombuffer(data, dtype=np.uint8).reshape(h, w, 3))
                stamps.append(ts)
                if selector.done():
                    stopped_early = True
                    break
    finally:
        if proc.poll() is None:
            # We have what we need (or are failing): stop ffmpeg instead of decoding the rest of the file.
            proc.stdout.close()
            proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        reader.join(timeout=10)
        # Close the pipes here rather than leave them to the garbage collector (one pair per read).
        proc.stdout.close()
        if not reader.is_alive():
            proc.stderr.close()
    log = "\n".join(log_tail)
    if not stopped_early:
        truncation = truncation_line(log)
        if truncation:
            raise truncated_error(p, truncation)
        if proc.returncode != 0 and decoded == 0:
            raise not_a_video(p, ffmpeg_problem(log))
    if decoded == 0 and seek > 0:
        # Nothing after the seek point: the window starts past the last frame.
        raise empty_window_error(p, info, start_s, end_s)
    if decoded == 0:
        raise VideoReadError(f"'{p.name}' contains no decodable video frames. {SUPPORTED_HINT}")
    if not stamps:
        raise empty_window_error(p, info, start_s, end_s)
    out_fps = fps if fps is not None and fps < info.fps else info.fps
    notes = () if stopped_early else _missing_frames_notes(p, info, seek, decoded, stamps)
    return Clip(buffer.array(), np.asarray(stamps, dtype=np.float64), float(out_fps), info, notes)


def _missing_frames_notes(
    p: Path, info: VideoInfo, seek: float, decoded: int, stamps: list[float]
) -> tuple[str, ...]:
    """A note when decoding ran to the end of the stream with fewer frames than the file announces.

    A damaged file can hold packets that do not decode, or an index that lists fewer of them; ffmpeg then
    skips them (or stops) without an error, and the frames must not vanish without a word. The file
    announces its frames twice, as packets in its index and as its duration times its frame rate; the larger
    counts. A frame or two (or 2 %) of difference is what edit lists and decoder delays give in undamaged
    files.
    """
    packets = info.num_frames - round(seek * info.fps)
    timed = round((info.duration_s - seek) * info.fps)
    announced = max(packets, timed)
    missing = announced - decoded
    if missing <= max(2, 0.02 * announced):
        return ()
    after = f" after {seek:.2f} s" if seek > 0 else ""
    return (
        f"Only {decoded} of the {announced} frames that the video announces{after} could be decoded: the "
        f"file is damaged, and the results cover what could be read ({stamps[0]:.2f}-{stamps[-1]:.2f} s). "
        "Re-export or re-encode the video and upload it again to process all of it.",
    )
