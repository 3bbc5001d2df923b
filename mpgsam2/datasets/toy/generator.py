"""One toy clip from one seed: shapes are drawn, moved, rendered and described until enough objects have
an unambiguous expression."""

from __future__ import annotations

import numpy as np

from .drawing import render_clip
from .motion import plan_motion
from .referring import choose_expressions, find_expressions
from .scene import ShapeDraft, ToyClip, ToyConfig, ToyObject
from .vocabulary import COLOURS, SHAPES, SIZES

#: Draws of a whole clip before a seed is given up (a clip rarely needs more than a few).
MAX_ATTEMPTS = 100


def draw_shapes(rng: np.random.Generator, config: ToyConfig) -> list[ShapeDraft]:
    """``min_objects`` to ``max_objects`` shapes; some copy an earlier one's shape and colour, so that only
    their size or position tells them apart."""
    count = int(rng.integers(config.min_objects, config.max_objects + 1))
    shapes: list[ShapeDraft] = []
    for _ in range(count):
        if shapes and rng.random() < config.lookalike_probability:
            model = shapes[int(rng.integers(len(shapes)))]
            shape, colour = model.shape, model.colour
        else:
            shape, colour = str(rng.choice(SHAPES)), str(rng.choice(list(COLOURS)))
        size = str(rng.choice(SIZES))
        radius = float(rng.uniform(*(config.small_radius if size == "small" else config.big_radius)))
        shapes.append(ShapeDraft(shape, colour, size, radius))
    return shapes


def generate_toy_clip(seed: int, config: ToyConfig | None = None) -> ToyClip:
    """One clip, the same for the same seed and configuration.

    Returns:
        A :class:`ToyClip`: frames (T, H, W, 3) uint8, per-object visible masks (K, T, H, W), and expressions
        for ``config.min_expressions`` to ``config.max_expressions`` different objects (up to
        ``config.expressions_per_object`` each), each naming its target alone, each target visible on at
        least one frame. Shapes and motion are drawn again (from the same random stream) until enough objects
        have an expression.
    """
    config = config or ToyConfig()
    rng = np.random.default_rng(seed)
    for _ in range(MAX_ATTEMPTS):
        plan = plan_motion(rng, draw_shapes(rng, config), config)
        frames, visible, full = render_clip(rng, plan.shapes, plan.paths, plan.order, config)
        objects = tuple(
            ToyObject(
                object_id=k + 1,
                shape=item.shape,
                colour=item.colour,
                size=item.size,
                radius=item.radius,
                depth=plan.order.index(k),
                centres=path,
            )
            for k, (item, path) in enumerate(zip(plan.shapes, plan.paths))
        )
        candidates = find_expressions(objects, full, config)
        shown = visible.reshape(*visible.shape[:2], -1).any(-1)  # (K, T)
        # A shape never seen (always covered or off the frame) is no target, whatever its words.
        for k, item in enumerate(objects):
            if not shown[k].any():
                candidates[item.object_id] = []
        if sum(1 for found in candidates.values() if found) < config.min_expressions:
            continue
        partly_hidden = {
            item.object_id: bool(shown[k].any() and not shown[k].all()) for k, item in enumerate(objects)
        }
        expressions = choose_expressions(
            rng, candidates, partly_hidden, config.max_expressions, config.expressions_per_object
        )
        return ToyClip(seed, frames, visible, full, objects, expressions)
    raise RuntimeError(
        f"No clip with {config.min_expressions} expressions in {MAX_ATTEMPTS} draws (seed {seed})."
    )
