"""How well a model follows the toy clips' targets: the figures a shipped toy model is held to.

:func:`score_toy_model` runs a predictor on generated clips (seeds that no training used) and compares every
expression's masks, object scores and priors with the ground truth:

* ``single_jf``: mean J&F with one expression per clip (the clip's first), run alone;
* ``multi_jf``: mean J&F per expression over the clips with two or three expressions, run together;
* ``hidden_absent``: of the frames where a target is fully hidden (covered or off the frame), the fraction
  whose object score is below zero (the model says "not visible"), over both kinds of runs;
* ``prior_on_target``: of the frames with a visible target, the fraction where the prior's strongest cell
  lies on the target (the grounding, before SAM 2), over the single runs;
* ``single_jf_by_kind`` and ``multi_jf_by_kind``: the mean J&F per expression kind (attributes, position,
  occlusion) of the single runs and of the runs with several expressions, with their counts;
* ``hidden_absent_by_kind``: ``hidden_absent`` per kind of the expression whose target is hidden, with the
  frame counts (``hidden_frames_by_kind``). A frame's prior cannot tell "the circle on the left" is hidden
  when the other circle, alone in view, is then on the left: only the clip can.
* ``hidden_absent_with_lookalike`` and ``hidden_absent_without_lookalike``: ``hidden_absent`` on the hidden
  frames where another shape that the expression's own words fit is in view (:func:`.referring.lookalikes_in_view`;
  ``hidden_frames_with_lookalike`` of them) and on the others. One frame cannot tell the two apart.
  ``hidden_absent_with_twin`` (``hidden_frames_with_twin``): those of them where the look-alike shares every
  attribute with the target, so that only the two shapes' paths through the clip tell them apart.
* ``single_jf_lost`` and ``multi_jf_lost``: where the J&F below 1 goes, frame by frame: to the outline of a
  mask on the right shape (``mask``), to a mask on another shape (``wrong_object``), to a target in view
  reported hidden (``missed``), to a mask drawn while the target is hidden (``hidden_shown``). Each adds up
  to 1 - J&F, so it tells which part of the model holds a figure back.
* ``mostly_hidden_frames``, ``mostly_hidden_drawn`` and ``single_jf_lost_mostly_hidden``: the single runs'
  frames where the target is in view but under :data:`MOSTLY_HIDDEN_SHARE` of it shows (a shape half out of
  the frame, or coming out from behind another), the share of them with a mask, and the part of
  ``1 - single_jf`` that they lose, whatever the cause.

:func:`score_grounding` looks at the grounding alone (BEiT-3 and the mask prior generator; SAM 2 never runs),
on every phrasing of every target of a clip as training draws them: how often each prior's strongest cell is
on its target, by kind of expression, by the size of the target, and for attribute expressions by the
attributes they name. It tells which words the model has learned (a colour, a shape, a position).

With ``oracle_prior=True`` the single runs get the ground truth as their prior masks (:func:`oracle_prior`) and
the runs with several expressions are skipped: what the rest of the model (SAM 2's tracking and decoding, the
aggregator, the object score) makes of a perfect grounding, which tells a grounding that fails from a
segmentation that fails.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from ...metrics import db_eval_iou, f_measure
from .generator import generate_toy_clip
from .oracle import oracle_prior
from .referring import (
    hidden_lookalikes,
    matches,
    named_attributes,
    spoken_attributes,
    visible_shares,
)
from .scene import ToyConfig


def frame_scores(prediction: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """(T,) each frame's (J + F) / 2 for (T, H, W) bool masks (an empty frame predicted empty scores 1)."""
    region = np.asarray(db_eval_iou(truth, prediction), dtype=np.float64)
    boundary = np.array([f_measure(p, t) for p, t in zip(prediction, truth)], dtype=np.float64)
    return (region + boundary) / 2


def jf(prediction: np.ndarray, truth: np.ndarray) -> float:
    """J&F of (T, H, W) bool masks: the DAVIS means over frames (an empty frame predicted empty scores 1)."""
    return float(np.mean(frame_scores(prediction, truth)))


#: Why a frame falls short of J&F 1 (see :func:`jf_lost_by_cause`).
LOSS_CAUSES = ("mask", "wrong_object", "missed", "hidden_shown")
#: A frame's mask is on another object when less than this share of it covers the target.
ON_TARGET_SHARE = 0.5
#: A target in view is mostly hidden when less than this share of its area shows (.referring.visible_shares).
MOSTLY_HIDDEN_SHARE = 0.3


def frame_causes(prediction: np.ndarray, truth: np.ndarray) -> list[str]:
    """Per frame of (T, H, W) bool masks, what its score is down to (one of :data:`LOSS_CAUSES`, or ``""``
    for a hidden target predicted hidden):

    * ``"hidden_shown"``: the target is fully hidden and a mask is drawn anyway;
    * ``"missed"``: the target is in view and no mask is drawn (the model says "not visible");
    * ``"wrong_object"``: a mask is drawn, less than :data:`ON_TARGET_SHARE` of it on the target (it follows
      another shape: the words were grounded on the wrong one);
    * ``"mask"``: a mask mostly on the target, its outline imperfect.
    """
    causes = []
    for predicted, target in zip(prediction, truth):
        drawn, seen = int(predicted.sum()), bool(target.any())
        if not seen:
            causes.append("hidden_shown" if drawn else "")
        elif not drawn:
            causes.append("missed")
        elif (predicted & target).sum() < ON_TARGET_SHARE * drawn:
            causes.append("wrong_object")
        else:
            causes.append("mask")
    return causes


def jf_lost_by_cause(
    prediction: np.ndarray, truth: np.ndarray, scores: np.ndarray | None = None
) -> dict[str, float]:
    """How much J&F a run loses to each cause of :func:`frame_causes`: the values add up to
    ``1 - jf(prediction, truth)``, since J&F is the mean over frames of (J + F) / 2.

    Args:
        prediction, truth: (T, H, W) bool masks.
        scores: their :func:`frame_scores`, when the caller has them already (the boundary F is the costly part).
    """
    scores = frame_scores(prediction, truth) if scores is None else scores
    lost = dict.fromkeys(LOSS_CAUSES, 0.0)
    for score, cause in zip(scores, frame_causes(prediction, truth)):
        if cause:
            lost[cause] += (1.0 - float(score)) / len(truth)
    return lost


def prior_hits(priors: np.ndarray, truth: np.ndarray) -> list[bool]:
    """Per frame with a visible target: whether the (g, g) prior's strongest cell covers part of the target.

    Args:
        priors: (T, g, g) prior probabilities; truth: (T, H, W) bool.
    """
    return [bool(peak_cell(prior, mask).any()) for prior, mask in zip(priors, truth) if mask.any()]


def peak_cell(prior: np.ndarray, image: np.ndarray) -> np.ndarray:
    """The part of an (H, W) ``image`` (a mask, a label map) under the strongest cell of a (g, g) prior."""
    grid = prior.shape[-1]
    height, width = image.shape
    row, column = np.unravel_index(int(np.argmax(prior)), prior.shape)
    return image[
        row * height // grid : (row + 1) * height // grid,
        column * width // grid : (column + 1) * width // grid,
    ]


def hidden_reported_absent(object_scores: np.ndarray, truth: np.ndarray) -> list[bool]:
    """Per frame where the target is fully hidden: whether its (T,) object score says "not visible"."""
    empty = ~truth.reshape(len(truth), -1).any(-1)
    return (object_scores[empty] < 0).tolist()


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
    # A clip's first expression is for a target hidden on some frames whenever it has one, so the single runs'
    # kinds mix the words with hiding, and some kinds are few; the runs with several expressions hold every
    # target of their clips.
    single_count_by_kind: dict[str, int] = field(default_factory=dict)
    multi_jf_by_kind: dict[str, float] = field(default_factory=dict)
    multi_count_by_kind: dict[str, int] = field(default_factory=dict)
    hidden_absent_by_kind: dict[str, float] = field(default_factory=dict)
    hidden_frames_by_kind: dict[str, int] = field(default_factory=dict)
    # hidden_absent split by whether a look-alike of the target is in view (see referring.lookalikes_in_view).
    hidden_frames_with_lookalike: int = 0
    hidden_absent_with_lookalike: float | None = None
    hidden_absent_without_lookalike: float | None = None
    # Of the frames with a look-alike in view, those where it shares every attribute with the target (a twin).
    hidden_frames_with_twin: int = 0
    hidden_absent_with_twin: float | None = None
    # Where the J&F below 1 goes, as the mean over runs of :func:`jf_lost_by_cause` (each adds up to
    # 1 - single_jf, resp. 1 - multi_jf).
    single_jf_lost: dict[str, float] = field(default_factory=dict)
    multi_jf_lost: dict[str, float] = field(default_factory=dict)
    mostly_hidden_frames: int = 0
    mostly_hidden_drawn: float | None = None
    single_jf_lost_mostly_hidden: float = 0.0

    def as_dict(self) -> dict:
        return {name: _rounded(value) for name, value in dataclasses.asdict(self).items()}


def _rounded(value):
    if isinstance(value, dict):
        return {key: _rounded(figure) for key, figure in value.items()}
    return round(value, 4) if isinstance(value, float) else value


def score_toy_model(
    predictor,
    seeds: Iterable[int],
    config: ToyConfig | None = None,
    oracle: bool = False,
    oracle_target: str = "coverage",
) -> ToyScores:
    """Run ``predictor`` (a :class:`mpgsam2.VideoPredictor`) on the toy clips of ``seeds`` and score it
    (``oracle``: with the ground truth as the single runs' priors, in the form of ``oracle_target``, see
    :func:`oracle_prior` and :func:`.oracle.recorded_prior_target`)."""
    config = config or ToyConfig()
    single, multi = [], []
    single_lost, multi_lost = [], []
    single_by_kind, multi_by_kind = defaultdict(list), defaultdict(list)
    hidden_by_kind, prior = defaultdict(list), []
    # The hidden frames' "reported absent", by whether a look-alike of the target is in view.
    hidden_by_lookalike: dict[bool, list[bool]] = {True: [], False: []}
    hidden_with_twin: list[bool] = []
    mostly_hidden_drawn, mostly_hidden_lost = [], []

    def count_hidden(clip, expression, object_scores: np.ndarray) -> None:
        absent = hidden_reported_absent(object_scores, clip.target_masks(expression))
        hidden_by_kind[expression.kind] += absent
        for reported, lookalike in zip(absent, hidden_lookalikes(clip, expression), strict=True):
            hidden_by_lookalike[lookalike].append(reported)
        twins = hidden_lookalikes(clip, expression, twins=True)
        hidden_with_twin.extend(reported for reported, twin in zip(absent, twins, strict=True) if twin)

    count = 0
    for seed in seeds:
        count += 1
        clip = generate_toy_clip(seed, config)
        first = clip.expressions[0]
        truth = clip.target_masks(first)
        if oracle:
            with oracle_prior(predictor.model, truth, oracle_target):
                (alone,) = predictor.segment(clip.frames, [first.text], logits=False)
        else:
            (alone,) = predictor.segment(clip.frames, [first.text], logits=False)
        scores = frame_scores(alone.masks, truth)
        single.append(float(np.mean(scores)))
        single_lost.append(jf_lost_by_cause(alone.masks, truth, scores))
        single_by_kind[first.kind].append(single[-1])
        shares = visible_shares(clip, first)
        mostly_hidden = (shares > 0) & (shares < MOSTLY_HIDDEN_SHARE)
        mostly_hidden_drawn += alone.masks.any((1, 2))[mostly_hidden].tolist()
        mostly_hidden_lost.append(float(np.sum(1.0 - scores[mostly_hidden])) / len(truth))
        count_hidden(clip, first, alone.object_scores)
        prior += prior_hits(alone.priors, truth)
        if len(clip.expressions) > 1 and not oracle:
            together = predictor.segment(clip.frames, [e.text for e in clip.expressions], logits=False)
            for expression, result in zip(clip.expressions, together):
                truth = clip.target_masks(expression)
                scores = frame_scores(result.masks, truth)
                multi.append(float(np.mean(scores)))
                multi_lost.append(jf_lost_by_cause(result.masks, truth, scores))
                multi_by_kind[expression.kind].append(multi[-1])
                count_hidden(clip, expression, result.object_scores)
    hidden = [absent for frames in hidden_by_kind.values() for absent in frames]
    return ToyScores(
        clips=count,
        single_jf=statistics.mean(single),
        multi_jf=statistics.mean(multi) if multi else None,
        multi_expressions=len(multi),
        hidden_absent=float(np.mean(hidden)) if hidden else None,
        hidden_frames=len(hidden),
        prior_on_target=float(np.mean(prior)) if prior else None,
        single_jf_by_kind={k: statistics.mean(v) for k, v in sorted(single_by_kind.items())},
        single_count_by_kind={k: len(v) for k, v in sorted(single_by_kind.items())},
        multi_jf_by_kind={k: statistics.mean(v) for k, v in sorted(multi_by_kind.items())},
        multi_count_by_kind={k: len(v) for k, v in sorted(multi_by_kind.items())},
        hidden_absent_by_kind={k: float(np.mean(v)) for k, v in sorted(hidden_by_kind.items()) if v},
        hidden_frames_by_kind={k: len(v) for k, v in sorted(hidden_by_kind.items()) if v},
        hidden_frames_with_lookalike=len(hidden_by_lookalike[True]),
        hidden_absent_with_lookalike=_mean_or_none(hidden_by_lookalike[True]),
        hidden_absent_without_lookalike=_mean_or_none(hidden_by_lookalike[False]),
        hidden_frames_with_twin=len(hidden_with_twin),
        hidden_absent_with_twin=_mean_or_none(hidden_with_twin),
        single_jf_lost=_mean_by_cause(single_lost),
        multi_jf_lost=_mean_by_cause(multi_lost),
        mostly_hidden_frames=len(mostly_hidden_drawn),
        mostly_hidden_drawn=_mean_or_none(mostly_hidden_drawn),
        single_jf_lost_mostly_hidden=float(np.mean(mostly_hidden_lost)),
    )


def _mean_or_none(flags: list[bool]) -> float | None:
    return float(np.mean(flags)) if flags else None


def _mean_by_cause(runs: list[dict[str, float]]) -> dict[str, float]:
    return {cause: float(np.mean([run[cause] for run in runs])) for cause in LOSS_CAUSES} if runs else {}


#: Training's draw of a clip's expressions (configs/toy.json): every target, several phrasings of each.
EVERY_PHRASING = ToyConfig(max_expressions=4, expressions_per_object=4)


@dataclass(frozen=True)
class GroundingScores:
    """The figures of :func:`score_grounding`: fractions of the frames with a visible target where the prior's
    strongest cell lies on it (see :func:`prior_hits`)."""

    clips: int
    frames: int
    prior_on_target: float
    by_kind: dict[str, float]
    by_target_size: dict[str, float]
    attributes_by_words: dict[str, float]  # attribute expressions, by the attributes they name
    shape_words_by_size: dict[str, float]  # attribute expressions with a shape word and no colour word
    # Position expressions ("the circle on the left"): the fraction of their frames whose strongest cell is
    # on the target, and on another shape that their attribute words fit (a look-alike: the words are
    # understood, the direction is not), and the hits among those two (0.5 for a choice by chance between
    # two look-alikes).
    position_on_lookalike: float = float("nan")
    position_target_among_lookalikes: float = float("nan")

    def as_dict(self) -> dict:
        return {name: _rounded(value) for name, value in dataclasses.asdict(self).items()}


def peak_owners(prior: np.ndarray, labels: np.ndarray) -> set[int]:
    """The object ids seen in the cell of a (g, g) prior's strongest cell ((H, W) ``labels``: 0 = background)."""
    return set(np.unique(peak_cell(prior, labels)).tolist()) - {0}


def score_grounding(predictor, seeds: Iterable[int], config: ToyConfig = EVERY_PHRASING) -> GroundingScores:
    """Where the priors of ``predictor`` (a :class:`mpgsam2.VideoPredictor`) point, for every expression of
    the toy clips of ``seeds`` (drawn with ``config``: training's several phrasings per target by default).

    Only the global stage runs (:meth:`mpgsam2.VideoPredictor.init_session`), all of a clip's expressions
    at once: about 50 s for 50 clips on two CPU cores.
    """
    groups: dict[str, dict[str, list[bool]]] = {
        "by_kind": defaultdict(list),
        "by_target_size": defaultdict(list),
        "attributes_by_words": defaultdict(list),
        "shape_words_by_size": defaultdict(list),
    }
    every: list[bool] = []
    position_places: list[str] = []  # per frame of a position expression: "target", "lookalike" or "other"
    count = 0
    for seed in seeds:
        count += 1
        clip = generate_toy_clip(seed, config)
        labels = clip.labels
        session = predictor.init_session(clip.frames, [e.text for e in clip.expressions])
        for expression, context in zip(clip.expressions, session.contexts):
            priors, truth = context.priors.cpu().numpy(), clip.target_masks(expression)
            hits = prior_hits(priors, truth)
            if expression.kind == "position":
                words = spoken_attributes(expression)
                for frame in np.flatnonzero(truth.reshape(len(truth), -1).any(-1)):
                    owners = peak_owners(priors[frame], labels[frame])
                    if expression.object_id in owners:
                        position_places.append("target")
                    elif any(matches(clip.objects[k - 1], words) for k in owners):
                        position_places.append("lookalike")
                    else:
                        position_places.append("other")
            size = clip.objects[expression.object_id - 1].size
            every += hits
            groups["by_kind"][expression.kind] += hits
            groups["by_target_size"][size] += hits
            if expression.kind == "attributes":
                words = named_attributes(expression)
                groups["attributes_by_words"][words] += hits
                if "shape" in words and "colour" not in words:
                    groups["shape_words_by_size"][size] += hits
    means = {
        name: {key: float(np.mean(hits)) for key, hits in sorted(group.items()) if hits}
        for name, group in groups.items()
    }
    on_target, on_lookalike = position_places.count("target"), position_places.count("lookalike")
    return GroundingScores(
        clips=count,
        frames=len(every),
        prior_on_target=float(np.mean(every)) if every else float("nan"),
        **means,
        position_on_lookalike=on_lookalike / len(position_places) if position_places else float("nan"),
        position_target_among_lookalikes=(
            on_target / (on_target + on_lookalike) if on_target + on_lookalike else float("nan")
        ),
    )
