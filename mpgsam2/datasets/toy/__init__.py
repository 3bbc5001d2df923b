"""A toy referring video dataset: coloured shapes moving, crossing, hiding and leaving the frame.

Every clip is generated deterministically from one integer seed (:func:`generate_toy_clip`). It shows two to
four shapes (square, circle, triangle, star) of six colours and two sizes over a plain or textured
background. Shapes move and bounce; in many clips one shape leaves the frame and comes back, and a small
shape passes behind a big one until it is fully covered. The ground truth of an object on a frame is its
*visible* part: empty where it is fully covered or off the frame.

Each expression names exactly one object of its clip, which is checked on the rendered masks: by its
attributes (``"the small blue circle"``), its position among look-alikes (``"the star on the left"``) or
what covers what (``"the triangle that goes behind the square"``, ``"the shape that passes in front of the
star"``).

The modules, by job: :mod:`.vocabulary` (the words), :mod:`.scene` (the records and :class:`ToyConfig`),
:mod:`.drawing` (shapes, backgrounds, frames), :mod:`.motion` (paths), :mod:`.referring` (expressions),
:mod:`.generator` (one clip from a seed), :mod:`.writer` (the Ref-YouTube-VOS layout, which
:class:`mpgsam2.datasets.RefYouTubeVOS` reads; a training configuration asks for it with a dataset spec's
``toy`` mapping, see ``configs/toy.json``), :mod:`.scoring` (what a model's masks and priors mean on held-out
clips) and :mod:`.probing` (what its image encoder's patch tokens carry).
"""

from __future__ import annotations

from .drawing import shape_mask
from .generator import generate_toy_clip
from .referring import find_expressions
from .scene import ToyClip, ToyConfig, ToyExpression, ToyObject
from .vocabulary import COLOURS, KINDS, POSITION_PHRASES, POSITIONS, SHAPES, SIZES, VOCABULARY
from .writer import WRITE_OPTIONS, prepare_toy_split, toy_meta_path, video_name, write_toy_dataset

__all__ = [
    "COLOURS",
    "KINDS",
    "POSITIONS",
    "POSITION_PHRASES",
    "SHAPES",
    "SIZES",
    "VOCABULARY",
    "WRITE_OPTIONS",
    "ToyClip",
    "ToyConfig",
    "ToyExpression",
    "ToyObject",
    "find_expressions",
    "generate_toy_clip",
    "prepare_toy_split",
    "shape_mask",
    "toy_meta_path",
    "video_name",
    "write_toy_dataset",
]
