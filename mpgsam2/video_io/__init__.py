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

from .ffmpeg import ffmpeg_exe
from .reading import probe_video, read_video
from .selection import fit_within
from .types import (
    IMAGE_EXTENSIONS,
    IMAGE_SEQUENCE_FPS,
    VIDEO_EXTENSIONS,
    Clip,
    VideoInfo,
    VideoReadError,
    VideoWriteError,
)
from .writing import ffprobe_summary, write_video

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
    "fit_within",
    "probe_video",
    "read_video",
    "write_video",
]
