"""Video and frame-sequence input/output without torch.

Decoding and encoding go through the ffmpeg binary that ``imageio-ffmpeg`` ships, driven as a subprocess:

* :func:`probe_video` reads the container header (``ffmpeg -i``) and counts the video packets.
* :func:`read_video` decodes to RGB ``uint8`` frames with their real presentation timestamps, applies the
  rotation metadata (ffmpeg's autorotate), trims to a time window, subsamples to a target fps by timestamp and
  caps the frame count. Frame folders, zips of frames and single images are read with Pillow instead.
* :func:`write_video` encodes streamed frames to a browser-friendly H.264 MP4 and can copy a trimmed window of
  another file's audio into it.
* :func:`ffprobe_summary` describes a written file for tests and checks.

Every input problem a user can cause (wrong file type, truncated upload, empty trim window) raises
:class:`VideoReadError`, a ``ValueError`` whose message says what to change.
"""

from __future__ import annotations

import io
import logging
import math
import os
import queue
import re
import subprocess
import tempfile
import threading
import uuid
import zipfile
import zlib
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

__all__ = [
    "IMAGE_EXTENSIONS",
    "IMAGE_SEQUENCE_FPS",
    "VIDEO_EXTENSIONS",
    "Clip",
    "VideoInfo",
    "VideoReadError",
    "VideoWriteError",
    "ffmpeg_exe",
    "ffprobe_summary",
    "probe_video",
    "read_video",
    "write_video",
]

#: Container extensions the app advertises (others that ffmpeg's allowed demuxers open also work).
VIDEO_EXTENSIONS: tuple[str, ...] = (".mp4", ".webm", ".mov", ".mkv", ".avi", ".gif", ".m4v")
#: Still-image extensions accepted as a single image, inside a folder of frames or inside a zip of frames.
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
#: Frame rate assumed for folders/zips of frames and single images, which carry no timing of their own.
#: DAVIS and most referring-VOS frame dumps come from 24-30 fps footage; 24 is the DAVIS convention.
IMAGE_SEQUENCE_FPS: float = 24.0

_SUPPORTED_HINT = "Upload an mp4, webm, mov, mkv, avi or gif file (or a zip of PNG/JPEG frames)."

# Only these demuxers may open user files. Without the list, ffmpeg would happily "play" a .txt file through
# its tty demuxer, and playlist demuxers (hls, concat) could make it read other local files or URLs.
_DEMUXER_WHITELIST = ",".join(
    [
        "mov,mp4,m4a,3gp,3g2,mj2",
        "matroska,webm",
        "avi",
        "gif",
        "mpegts",
        "mpeg",
        "flv",
        "ogg",
        "asf",
        "m4v",
        "h264",
        "hevc",
        "ivf",
        "nut",
    ]
)

# ffmpeg messages that mean the file ends before the data its index promises (an interrupted upload or copy).
_TRUNCATION_MARKERS = ("partial file", "ended prematurely", "truncat", "moov atom not found")

# Rates that ffmpeg prints rounded ("29.97 fps"); snapping back to the exact NTSC fraction keeps written files
# at the same rate as their source.
_NTSC_RATES = tuple(Fraction(n * 1000, 1001) for n in (24, 30, 48, 60, 120))


class VideoReadError(ValueError):
    """A user-supplied video or frame set cannot be read; the message says what to change."""


class VideoWriteError(RuntimeError):
    """ffmpeg failed to encode or mux an output video."""


@dataclass(frozen=True)
class VideoInfo:
    """What a video (or frame sequence) is, as read from its metadata.

    ``width``/``height`` are the *upright* display size, i.e. after the rotation metadata is applied, which is
    the size of the frames :func:`read_video` returns. ``rotation`` is the clockwise rotation in degrees
    (0, 90, 180 or 270) that the metadata asks a player to apply to the stored frames; it uses the convention of
    the legacy MP4 ``rotate`` tag that phones write (a portrait phone clip has ``rotation == 90``).
    """

    path: str
    width: int
    height: int
    fps: float
    num_frames: int
    duration_s: float
    rotation: int
    has_audio: bool
    codec: str


@dataclass
class Clip:
    """Decoded frames and where they sit in time.

    Attributes:
        frames: ``(T, H, W, 3)`` uint8 RGB, upright.
        timestamps_s: ``(T,)`` float64 presentation time of each kept frame, seconds from the start of the file.
        fps: the effective frame rate of ``frames``: the source fps, or the requested target fps when lower.
        source: metadata of the file the frames came from.
    """

    frames: np.ndarray
    timestamps_s: np.ndarray
    fps: float
    source: VideoInfo

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def height(self) -> int:
        return int(self.frames.shape[1])

    @property
    def width(self) -> int:
        return int(self.frames.shape[2])


# --------------------------------------------------------------------------------------------------------------
# ffmpeg helpers


def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary bundled with imageio-ffmpeg."""
    # Imported lazily: the import scans for the binary, which callers that only render do not need.
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def _ffmpeg_input_url(path: Path) -> str:
    # The explicit file: protocol stops ffmpeg from treating names such as "http:..." or "concat:..." as URLs
    # and names starting with "-" as options.
    return "file:" + str(path.resolve())


def _input_args(path: Path) -> list[str]:
    return [
        "-format_whitelist",
        _DEMUXER_WHITELIST,
        "-protocol_whitelist",
        "file",
        "-i",
        _ffmpeg_input_url(path),
    ]


def _run_ffmpeg(args: Sequence[str], timeout_s: float = 120.0) -> subprocess.CompletedProcess[bytes]:
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", *args]
    logger.debug("running %s", " ".join(cmd))
    return subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout_s, check=False)


def _split_top_level(text: str) -> list[str]:
    """Split an ffmpeg stream description on commas that are not inside parentheses or brackets."""
    parts: list[str] = []
    depth = 0
    current: list[str] = []
    for ch in text:
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth = max(0, depth - 1)
        if ch == "," and depth == 0:
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(ch)
    if current:
        parts.append("".join(current).strip())
    return parts


def _parse_rate(text: str) -> float | None:
    """Parse ffmpeg's printed rates: "29.97", "30", "1k", "90k"."""
    m = re.fullmatch(r"\s*([\d.]+)(k?)\s*", text)
    if not m:
        return None
    value = float(m.group(1)) * (1000.0 if m.group(2) else 1.0)
    return value if value > 0 else None


def _snap_fps(fps: float) -> float:
    """Undo ffmpeg's two-decimal rounding of NTSC rates (29.97 -> 30000/1001)."""
    for rate in _NTSC_RATES:
        if abs(fps - float(rate)) < 0.006:
            return float(rate)
    return fps


def _fps_fraction(fps: float) -> Fraction:
    """A rational frame rate for ffmpeg's -framerate (exact for NTSC rates)."""
    for rate in _NTSC_RATES:
        if abs(fps - float(rate)) < 1e-3:
            return rate
    return Fraction(fps).limit_denominator(1001)


@dataclass
class _StreamHeader:
    index: int
    codec: str
    pix_fmt: str
    width: int
    height: int
    fps: float | None
    tbr: float | None
    ccw_rotation: float


@dataclass
class _Header:
    format_name: str | None
    duration_s: float | None
    video: _StreamHeader | None
    has_audio: bool
    audio_codec: str | None


_STREAM_RE = re.compile(r"^\s*Stream #\d+:(\d+)\S*: (Video|Audio|Subtitle|Data|Attachment): (.*)$")


def _parse_header(text: str) -> _Header:
    """Parse the stream summary that ``ffmpeg -i`` prints on stderr."""
    fmt = re.search(r"Input #0, (.+?), from '", text)
    duration = None
    m = re.search(r"Duration: (\d+):(\d+):(\d+(?:\.\d+)?)", text)
    if m:
        duration = int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3))

    # ffmpeg also describes its output streams (after "Output #0"); only the input part describes the file.
    lines = text.split("\nOutput #", 1)[0].splitlines()
    videos: list[_StreamHeader] = []
    has_audio = False
    audio_codec: str | None = None
    for i, line in enumerate(lines):
        sm = _STREAM_RE.match(line)
        if not sm:
            continue
        index, kind, desc = int(sm.group(1)), sm.group(2), sm.group(3)
        if kind == "Audio":
            has_audio = True
            audio_codec = audio_codec or desc.split(",")[0].split()[0]
            continue
        if kind != "Video" or "(attached pic)" in desc:
            # Cover art in audio files is a one-frame "video" stream; it is not a video.
            continue
        fields = _split_top_level(desc)
        codec = fields[0].split()[0] if fields and fields[0] else "unknown"
        pix_fmt = "unknown"
        width = height = 0
        fps = tbr = None
        for j, field in enumerate(fields[1:], start=1):
            size = re.match(r"^(\d+)x(\d+)\b", field)
            if size and width == 0:
                width, height = int(size.group(1)), int(size.group(2))
            elif j == 1:
                pix_fmt = field.split("(")[0].strip()
            if field.endswith(" fps"):
                fps = _parse_rate(field[: -len(" fps")])
            elif field.endswith(" tbr"):
                tbr = _parse_rate(field[: -len(" tbr")])
        # Side data and metadata follow the stream line, indented more deeply, until the next stream.
        ccw = 0.0
        for follow in lines[i + 1 :]:
            if _STREAM_RE.match(follow) or not follow.startswith("    "):
                break
            rot = re.search(r"(?:displaymatrix|display matrix): rotation of (-?[\d.]+) degrees", follow, re.I)
            if rot:
                ccw = float(rot.group(1))
            legacy = re.match(r"^\s+rotate\s*:\s*(-?\d+)", follow)
            if legacy:
                ccw = -float(legacy.group(1))
        videos.append(_StreamHeader(index, codec, pix_fmt, width, height, fps, tbr, ccw))
    video = min(videos, key=lambda s: s.index) if videos else None
    return _Header(fmt.group(1) if fmt else None, duration, video, has_audio, audio_codec)


def _clockwise_rotation(ccw_degrees: float) -> int:
    """Display-matrix counter-clockwise angle -> clockwise multiple of 90 in [0, 360)."""
    return int(round(-ccw_degrees / 90.0)) * 90 % 360


def _last_frame_count(text: str) -> int | None:
    counts = re.findall(r"frame=\s*(\d+)", text)
    return int(counts[-1]) if counts else None


def _log_lines(text: str) -> list[str]:
    """ffmpeg's diagnostic lines ("[component @ 0x...] message" or "Error ..."), without metadata values.

    Metadata such as a title is printed too, and must not be mistaken for a diagnostic.
    """
    out = []
    for ln in text.splitlines():
        stripped = ln.strip()
        if stripped.startswith("[") or stripped.lower().startswith("error"):
            out.append(stripped)
    return out


def _truncation_line(text: str) -> str | None:
    for ln in _log_lines(text):
        if any(marker in ln.lower() for marker in _TRUNCATION_MARKERS):
            return re.sub(r"^\[[^\]]*\]\s*", "", ln)
    return None


def _ffmpeg_problem(text: str) -> str:
    """The most telling error line of an ffmpeg log, for user-facing messages."""
    truncation = _truncation_line(text)
    if truncation:
        return truncation
    lines = _log_lines(text)
    for ln in reversed(lines):
        if "error" in ln.lower() or "invalid" in ln.lower():
            return re.sub(r"^\[[^\]]*\]\s*", "", ln)
    return lines[-1] if lines else "ffmpeg gave no details"


def _not_a_video(path: Path, detail: str) -> VideoReadError:
    return VideoReadError(f"Could not read '{path.name}' as a video: {detail}. {_SUPPORTED_HINT}")


def _truncated(path: Path, detail: str) -> VideoReadError:
    return VideoReadError(
        f"'{path.name}' looks truncated or corrupt ({detail}). The upload or copy may have been interrupted: "
        "upload the complete file again, or re-export it from your editor."
    )


# --------------------------------------------------------------------------------------------------------------
# Probing


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
        return _probe_sequence(p)
    return _probe_ffmpeg(p)


def _probe_ffmpeg(p: Path) -> VideoInfo:
    if p.stat().st_size == 0:
        raise _not_a_video(p, "the file is empty")
    # One pass that copies the video packets to nowhere: it prints the header and counts the packets, which
    # equals the frame count for every codec we accept, without decoding anything.
    res = _run_ffmpeg(
        ["-nostats", "-loglevel", "info", *_input_args(p), "-map", "0:V:0?", "-c", "copy", "-f", "null", "-"]
    )
    text = res.stderr.decode("utf-8", errors="replace")
    header = _parse_header(text)
    truncation = _truncation_line(text)
    if truncation and (header.format_name is None or header.video is not None):
        raise _truncated(p, truncation)
    if header.format_name is None:
        raise _not_a_video(p, _ffmpeg_problem(text))
    if header.video is None:
        what = "it has audio but no video stream" if header.has_audio else "it contains no video stream"
        raise _not_a_video(p, what)
    v = header.video
    num_frames = _last_frame_count(text) or 0
    if num_frames == 0:
        raise VideoReadError(f"'{p.name}' contains no video frames. {_SUPPORTED_HINT}")
    fps = v.fps or v.tbr
    if fps is None and header.duration_s:
        fps = num_frames / header.duration_s
    fps = _snap_fps(fps or IMAGE_SEQUENCE_FPS)
    duration = header.duration_s if header.duration_s else num_frames / fps
    rotation = _clockwise_rotation(v.ccw_rotation)
    width, height = (v.height, v.width) if rotation in (90, 270) else (v.width, v.height)
    return VideoInfo(
        path=str(p),
        width=width,
        height=height,
        fps=float(fps),
        num_frames=num_frames,
        duration_s=float(duration),
        rotation=rotation,
        has_audio=header.has_audio,
        codec=v.codec,
    )


# --------------------------------------------------------------------------------------------------------------
# Frame selection shared by the ffmpeg and the image-sequence readers


class _FrameSelector:
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


def _validate_read_args(
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


def _empty_window_error(
    path: Path, info: VideoInfo, start_s: float | None, end_s: float | None
) -> VideoReadError:
    lo = 0.0 if start_s is None else start_s
    hi = "the end" if end_s is None else f"{end_s:g} s"
    return VideoReadError(
        f"The trim window {lo:g} s to {hi} of '{path.name}' contains no frame; the video is "
        f"{info.duration_s:.2f} s long. Choose a start and end between 0 and {info.duration_s:.2f} s."
    )


# --------------------------------------------------------------------------------------------------------------
# Reading


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
            :class:`_FrameSelector`). Never invents frames: a higher target keeps every frame.
        max_frames: memory guard; stop after this many kept frames.
        max_side: memory guard for huge frames (8K phones): frames whose longer side exceeds this are
            downscaled (aspect kept, even sizes) while decoding. ``Clip.source`` keeps the original size.

    Returns:
        A :class:`Clip` with ``frames`` ``(T, H, W, 3)`` uint8 and ``timestamps_s`` ``(T,)`` float64.

    Raises:
        VideoReadError: not a video, truncated/corrupt, no frames, or a trim window that contains no frame.
    """
    _validate_read_args(start_s, end_s, fps, max_frames)
    p = Path(path)
    if not p.exists():
        raise VideoReadError(f"Could not find '{p}'. Check the path, or upload the file again.")
    if max_side is not None and max_side < 2:
        raise VideoReadError(f"max_side must be at least 2 pixels, got {max_side}.")
    if p.is_dir() or _is_image_file(p) or zipfile.is_zipfile(p):
        return _read_sequence(p, start_s, end_s, fps, max_frames, max_side)
    return _read_ffmpeg(p, start_s, end_s, fps, max_frames, max_side)


def fit_within(width: int, height: int, max_side: int | None) -> tuple[int, int]:
    """(width, height) scaled down so that the longer side is at most ``max_side``, both even; unchanged
    when already small enough."""
    if max_side is None or max(width, height) <= max_side:
        return width, height
    scale = max_side / max(width, height)
    return max(2, int(width * scale) // 2 * 2), max(2, int(height * scale) // 2 * 2)


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
    info = _probe_ffmpeg(p)
    target = fit_within(info.width, info.height, max_side)
    # Scaling runs after the autorotate filters, so it sees (and targets) the upright size.
    scale = [] if target == (info.width, info.height) else [f"scale={target[0]}:{target[1]}:flags=area"]
    if start_s is not None and start_s >= info.duration_s:
        raise _empty_window_error(p, info, start_s, end_s)
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
        *_input_args(p),
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
    selector = _FrameSelector(start_s, end_s, fps, info.fps, max_frames)
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
    log = "\n".join(log_tail)
    if not stopped_early:
        truncation = _truncation_line(log)
        if truncation:
            raise _truncated(p, truncation)
        if proc.returncode != 0 and decoded == 0:
            raise _not_a_video(p, _ffmpeg_problem(log))
    if decoded == 0 and seek > 0:
        # Nothing after the seek point: the window starts past the last frame.
        raise _empty_window_error(p, info, start_s, end_s)
    if decoded == 0:
        raise VideoReadError(f"'{p.name}' contains no decodable video frames. {_SUPPORTED_HINT}")
    if not stamps:
        raise _empty_window_error(p, info, start_s, end_s)
    out_fps = fps if fps is not None and fps < info.fps else info.fps
    return Clip(buffer.array(), np.asarray(stamps, dtype=np.float64), float(out_fps), info)


# --------------------------------------------------------------------------------------------------------------
# Frame folders, zips and single images


def _natural_key(name: str) -> list[object]:
    # "frame_2.png" sorts before "frame_10.png", as frame dumps without zero padding expect.
    return [int(tok) if tok.isdigit() else tok.lower() for tok in re.split(r"(\d+)", name)]


class _FrameSource:
    """The frames of a folder, a zip or a single image: sorted names and a way to open each one."""

    def __init__(self, p: Path) -> None:
        self.path = p
        self._zip: zipfile.ZipFile | None = None
        if p.is_dir():
            self.kind = "folder"
            names = [
                f.name
                for f in p.iterdir()
                if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in IMAGE_EXTENSIONS
            ]
        elif zipfile.is_zipfile(p):
            self.kind = "zip"
            try:
                self._zip = zipfile.ZipFile(p)
            except (zipfile.BadZipFile, OSError) as exc:
                raise VideoReadError(
                    f"Could not open '{p.name}' as a zip of frames: {exc}. {_SUPPORTED_HINT}"
                ) from exc
            names = [
                info.filename
                for info in self._zip.infolist()
                if not info.is_dir()
                and Path(info.filename).suffix.lower() in IMAGE_EXTENSIONS
                and not Path(info.filename).name.startswith(".")
                and "__MACOSX" not in info.filename
            ]
        else:
            self.kind = "image"
            names = [p.name]
        names.sort(key=_natural_key)
        self.names = names

    def open(self, name: str) -> Path | io.BytesIO:
        if self.kind == "folder":
            return self.path / name
        if self.kind == "zip":
            assert self._zip is not None
            try:
                return io.BytesIO(self._zip.read(name))
            except (zipfile.BadZipFile, zlib.error, NotImplementedError, RuntimeError, OSError) as exc:
                # CRC mismatch, damaged deflate stream, unsupported compression or an encrypted member.
                raise VideoReadError(
                    f"Could not extract '{name}' from '{self.path.name}': {exc}. Re-create the zip without "
                    "encryption and upload it again."
                ) from exc
        return self.path

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()

    def __enter__(self) -> _FrameSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _load_image(source: Path | io.BytesIO, label: str) -> tuple[np.ndarray, int]:
    """Decode one still image to upright RGB ``(H, W, 3)`` uint8; also return its EXIF clockwise rotation."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(source) as im:
            orientation = im.getexif().get(0x0112, 1)
            upright = ImageOps.exif_transpose(im)
            if upright.mode in ("RGBA", "LA", "PA") or (
                upright.mode == "P" and "transparency" in upright.info
            ):
                # Transparent pixels become black, deterministically, instead of exposing whatever colour
                # the encoder left under them.
                rgba = upright.convert("RGBA")
                background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
                upright = Image.alpha_composite(background, rgba)
            rgb = np.asarray(upright.convert("RGB"), dtype=np.uint8)
    except (OSError, SyntaxError, ValueError, UnidentifiedImageError, Image.DecompressionBombError) as exc:
        raise VideoReadError(
            f"Could not read the image '{label}': {exc}. Use PNG or JPEG frames, or upload a video file."
        ) from exc
    rotation = {3: 180, 6: 90, 8: 270}.get(int(orientation), 0)
    return rgb, rotation


def _sequence_info(src: _FrameSource) -> tuple[VideoInfo, np.ndarray]:
    """Metadata of a frame source, and its decoded first frame."""
    p = src.path
    if not src.names:
        raise VideoReadError(
            f"The {src.kind} '{p.name}' contains no frames. Put the frames in it as PNG or JPEG files "
            "(named in order, e.g. 00000.jpg, 00001.jpg, ...)."
        )
    first, rotation = _load_image(src.open(src.names[0]), src.names[0])
    height, width = first.shape[:2]
    codec = Path(src.names[0]).suffix.lower().lstrip(".").replace("jpg", "jpeg")
    info = VideoInfo(
        path=str(p),
        width=int(width),
        height=int(height),
        fps=IMAGE_SEQUENCE_FPS,
        num_frames=len(src.names),
        duration_s=len(src.names) / IMAGE_SEQUENCE_FPS,
        rotation=rotation,
        has_audio=False,
        codec=codec,
    )
    return info, first


def _probe_sequence(p: Path) -> VideoInfo:
    with _FrameSource(p) as src:
        return _sequence_info(src)[0]


def _read_sequence(
    p: Path,
    start_s: float | None,
    end_s: float | None,
    fps: float | None,
    max_frames: int | None,
    max_side: int | None = None,
) -> Clip:
    with _FrameSource(p) as src:
        info, first = _sequence_info(src)
        selector = _FrameSelector(start_s, end_s, fps, info.fps, max_frames)
        # Selection happens on the nominal timestamps first so that only kept frames are decoded.
        chosen = [i for i in range(len(src.names)) if selector.keep(i / info.fps)]
        if not chosen:
            raise _empty_window_error(p, info, start_s, end_s)
        frames: list[np.ndarray] = []
        for i in chosen:
            rgb = first if i == 0 else _load_image(src.open(src.names[i]), src.names[i])[0]
            if rgb.shape[:2] != (info.height, info.width):
                raise VideoReadError(
                    f"Frame '{src.names[i]}' is {rgb.shape[1]}x{rgb.shape[0]} but the first frame is "
                    f"{info.width}x{info.height}; all frames of a sequence must have the same size."
                )
            target = fit_within(info.width, info.height, max_side)
            if target != (info.width, info.height):
                from PIL import Image

                rgb = np.asarray(Image.fromarray(rgb).resize(target, Image.BOX))
            frames.append(rgb)
    out_fps = fps if fps is not None and fps < info.fps else info.fps
    stamps = np.asarray([i / info.fps for i in chosen], dtype=np.float64)
    return Clip(np.stack(frames), stamps, float(out_fps), info)


# --------------------------------------------------------------------------------------------------------------
# Writing


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
    rate = _fps_fraction(fps)
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
        _DEMUXER_WHITELIST,
        "-protocol_whitelist",
        "file",
        "-i",
        _ffmpeg_input_url(source),
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
    res = _run_ffmpeg(args)
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
    res = _run_ffmpeg(
        [
            "-loglevel",
            "info",
            *_input_args(p),
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
    header = _parse_header(text)
    if header.format_name is None or header.video is None:
        raise _not_a_video(p, _ffmpeg_problem(text))
    v = header.video
    fps = v.fps or v.tbr
    return {
        "format": header.format_name,
        "codec": v.codec,
        "pix_fmt": v.pix_fmt,
        "fps": _snap_fps(fps) if fps else None,
        "width": v.width,
        "height": v.height,
        "num_frames": _last_frame_count(text) or 0,
        "has_audio": header.has_audio,
        "audio_codec": header.audio_codec,
        "duration_s": header.duration_s,
        "rotation": _clockwise_rotation(v.ccw_rotation),
    }
