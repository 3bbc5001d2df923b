"""A run's results as they arrive: compact per-frame results, the frames done, and the one typed value
(:class:`RunResult`) from which every output is written.

:class:`FrameMasks` is what the model's loop hands over per frame (packed masks, scores, priors): small enough
to cross a process boundary (a ZeroGPU worker) at every frame. :class:`ResultCollector` receives them in the
process that writes the outputs, places each by its frame index, draws its frame view at once (so a user
interface can show it) and gives the :class:`RunResult` of the frames done at any time: after the last
frame, after Stop, or after a failure part-way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .. import render
from ..video_io import Clip

RGB = tuple[int, int, int]


@dataclass(frozen=True)
class FrameMasks:
    """One frame's results for K expressions (frame H x W, prior grid g x g)."""

    frame_index: int  # position in the decoded clip
    packed_masks: np.ndarray  # (K, ceil(H * W / 8)) uint8: np.packbits of the (K, H * W) masks
    height: int
    width: int
    object_scores: np.ndarray  # (K,) float32 object-score logits (> 0: the target is visible)
    priors: np.ndarray  # (K, g, g) float16 prior-mask probabilities

    @classmethod
    def pack(
        cls, frame_index: int, masks: np.ndarray, object_scores: np.ndarray, priors: np.ndarray
    ) -> FrameMasks:
        """From (K, H, W) bool masks, (K,) scores and (K, g, g) priors."""
        count, height, width = masks.shape
        return cls(
            frame_index=int(frame_index),
            packed_masks=np.packbits(masks.reshape(count, height * width), axis=1),
            height=height,
            width=width,
            object_scores=np.asarray(object_scores, dtype=np.float32),
            priors=np.asarray(priors, dtype=np.float16),
        )

    @property
    def masks(self) -> np.ndarray:
        """(K, H, W) bool."""
        count = self.packed_masks.shape[0]
        flat = np.unpackbits(self.packed_masks, axis=1, count=self.height * self.width)
        return flat.reshape(count, self.height, self.width).astype(bool)


@dataclass(frozen=True)
class FrameDone:
    """One frame finished: its place in the run and its frame view, already on disk."""

    frame_index: int  # position in the decoded clip
    done: int  # frames finished so far, this one included
    total: int  # frames in the clip
    frame_view: Path  # [frame | prior heat map | final mask], one row per expression


@dataclass(frozen=True)
class RunResult:
    """Everything the outputs are written from: the frames done of one run (T of them, K expressions)."""

    clip: Clip  # the frames done, with their timestamps, fps and source
    expressions: tuple[str, ...]
    colors: tuple[RGB, ...]
    masks: np.ndarray  # (K, T, H, W) bool
    object_scores: np.ndarray  # (K, T) float32
    frame_views: tuple[Path, ...]  # (T,)
    frames_requested: int  # frames the options selected; more than T when the run stopped early
    # Things the user should know (frames downscaled, expressions cut, a run cut off): plain text.
    notes: tuple[str, ...] = ()

    @property
    def num_frames(self) -> int:
        return self.clip.num_frames

    @property
    def stopped(self) -> bool:
        return self.num_frames < self.frames_requested


class ResultCollector:
    """Collects the frames of one run as they finish (see the module's docstring).

    Args:
        clip: the decoded frames of the run.
        expressions: the run's (cleaned) expressions, in order; expression k gets ``render.color_for(k, K)``.
        folder: where the frame views go (``folder/priors/frame_<index>.jpg``).
        view_height: height of each row of a frame view.
    """

    def __init__(self, clip: Clip, expressions: list[str], folder: Path, view_height: int = 360):
        self.clip = clip
        self.expressions = tuple(expressions)
        count = len(expressions)
        self.colors = tuple(render.color_for(k, count) for k in range(count))
        self.folder = Path(folder)
        self.views_dir = self.folder / "priors"
        self.views_dir.mkdir(parents=True, exist_ok=True)
        self.view_height = view_height
        self.masks = np.zeros((count, clip.num_frames, clip.height, clip.width), dtype=bool)
        self.object_scores = np.zeros((count, clip.num_frames), dtype=np.float32)
        self.views: dict[int, Path] = {}

    @property
    def done(self) -> int:
        return len(self.views)

    def add(self, frame: FrameMasks) -> FrameDone:
        """Keep ``frame``'s results at its frame index and draw its frame view."""
        t = frame.frame_index
        if not 0 <= t < self.clip.num_frames:
            raise ValueError(f"Frame {t} is not in this run's {self.clip.num_frames} frames.")
        expected = (len(self.expressions), self.clip.height, self.clip.width)
        masks = frame.masks
        if masks.shape != expected:
            raise ValueError(f"Frame {t} has masks {masks.shape}; this run's are {expected}.")
        self.masks[:, t] = masks
        self.object_scores[:, t] = frame.object_scores
        view = render.frame_view(
            self.clip.frames[t], frame.priors.astype(np.float32), masks, self.colors, self.view_height
        )
        path = self.views_dir / f"frame_{t:05d}.jpg"
        Image.fromarray(view).save(path, quality=88)
        self.views[t] = path
        return FrameDone(frame_index=t, done=self.done, total=self.clip.num_frames, frame_view=path)

    def result(self, notes: tuple[str, ...] | list[str] = ()) -> RunResult:
        """The frames done so far, in frame order, as one value.

        Frames are done in order, so they are the first ``done`` frames (every frame after a full run).
        """
        order = sorted(self.views)
        if order != list(range(len(order))):
            raise ValueError(f"The frames done are not the first {len(order)} of the run: {order[:10]}...")
        done = len(order)
        clip = self.clip
        if done < clip.num_frames:
            clip = Clip(clip.frames[:done], clip.timestamps_s[:done], clip.fps, clip.source, clip.notes)
        return RunResult(
            clip=clip,
            expressions=self.expressions,
            colors=self.colors,
            masks=self.masks[:, :done],
            object_scores=self.object_scores[:, :done],
            frame_views=tuple(self.views[t] for t in order),
            frames_requested=self.clip.num_frames,
            notes=(*clip.notes, *notes),
        )
