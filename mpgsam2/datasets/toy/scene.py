"""The records of a toy clip: how clips are drawn (:class:`ToyConfig`), its shapes, expressions and pixels."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: The fewest frames a clip can have: a shape leaves the frame and comes back within it.
MIN_FRAMES = 6


@dataclass(frozen=True)
class ToyConfig:
    """How clips are drawn. Lengths are pixels of the (square) frame; ranges are (low, high) of a uniform."""

    frame_size: int = 128
    num_frames: int = 10
    min_objects: int = 2
    max_objects: int = 4
    small_radius: tuple[float, float] = (8.0, 10.0)
    big_radius: tuple[float, float] = (15.0, 19.0)
    speed: tuple[float, float] = (1.5, 5.0)  # pixels per frame of the freely moving shapes
    exit_probability: float = 0.7  # a shape leaves the frame and comes back (a second one: half as likely)
    hide_probability: float = 0.6  # a small shape goes fully behind a big one
    lookalike_probability: float = 0.35  # a shape copies another's colour and shape (needs position words)
    min_expressions: int = 2  # shapes are drawn again until this many objects have an expression
    max_expressions: int = 3  # objects with expressions, per clip
    # Several phrasings of one target give training many texts on the same frames; evaluation keeps one per
    # object, so that a clip's expressions are for different objects.
    expressions_per_object: int = 1
    # Occlusion words need a clear case: the front shape covers at least ``occluded`` of the target's area
    # on some frame, and never more than ``not_occluded`` of any other shape the words could mean.
    occluded: float = 0.5
    not_occluded: float = 0.05
    position_margin: float = 4.0  # pixels between the centres of the extreme shape and the others

    def __post_init__(self) -> None:
        if self.num_frames < MIN_FRAMES:
            raise ValueError(
                f"Toy clips need at least {MIN_FRAMES} frames (to leave the frame and come back)."
            )
        if not 2 <= self.min_objects <= self.max_objects:
            raise ValueError("Toy clips need 2 <= min_objects <= max_objects.")
        if self.min_expressions > min(self.max_expressions, self.max_objects):
            raise ValueError("min_expressions exceeds max_expressions or max_objects.")
        if self.expressions_per_object < 1:
            raise ValueError("expressions_per_object must be at least 1.")

    @classmethod
    def from_dict(cls, options: dict) -> ToyConfig:
        """The configuration of a JSON mapping (lists become tuples); unknown keys raise a ValueError."""
        unknown = sorted(set(options) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(
                f"Unknown toy dataset option(s) {unknown}; allowed: {sorted(cls.__dataclass_fields__)}."
            )
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in options.items()})


@dataclass(frozen=True)
class ShapeDraft:
    """A shape's looks before it moves (the generator may still change them to make a hiding pair)."""

    shape: str  # one of vocabulary.SHAPES
    colour: str  # a key of vocabulary.COLOURS
    size: str  # "small" or "big"
    radius: float  # pixels; each shape's outline is scaled to about the area of a disc of this radius


@dataclass(frozen=True)
class ToyObject:
    """One shape of a clip. ``object_id`` is its label in the annotation PNGs (1, 2, ...)."""

    object_id: int
    shape: str
    colour: str
    size: str
    radius: float
    depth: int  # drawing order: a higher depth is drawn later, in front
    centres: np.ndarray = field(repr=False, compare=False)  # (T, 2) x, y in pixels, possibly off the frame


@dataclass(frozen=True)
class ToyExpression:
    """A referring expression and its one target."""

    text: str
    object_id: int
    kind: str  # one of vocabulary.KINDS


@dataclass(frozen=True)
class ToyClip:
    """One generated clip with K objects (T frames of H x W)."""

    seed: int
    frames: np.ndarray = field(repr=False)  # (T, H, W, 3) uint8 RGB
    # (K, T, H, W) bool: object k + 1's visible part, empty where it is fully covered or off the frame.
    masks: np.ndarray = field(repr=False)
    full_masks: np.ndarray = field(
        repr=False
    )  # (K, T, H, W) bool: each object's in-frame area, covered or not
    objects: tuple[ToyObject, ...]
    expressions: tuple[ToyExpression, ...]

    @property
    def labels(self) -> np.ndarray:
        """(T, H, W) uint8: the id of the object seen at each pixel, 0 for the background."""
        labels = np.zeros(self.masks.shape[1:], dtype=np.uint8)
        for index, mask in enumerate(self.masks):
            labels[mask] = index + 1
        return labels

    def target_masks(self, expression: ToyExpression) -> np.ndarray:
        """(T, H, W) bool ground truth of one expression."""
        return self.masks[expression.object_id - 1]
