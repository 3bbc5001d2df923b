"""The referring expressions of a toy clip: every unambiguous one, checked on the rendered masks, and the
few that a clip keeps.

Three kinds of words pick a target:

* attributes: ``"the red square"``, ``"the small blue circle"``, ``"the green shape"``, ``"the star"``;
* position among the shapes that match the words: ``"the circle on the left"``, ``"the shape at the top"``;
* occlusion: ``"the triangle that goes behind the square"``, ``"the shape that passes in front of the star"``.

Read back, an expression's own words (:func:`spoken_attributes`) say which other shapes it could be taken for
(:func:`lookalikes_in_view`): what one frame cannot tell from the target.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

from .drawing import shape_mask
from .scene import ToyClip, ToyConfig, ToyExpression, ToyObject
from .vocabulary import COLOURS, KINDS, POSITION_PHRASES, POSITIONS, SHAPES, SIZES

#: The attributes an expression can name, in the order they are spoken.
ATTRIBUTES = ("size", "colour", "shape")


def describe(attributes: dict[str, str]) -> str:
    """``{"size": "small", "colour": "blue", "shape": "circle"}`` -> ``"small blue circle"``; without a
    shape, ``"shape"`` stands in (``{"colour": "red"}`` -> ``"red shape"``)."""
    words = [attributes[key] for key in ("size", "colour") if key in attributes]
    return " ".join([*words, attributes.get("shape", "shape")])


def matches(item: ToyObject, attributes: dict[str, str]) -> bool:
    """Whether the object has every one of the attributes."""
    return all(getattr(item, key) == value for key, value in attributes.items())


def attribute_sets(item: ToyObject) -> list[dict[str, str]]:
    """Every subset of the object's size, colour and shape, smallest first (the empty one: "the shape")."""
    values = {key: getattr(item, key) for key in ATTRIBUTES}
    return [
        {key: values[key] for key in keys}
        for count in range(len(ATTRIBUTES) + 1)
        for keys in itertools.combinations(ATTRIBUTES, count)
    ]


def unique_attribute_sets(objects: Sequence[ToyObject], index: int) -> list[dict[str, str]]:
    """The attribute sets that fit object ``index`` and no other, smallest first."""
    return [
        attributes
        for attributes in attribute_sets(objects[index])
        if [k for k, other in enumerate(objects) if matches(other, attributes)] == [index]
    ]


def is_extreme(
    objects: Sequence[ToyObject],
    full: np.ndarray,
    index: int,
    others: Sequence[int],
    direction: str,
    margin: float,
) -> bool:
    """Whether object ``index`` is beyond each of ``others`` in ``direction`` by ``margin`` pixels (centre to
    centre) on every frame where both are in view; never when one of them is never in view with it.

    Args:
        full: (K, T, H, W) whole in-frame masks.
    """
    axis, sign = POSITIONS[direction]
    in_view = full.reshape(*full.shape[:2], -1).any(-1)  # (K, T)
    for other in others:
        together = in_view[index] & in_view[other]
        if not together.any():
            return False
        gap = sign * (objects[index].centres[together, axis] - objects[other].centres[together, axis])
        if gap.min() < margin:
            return False
    return True


def coverage(objects: Sequence[ToyObject], full: np.ndarray, behind: int, front: int) -> np.ndarray:
    """(T,) the fraction of ``behind``'s in-frame area under ``front``; 0 when ``front`` is drawn behind it.

    Args:
        full: (K, T, H, W) whole in-frame masks.
    """
    frames = full.shape[1]
    if objects[front].depth < objects[behind].depth:
        return np.zeros(frames)
    area = full[behind].reshape(frames, -1).sum(-1)
    covered = (full[behind] & full[front]).reshape(frames, -1).sum(-1)
    return np.where(area > 0, covered / np.maximum(area, 1), 0.0)


def find_expressions(
    objects: Sequence[ToyObject], full: np.ndarray, config: ToyConfig
) -> dict[int, list[ToyExpression]]:
    """Every unambiguous expression of every object (object id -> expressions), checked on the masks.

    Args:
        objects: the clip's K objects (index k is object id k + 1).
        full: (K, T, H, W) whole in-frame masks (which parts are covered follows from them and the depths).
    """
    found: dict[int, list[ToyExpression]] = {item.object_id: [] for item in objects}
    covered = {
        (behind, front): coverage(objects, full, behind, front)
        for behind, front in itertools.permutations(range(len(objects)), 2)
    }
    for index, item in enumerate(objects):
        expressions = found[item.object_id]
        for attributes in unique_attribute_sets(objects, index):
            expressions.append(ToyExpression(f"the {describe(attributes)}", item.object_id, "attributes"))
        for attributes in attribute_sets(item):
            members = [k for k, other in enumerate(objects) if matches(other, attributes)]
            if len(members) < 2:
                continue  # the attributes alone name it: the position words add nothing
            rivals = [k for k in members if k != index]
            for direction, words in POSITION_PHRASES.items():
                if is_extreme(objects, full, index, rivals, direction, config.position_margin):
                    text = f"the {describe(attributes)} {words}"
                    expressions.append(ToyExpression(text, item.object_id, "position"))
        for other in range(len(objects)):
            if other == index:
                continue
            names = unique_attribute_sets(objects, other)
            if not names:
                continue  # the other shape cannot be named by its attributes alone
            other_words = describe(names[0])
            for attributes in attribute_sets(item):
                rivals = [
                    k for k, o in enumerate(objects) if matches(o, attributes) and k not in (other, index)
                ]
                # "goes behind": the other shape covers this one clearly, and no rival more than slightly.
                if covered[(index, other)].max() >= config.occluded and all(
                    covered[(k, other)].max() <= config.not_occluded for k in rivals
                ):
                    text = f"the {describe(attributes)} that goes behind the {other_words}"
                    expressions.append(ToyExpression(text, item.object_id, "behind"))
                # "passes in front of": this shape covers the other clearly, and no rival more than slightly.
                if covered[(other, index)].max() >= config.occluded and all(
                    covered[(other, k)].max() <= config.not_occluded for k in rivals
                ):
                    text = f"the {describe(attributes)} that passes in front of the {other_words}"
                    expressions.append(ToyExpression(text, item.object_id, "in_front"))
    return found


def choose_expressions(
    rng: np.random.Generator,
    candidates: dict[int, list[ToyExpression]],
    partly_hidden: dict[int, bool],
    max_objects: int,
    per_object: int = 1,
) -> tuple[ToyExpression, ...]:
    """Expressions for up to ``max_objects`` objects, ``per_object`` each at most: one for every object,
    then a second for every object, and so on; objects hidden on some frames first.

    Each expression draws a kind first, one the object has not used yet while there is one (so that the many
    attribute phrasings do not crowd out the few position and occlusion ones), then a phrasing of that kind,
    the shortest ones twice as likely.

    Args:
        candidates: object id -> its unambiguous expressions (see :func:`find_expressions`).
        partly_hidden: object id -> whether it is visible on some frames but not all.
    """
    objects = [k for k in candidates if candidates[k]]
    rng.shuffle(objects)
    objects.sort(key=lambda k: not partly_hidden[k])  # stable: shuffled within each group
    objects = objects[:max_objects]
    chosen: list[ToyExpression] = []
    used_kinds: dict[int, set[str]] = {k: set() for k in objects}
    for _ in range(per_object):
        for object_id in objects:
            options = [e for e in candidates[object_id] if e not in chosen]
            if not options:
                continue
            kinds = sorted({e.kind for e in options}, key=KINDS.index)
            fresh = [k for k in kinds if k not in used_kinds[object_id]] or kinds
            kind = fresh[int(rng.integers(len(fresh)))]
            used_kinds[object_id].add(kind)
            phrasings = [e for e in options if e.kind == kind]
            shortest = min(len(e.text) for e in phrasings)
            weights = np.array([2.0 if len(e.text) == shortest else 1.0 for e in phrasings])
            chosen.append(phrasings[int(rng.choice(len(phrasings), p=weights / weights.sum()))])
    return tuple(chosen)


_WORDS = {"size": set(SIZES), "colour": set(COLOURS), "shape": set(SHAPES)}


def spoken_attributes(expression: ToyExpression) -> dict[str, str]:
    """The size, colour and shape words of an expression's own description, before what it says about
    another shape: ``"the small star that goes behind the red square"`` -> ``{"size": "small", "shape":
    "star"}``."""
    own = expression.text.split(" that ", 1)[0].split()
    return {name: word for word in own for name, values in _WORDS.items() if word in values}


def named_attributes(expression: ToyExpression) -> str:
    """The attributes an attribute expression names, in spoken order: ``"the small star"`` -> ``"size+shape"``
    (``"none"`` for ``"the shape"``)."""
    spoken = spoken_attributes(expression)
    return "+".join(name for name in ATTRIBUTES if name in spoken) or "none"


def lookalikes_in_view(clip: ToyClip, expression: ToyExpression, twins: bool = False) -> np.ndarray:
    """(T,) bool: the frames where a shape other than the target, one that the expression's own words fit
    (:func:`spoken_attributes`: "the circle on the left" -> any circle), is at least partly in view.

    Attribute expressions name their target alone, so they have none; position expressions always have one
    in the clip, and "goes behind" ones may. ``twins``: only shapes that share every attribute with the
    target (its size, colour and kind), which nothing but their paths through the clip tells apart from it.
    """
    words = spoken_attributes(expression)
    if twins:
        target = clip.objects[expression.object_id - 1]
        words = {name: getattr(target, name) for name in ATTRIBUTES}
    seen = clip.masks.reshape(*clip.masks.shape[:2], -1).any(-1)  # (K, T)
    rivals = [
        k
        for k, item in enumerate(clip.objects)
        if item.object_id != expression.object_id and matches(item, words)
    ]
    return seen[rivals].any(0) if rivals else np.zeros(seen.shape[1], dtype=bool)


def hidden_frames(clip: ToyClip, expression: ToyExpression) -> np.ndarray:
    """(T,) bool: the frames where the expression's target is fully hidden (its mask empty)."""
    truth = clip.target_masks(expression)
    return ~truth.reshape(len(truth), -1).any(-1)


def hidden_lookalikes(clip: ToyClip, expression: ToyExpression, twins: bool = False) -> list[bool]:
    """Per frame where the expression's target is fully hidden, in order: whether a look-alike (or with
    ``twins``, a twin) is in view (:func:`lookalikes_in_view`)."""
    return lookalikes_in_view(clip, expression, twins)[hidden_frames(clip, expression)].tolist()


def visible_shares(clip: ToyClip, expression: ToyExpression) -> np.ndarray:
    """(T,) float: the share of the target's area in view per frame, 0 where it is hidden and 1 where it is
    whole (a shape cut by the frame's edge or covered by another shows less)."""
    target = clip.objects[expression.object_id - 1]
    seen = clip.target_masks(expression).reshape(len(clip.frames), -1).sum(-1)
    # The whole shape drawn on a canvas of its own, at the same sub-pixel offset: the same pixels as in the
    # frame where it is whole.
    margin = int(np.ceil(2 * target.radius)) + 1
    whole = [
        shape_mask(target.shape, margin + x % 1, margin + y % 1, target.radius, 2 * margin + 1).sum()
        for x, y in target.centres
    ]
    return seen / np.asarray(whole, dtype=np.float64)
