"""Frame folders, zips of frames and single images, read with Pillow."""

from __future__ import annotations

import io
import re
import zipfile
import zlib
from pathlib import Path

import numpy as np

from .selection import FrameSelector, empty_window_error, fit_within
from .types import IMAGE_EXTENSIONS, IMAGE_SEQUENCE_FPS, SUPPORTED_HINT, Clip, VideoInfo, VideoReadError


def natural_key(name: str) -> list[object]:
    """Sort key for file names in natural order: ``2.png`` before ``10.png``, case ignored."""
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
                    f"Could not open '{p.name}' as a zip of frames: {exc}. {SUPPORTED_HINT}"
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
        names.sort(key=natural_key)
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


def probe_sequence(p: Path) -> VideoInfo:
    with _FrameSource(p) as src:
        return _sequence_info(src)[0]


def read_sequence(
    p: Path,
    start_s: float | None,
    end_s: float | None,
    fps: float | None,
    max_frames: int | None,
    max_side: int | None = None,
) -> Clip:
    with _FrameSource(p) as src:
        info, first = _sequence_info(src)
        selector = FrameSelector(start_s, end_s, fps, info.fps, max_frames)
        # Selection happens on the nominal timestamps first so that only kept frames are decoded.
        chosen = [i for i in range(len(src.names)) if selector.keep(i / info.fps)]
        if not chosen:
            raise empty_window_error(p, info, start_s, end_s)
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
