"""How the shapes of a toy clip move: bouncing, leaving the frame and coming back, hiding behind another.

Every path is (T, 2) centres (x, y) in pixels, drawn from the clip's random stream; the order of the draws
is part of the dataset (a seed gives the same clip only while it stays the same).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .drawing import INSCRIBED_RADIUS, SHAPE_EXTENT
from .scene import ShapeDraft, ToyConfig

#: Pixels by which a hiding shape's centre may stray from its cover's, each way, on the hidden frames.
HIDING_JITTER = 1.0
# The cover of a hiding pair moves slowly (pixels per frame), so that the hidden shape can keep up.
COVER_SPEED = (0.5, 2.0)


@dataclass(frozen=True)
class MotionPlan:
    """The shapes of a clip (as changed for a hiding pair), their paths and the drawing order."""

    shapes: tuple[ShapeDraft, ...]
    paths: tuple[np.ndarray, ...]  # per shape, (T, 2) centres
    order: tuple[int, ...]  # shape indices from back to front


def bouncing_path(rng: np.random.Generator, radius: float, config: ToyConfig) -> np.ndarray:
    """(T, 2) centres of a shape moving at constant speed and bouncing off the frame's edges."""
    size, frames = config.frame_size, config.num_frames
    low, high = radius, size - radius
    position = rng.uniform(low, high, 2)
    angle = rng.uniform(0, 2 * math.pi)
    velocity = rng.uniform(*config.speed) * np.array([math.cos(angle), math.sin(angle)])
    path = np.empty((frames, 2))
    for t in range(frames):
        path[t] = position
        position = position + velocity
        for axis in range(2):
            if position[axis] < low or position[axis] > high:
                velocity[axis] = -velocity[axis]
                position[axis] = np.clip(2 * np.clip(position[axis], low, high) - position[axis], low, high)
    return path


def keyframe_path(times: Sequence[float], points: Sequence[np.ndarray], frames: int) -> np.ndarray:
    """(T, 2) centres interpolated linearly between keyframes (``times[i]``, ``points[i]``)."""
    t = np.arange(frames, dtype=np.float64)
    stacked = np.stack(points)
    return np.stack([np.interp(t, times, stacked[:, axis]) for axis in range(2)], axis=1)


def exit_path(rng: np.random.Generator, radius: float, config: ToyConfig) -> np.ndarray:
    """(T, 2) centres of a shape that leaves the frame by one edge for one to four frames and comes back."""
    size, frames = config.frame_size, config.num_frames
    away = int(rng.integers(1, min(5, frames - 3)))
    leave = int(rng.integers(2, frames - away - 1))  # the first frame wholly off the frame
    back = leave + away  # the first frame in view again
    axis, side = int(rng.integers(0, 2)), int(rng.integers(0, 2))
    outside = np.empty(2)
    # 1.5 radii beyond the edge clears every shape's outline (the farthest point is 1.35 radii away).
    outside[axis] = -radius * 1.5 - 2 if side == 0 else size + radius * 1.5 + 2
    outside[1 - axis] = rng.uniform(radius, size - radius)
    start, end = rng.uniform(radius, size - radius, 2), rng.uniform(radius, size - radius, 2)
    # Off the frame on frames leave .. back - 1: the keyframes sit on the first and the last of them.
    return keyframe_path([0, leave, back - 1, frames - 1], [start, outside, outside, end], frames)


def hiding_path(rng: np.random.Generator, cover: np.ndarray, config: ToyConfig) -> tuple[np.ndarray, range]:
    """(T, 2) centres of a shape that passes behind another (whose centres are ``cover``, (T, 2)), and the
    frames on which it sits (within :data:`HIDING_JITTER`) on the cover's centre."""
    frames = config.num_frames
    away = int(rng.integers(1, 4))
    first = int(rng.integers(1, frames - away))
    hidden = range(first, first + away)
    size = config.frame_size
    start, end = rng.uniform(10, size - 10, 2), rng.uniform(10, size - 10, 2)
    times = [0, *hidden, frames - 1]
    points = [start, *(cover[t] + rng.uniform(-HIDING_JITTER, HIDING_JITTER, 2) for t in hidden), end]
    # Hidden from the first or until the last frame: that keyframe replaces the free end.
    if times[0] == times[1]:
        times, points = times[1:], points[1:]
    if times[-1] == times[-2]:
        times, points = times[:-1], points[:-1]
    return keyframe_path(times, points, frames), hidden


def make_hiding_pair(
    rng: np.random.Generator, behind: ShapeDraft, front: ShapeDraft, config: ToyConfig
) -> tuple[ShapeDraft, ShapeDraft]:
    """``behind`` made small and ``front`` a big square or circle large enough to cover it whole.

    A triangle or star cannot cover a centred shape of half its size, so the front shape's kind (and the
    back one's size) are drawn again when needed; this makes big squares and circles a little more common.
    """
    if behind.size != "small":
        behind = dataclasses.replace(behind, size="small", radius=float(rng.uniform(*config.small_radius)))
    if front.size != "big" or front.shape not in INSCRIBED_RADIUS:
        front = dataclasses.replace(front, size="big", radius=float(rng.uniform(*config.big_radius)))
        if front.shape not in INSCRIBED_RADIUS:
            front = dataclasses.replace(front, shape=str(rng.choice(list(INSCRIBED_RADIUS))))
    # The back shape's farthest point, wherever the jitter puts it, stays inside the front one.
    needed = (SHAPE_EXTENT[behind.shape] * behind.radius + 2 * HIDING_JITTER) / INSCRIBED_RADIUS[front.shape]
    return behind, dataclasses.replace(front, radius=max(front.radius, needed))


def plan_motion(rng: np.random.Generator, shapes: Sequence[ShapeDraft], config: ToyConfig) -> MotionPlan:
    """Paths for every shape: all bounce; perhaps a small one hides behind a big one (the pair is drawn
    adjacent in depth); perhaps one or two others leave the frame and come back."""
    shapes = list(shapes)
    order = [int(i) for i in rng.permutation(len(shapes))]
    paths = [bouncing_path(rng, item.radius, config) for item in shapes]
    used: set[int] = set()
    if rng.random() < config.hide_probability:
        behind, front = (int(i) for i in rng.choice(len(shapes), 2, replace=False))
        shapes[behind], shapes[front] = make_hiding_pair(rng, shapes[behind], shapes[front], config)
        paths[front] = _cover_path(rng, shapes[front].radius, config)
        paths[behind], _ = hiding_path(rng, paths[front], config)
        order.remove(behind)
        order.insert(order.index(front), behind)  # just behind its cover
        used = {behind, front}
    for probability in (config.exit_probability, config.exit_probability / 2):
        free = [i for i in range(len(shapes)) if i not in used]
        if free and rng.random() < probability:
            chosen = free[int(rng.integers(len(free)))]
            paths[chosen] = exit_path(rng, shapes[chosen].radius, config)
            used.add(chosen)
    return MotionPlan(tuple(shapes), tuple(paths), tuple(order))


def _cover_path(rng: np.random.Generator, radius: float, config: ToyConfig) -> np.ndarray:
    # Slower than the free shapes, and kept 4 pixels further from the edges.
    return bouncing_path(rng, radius + 4, dataclasses.replace(config, speed=COVER_SPEED))
