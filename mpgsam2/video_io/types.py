"""What the readers and writers share: the accepted extensions, the errors, :class:`VideoInfo` and :class:`Clip`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Container extensions the app advertises (others that ffmpeg's allowed demuxers open also work).
VIDEO_EXTENSIONS: tuple[str, ...] = (".mp4", ".webm", ".mov", ".mkv", ".avi", ".gif", ".m4v")
#: Still-image extensions accepted as a single image, inside a folder of frames or inside a zip of frames.
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
#: Frame rate assumed for folders/zips of frames and single images, which carry no timing of their own.
#: DAVIS and most referring-VOS frame dumps come from 24-30 fps footage; 24 is the DAVIS convention.
IMAGE_SEQUENCE_FPS: float = 24.0

SUPPORTED_HINT = "Upload an mp4, webm, mov, mkv, avi or gif file (or a zip of PNG/JPEG frames)."


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
        notes: what a user should know about the decoding (frames downscaled, frames that the file
            announces but that could not be decoded), as plain sentences.
    """

    frames: np.ndarray
    timestamps_s: np.ndarray
    fps: float
    source: VideoInfo
    notes: tuple[str, ...] = ()

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def height(self) -> int:
        return int(self.frames.shape[1])

    @property
    def width(self) -> int:
        return int(self.frames.shape[2])
