"""The ffmpeg binary: running it on user files safely, parsing the header it prints, and probing videos."""

from __future__ import annotations

import logging
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from .types import IMAGE_SEQUENCE_FPS, SUPPORTED_HINT, VideoInfo, VideoReadError

logger = logging.getLogger(__name__)

# Only these demuxers may open user files. Without the list, ffmpeg would happily "play" a .txt file through
# its tty demuxer, and playlist demuxers (hls, concat) could make it read other local files or URLs.
DEMUXER_WHITELIST = ",".join(
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


def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary bundled with imageio-ffmpeg."""
    # Imported lazily: the import scans for the binary, which callers that only render do not need.
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def ffmpeg_input_url(path: Path) -> str:
    # The explicit file: protocol stops ffmpeg from treating names such as "http:..." or "concat:..." as URLs
    # and names starting with "-" as options.
    return "file:" + str(path.resolve())


def input_args(path: Path) -> list[str]:
    return [
        "-format_whitelist",
        DEMUXER_WHITELIST,
        "-protocol_whitelist",
        "file",
        "-i",
        ffmpeg_input_url(path),
    ]


def run_ffmpeg(args: Sequence[str], timeout_s: float = 120.0) -> subprocess.CompletedProcess[bytes]:
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


def snap_fps(fps: float) -> float:
    """Undo ffmpeg's two-decimal rounding of NTSC rates (29.97 -> 30000/1001)."""
    for rate in _NTSC_RATES:
        if abs(fps - float(rate)) < 0.006:
            return float(rate)
    return fps


def fps_fraction(fps: float) -> Fraction:
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


def parse_header(text: str) -> _Header:
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


def clockwise_rotation(ccw_degrees: float) -> int:
    """Display-matrix counter-clockwise angle -> clockwise multiple of 90 in [0, 360)."""
    return int(round(-ccw_degrees / 90.0)) * 90 % 360


def last_frame_count(text: str) -> int | None:
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


def truncation_line(text: str) -> str | None:
    for ln in _log_lines(text):
        if any(marker in ln.lower() for marker in _TRUNCATION_MARKERS):
            return re.sub(r"^\[[^\]]*\]\s*", "", ln)
    return None


def ffmpeg_problem(text: str) -> str:
    """The most telling error line of an ffmpeg log, for user-facing messages."""
    truncation = truncation_line(text)
    if truncation:
        return truncation
    lines = _log_lines(text)
    for ln in reversed(lines):
        if "error" in ln.lower() or "invalid" in ln.lower():
            return re.sub(r"^\[[^\]]*\]\s*", "", ln)
    return lines[-1] if lines else "ffmpeg gave no details"


def not_a_video(path: Path, detail: str) -> VideoReadError:
    return VideoReadError(f"Could not read '{path.name}' as a video: {detail}. {SUPPORTED_HINT}")


def truncated_error(path: Path, detail: str) -> VideoReadError:
    return VideoReadError(
        f"'{path.name}' looks truncated or corrupt ({detail}). The upload or copy may have been interrupted: "
        "upload the complete file again, or re-export it from your editor."
    )


# --------------------------------------------------------------------------------------------------------------
# Probing

# How the containers of DEMUXER_WHITELIST begin: (offset, bytes).
_SIGNATURES: tuple[tuple[int, bytes], ...] = (
    *((4, box) for box in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip", b"pnot")),  # MP4, MOV
    (0, b"\x1a\x45\xdf\xa3"),  # Matroska, WebM
    (0, b"RIFF"),  # AVI
    (0, b"GIF8"),
    (0, b"\x00\x00\x01\xba"),  # MPEG program stream
    (0, b"FLV"),
    (0, b"OggS"),
    (0, b"\x30\x26\xb2\x75"),  # ASF
    (0, b"DKIF"),  # IVF
    (0, b"nut/"),
    (0, b"\x00\x00\x00\x01"),  # raw H.264 / HEVC start code
)


_TS_PACKET = 188  # MPEG-TS: a 0x47 sync byte at the start of every packet


def _starts_like_a_video(path: Path) -> bool:
    with open(path, "rb") as handle:
        head = handle.read(_TS_PACKET + 1)
    if len(head) > _TS_PACKET and head[0] == head[_TS_PACKET] == 0x47:
        return True
    return any(head[offset : offset + len(magic)] == magic for offset, magic in _SIGNATURES)


def probe_file(p: Path) -> VideoInfo:
    if p.stat().st_size == 0:
        raise not_a_video(p, "the file is empty")
    # One pass that copies the video packets to nowhere: it prints the header and counts the packets, which
    # equals the frame count for every codec we accept, without decoding anything.
    res = run_ffmpeg(
        ["-nostats", "-loglevel", "info", *input_args(p), "-map", "0:V:0?", "-c", "copy", "-f", "null", "-"]
    )
    text = res.stderr.decode("utf-8", errors="replace")
    header = parse_header(text)
    truncation = truncation_line(text)
    # A file no demuxer opens is truncated only if it starts like a video; a renamed text file is not one,
    # whatever ffmpeg says of the container its name suggests.
    if truncation and (header.video is not None or (header.format_name is None and _starts_like_a_video(p))):
        raise truncated_error(p, truncation)
    if header.format_name is None:
        raise not_a_video(p, "it is not a video file" if truncation else ffmpeg_problem(text))
    if header.video is None:
        what = "it has audio but no video stream" if header.has_audio else "it contains no video stream"
        raise not_a_video(p, what)
    v = header.video
    num_frames = last_frame_count(text) or 0
    if num_frames == 0:
        raise VideoReadError(f"'{p.name}' contains no video frames. {SUPPORTED_HINT}")
    fps = v.fps or v.tbr
    if fps is None and header.duration_s:
        fps = num_frames / header.duration_s
    fps = snap_fps(fps or IMAGE_SEQUENCE_FPS)
    duration = header.duration_s if header.duration_s else num_frames / fps
    rotation = clockwise_rotation(v.ccw_rotation)
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
