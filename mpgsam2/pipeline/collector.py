"""A run's results as they arrive: the frames done, and the one typed value (:class:`RunResult`) from which
every output is written.

The model's loop hands over one :class:`~mpgsam2.inference.results.FrameResult` per frame (packed masks,
scores, priors): small enough to cross a process boundary (a ZeroGPU worker) at every frame.
:class:`ResultCollector` receives them in the process that writes the outputs, places each by its frame
index, draws its frame view at once (so a user interface can show it) and gives the :class:`RunResult` of
the frames done at any time: after the last frame, after Stop, or after a failure part-way.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from .. import render
from ..inference.results import FrameResult
from ..video_io import Clip

RGB = tuple[int, int, int]


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
    clicks: dict[int, tuple] = field(default_factory=dict)  # expression -> the clicks that corrected it

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
        self.priors: np.ndarray | None = None  # (K, T, g, g) float16, to draw a frame's view again
        self.views: dict[int, Path] = {}
        self.clicks: dict[int, list] = {}  # expression -> the clicks that corrected it

    @property
    def done(self) -> int:
        return len(self.views)

    def add(self, frame: FrameResult) -> FrameDone:
        """Keep ``frame``'s results at its frame index (for the expressions it has: all of them, or a
        refinement's one) and draw the frame's view."""
        t = frame.frame_index
        if not 0 <= t < self.clip.num_frames:
            raise ValueError(f"Frame {t} is not in this run's {self.clip.num_frames} frames.")
        rows = (
            list(frame.expressions) if frame.expressions is not None else list(range(len(self.expressions)))
        )
        expected = (len(rows), self.clip.height, self.clip.width)
        masks = frame.masks
        if masks.shape != expected:
            raise ValueError(f"Frame {t} has masks {masks.shape}; this run's are {expected}.")
        if self.priors is None:
            grid = frame.priors.shape[1:]
            self.priors = np.zeros((len(self.expressions), self.clip.num_frames, *grid), dtype=np.float16)
        self.masks[rows, t] = masks
        self.object_scores[rows, t] = frame.object_scores
        self.priors[rows, t] = frame.priors
        view = render.frame_view(
            self.clip.frames[t],
            self.priors[:, t].astype(np.float32),
            self.masks[:, t],
            self.colors,
            self.view_height,
        )
        path = self.views_dir / f"frame_{t:05d}.jpg"
        Image.fromarray(view).save(path, quality=88)
        self.views[t] = path
        return FrameDone(frame_index=t, done=self.done, total=self.clip.num_frames, frame_view=path)

    def save(self, path: Path) -> None:
        """Keep every frame's results in ``path`` (npz: masks as bits), for :meth:`restore` by a later run that
        corrects this one; the frame views stay in this collector's folder."""
        if self.done != self.clip.num_frames or self.priors is None:
            raise ValueError("Only a run with every frame done can be kept for corrections.")
        np.savez(
            path,
            masks=np.packbits(self.masks, axis=-1),
            width=self.clip.width,
            object_scores=self.object_scores,
            priors=self.priors,
        )

    def restore(self, path: Path, views_dir: Path | None = None) -> None:
        """Start from the results that :meth:`save` kept in ``path`` (and their frame views in ``views_dir``,
        when given), for a run that re-tracks only some expressions from some frame on: :meth:`add` then
        replaces the re-tracked rows."""
        with np.load(path) as kept:
            masks = np.unpackbits(kept["masks"], axis=-1, count=int(kept["width"])).astype(bool)
            if masks.shape != self.masks.shape:
                raise ValueError(f"The kept results are {masks.shape}; this run's are {self.masks.shape}.")
            self.masks[:] = masks
            self.object_scores[:] = kept["object_scores"]
            self.priors = kept["priors"].copy()
        for t in range(self.clip.num_frames if views_dir is not None else 0):
            view = self.views_dir / f"frame_{t:05d}.jpg"
            shutil.copyfile(views_dir / view.name, view)
            self.views[t] = view

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
            clicks={k: tuple(v) for k, v in self.clicks.items()},
        )
