"""How well a model follows the toy clips' targets: the figures a shipped toy model is held to.

:func:`score_toy_model` runs a predictor on generated clips (seeds that no training used) and compares every
expression's masks, object scores and priors with the ground truth:

* ``single_jf``: mean J&F with one expression per clip (the clip's first), run alone;
* ``multi_jf``: mean J&F per expression over the clips with two or three expressions, run together;
* ``hidden_absent``: of the frames where a target is fully hidden (covered or off the frame), the fraction
  whose object score is below zero (the model says "not visible"), over both kinds of runs;
* ``prior_on_target``: of the frames with a visible target, the fraction where the prior's strongest cell
  lies on the target (the grounding, before SAM 2), over the single runs;
* ``single_jf_by_kind``: the single runs' mean J&F per expression kind (attributes, position, occlusion).

With ``oracle_prior=True`` the single runs get the ground truth as their prior masks (:func:`oracle_prior`) and
the runs with several expressions are skipped: what the rest of the model (SAM 2's tracking and decoding, the
aggregator, the object score) makes of a perfect grounding, which tells a grounding that fails from a
segmentation that fails.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections import defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ...metrics import db_eval_iou, f_measure
from .generator import generate_toy_clip
from .scene import ToyConfig


def jf(prediction: np.ndarray, truth: np.ndarray) -> float:
    """J&F of (T, H, W) bool masks: the DAVIS means over frames (an empty frame predicted empty scores 1)."""
    region = float(np.mean(db_eval_iou(truth, prediction)))
    boundary = float(np.mean([f_measure(p, t) for p, t in zip(prediction, truth)]))
    return (region + boundary) / 2


def prior_hits(priors: np.ndarray, truth: np.ndarray) -> list[bool]:
    """Per frame with a visible target: whether the (g, g) prior's strongest cell covers part of the target.

    Args:
        priors: (T, g, g) prior probabilities; truth: (T, H, W) bool.
    """
    grid = priors.shape[-1]
    height, width = truth.shape[1:]
    hits = []
    for prior, mask in zip(priors, truth):
        if not mask.any():
            continue
        row, column = np.unravel_index(int(np.argmax(prior)), prior.shape)
        cell = mask[
            row * height // grid : (row + 1) * height // grid,
            column * width // grid : (column + 1) * width // grid,
        ]
        hits.append(bool(cell.any()))
    return hits


def hidden_reported_absent(object_scores: np.ndarray, truth: np.ndarray) -> list[bool]:
    """Per frame where the target is fully hidden: whether its (T,) object score says "not visible"."""
    empty = ~truth.reshape(len(truth), -1).any(-1)
    return (object_scores[empty] < 0).tolist()


#: The logit of a fully covered cell of an oracle prior (sigmoid: 0.9997); an empty cell gets its negative.
ORACLE_LOGIT = 8.0


@contextmanager
def oracle_prior(model: torch.nn.Module, truth: np.ndarray) -> Iterator[None]:
    """While open, every prior the model's mask prior generator makes is the ground truth instead.

    Each cell's logit is ``ORACLE_LOGIT * (2 c - 1)``, c the fraction of the cell the target covers (the
    prior loss's target), so a covered cell is near 1 and an empty one near 0.

    Args:
        model: an :class:`mpgsam2.MPGSAM2`.
        truth: (T, H, W) bool masks of the one expression the clip is run with.
    """
    masks = torch.from_numpy(np.ascontiguousarray(truth)).float()[:, None]

    def replace(module, inputs, context):
        grid = context.prior_logits.shape[-2:]
        fractions = F.interpolate(masks, size=grid, mode="area")[:, 0]
        logits = (ORACLE_LOGIT * (2 * fractions - 1)).to(context.prior_logits)
        return dataclasses.replace(context, prior_logits=logits, priors=torch.sigmoid(logits))

    handle = model.mask_prior.register_forward_hook(replace)
    try:
        yield
    finally:
        handle.remove()


@dataclass(frozen=True)
class ToyScores:
    """The figures of :func:`score_toy_model` (see the module's docstring)."""

    clips: int
    single_jf: float
    multi_jf: float | None
    multi_expressions: int
    hidden_absent: float | None
    hidden_frames: int
    prior_on_target: float | None
    single_jf_by_kind: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict:
        def rounded(value):
            return round(value, 4) if isinstance(value, float) else value

        figures = {
            name: rounded(value) for name, value in self.__dict__.items() if name != "single_jf_by_kind"
        }
        return {**figures, "single_jf_by_kind": {k: round(v, 4) for k, v in self.single_jf_by_kind.items()}}


def score_toy_model(
    predictor, seeds: Iterable[int], config: ToyConfig | None = None, oracle: bool = False
) -> ToyScores:
    """Run ``predictor`` (a :class:`mpgsam2.VideoPredictor`) on the toy clips of ``seeds`` and score it
    (``oracle``: with the ground truth as the single runs' priors, see :func:`oracle_prior`)."""
    config = config or ToyConfig()
    single, multi, by_kind = [], [], defaultdict(list)
    hidden, prior = [], []
    count = 0
    for seed in seeds:
        count += 1
        clip = generate_toy_clip(seed, config)
        first = clip.expressions[0]
        truth = clip.target_masks(first)
        if oracle:
            with oracle_prior(predictor.model, truth):
                (alone,) = predictor.segment(clip.frames, [first.text], logits=False)
        else:
            (alone,) = predictor.segment(clip.frames, [first.text], logits=False)
        single.append(jf(alone.masks, truth))
        by_kind[first.kind].append(single[-1])
        hidden += hidden_reported_absent(alone.object_scores, truth)
        prior += prior_hits(alone.priors, truth)
        if len(clip.expressions) > 1 and not oracle:
            together = predictor.segment(clip.frames, [e.text for e in clip.expressions], logits=False)
            for expression, result in zip(clip.expressions, together):
                truth = clip.target_masks(expression)
                multi.append(jf(result.masks, truth))
                hidden += hidden_reported_absent(result.object_scores, truth)
    return ToyScores(
        clips=count,
        single_jf=statistics.mean(single),
        multi_jf=statistics.mean(multi) if multi else None,
        multi_expressions=len(multi),
        hidden_absent=float(np.mean(hidden)) if hidden else None,
        hidden_frames=len(hidden),
        prior_on_target=float(np.mean(prior)) if prior else None,
        single_jf_by_kind={k: statistics.mean(v) for k, v in sorted(by_kind.items())},
    )
