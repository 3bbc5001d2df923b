"""The official training losses: sigmoid focal, dice over the clip, and the mask-text similarity term.

The official criterion (ReferFormer's ``SetCriterion`` with ``losses = ["masks", "sim"]``) computes, for a
batch of clips whose predictions are logits at SAM 2's square resolution ``S`` (1024 for the released
models) and whose ground truth is resized to ``S`` with nearest-neighbour interpolation:

* ``loss_mask``: sigmoid focal loss (alpha 0.25, gamma 2), averaged over all frames and pixels of each
  clip, summed over clips, divided by ``num_boxes``;
* ``loss_dice``: ``1 - (2 sum(p g) + 1) / (sum(p) + sum(g) + 1)`` over each clip's whole volume, summed
  over clips, divided by ``num_boxes``;
* ``loss_sim``: the mean squared difference of two cosine similarities per frame (see
  :func:`mask_text_similarity_loss`), averaged over every frame of the batch;

with ``num_boxes`` the number of frames in which the target is visible, summed over the batch, averaged
over the processes and at least 1 (:func:`count_visible_frames`). The total is
``2 loss_mask + 5 loss_dice + 2 loss_sim`` (:class:`LossWeights`).

Not in the official recipe, for models trained from scratch (weight 0, left out, by default):

* ``loss_object``, SAM 2's own object-score loss (:func:`object_score_loss`). MPG-SAM 2 inherits SAM 2's
  trained object-score head, which none of the three official terms reaches (the score gates the masks
  through a hard threshold), so a model trained from scratch needs it to ever report a hidden target;
* ``loss_prior``, focal + dice of the prior mask against the ground truth averaged onto the prior's grid
  (:func:`prior_loss`, over each clip or frame by frame): direct supervision of the text grounding, which
  the official model brings from pre-trained BEiT-3 / EVF-SAM weights;
* in the grounding stage only (``grounding.cell_choice``, 0 by default), a cross-entropy over each frame's
  prior cells (:func:`prior_cell_choice_loss`), which makes the cells compete for the target.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F

#: The prior cells' targets as functions of the covered fraction (``LossWeights.prior_target``).
PRIOR_TARGETS = {"coverage": lambda fraction: fraction, "sqrt_coverage": torch.sqrt}


def check_prior_target(value: str, setting: str) -> None:
    """Refuses a prior cell target that is not a key of :data:`PRIOR_TARGETS`, naming the setting."""
    if value not in PRIOR_TARGETS:
        raise ValueError(f"{setting} must be one of {sorted(PRIOR_TARGETS)}, not {value!r}.")


@dataclass(frozen=True)
class LossWeights:
    """Weights of the three terms (the official ``--mask_loss_coef``, ``--dice_loss_coef``, ``--sim_loss_coef``)."""

    mask: float = 2.0
    dice: float = 5.0
    sim: float = 2.0
    # Not official, for training from scratch (see the module's docstring): 0 leaves a term out.
    object_score: float = 0.0  # object_score_loss: SAM 2's object-score head
    # Weight of the frames where the target is hidden, relative to the visible ones, in object_score_loss:
    # hidden frames are rare (about a tenth in the toy clips), and at weight 1 the head can settle on
    # "always visible".
    object_hidden: float = 1.0
    prior: float = 0.0  # prior_loss: BEiT-3 and the prior generator
    # prior_loss frame by frame instead of over each clip's volume (see :func:`prior_loss`); with T frames a
    # clip the term grows about T times, so its weight wants about 1 / T of the volume's.
    prior_per_frame: bool = False
    # Each prior cell's target as a function of the share of it that the target covers (PRIOR_TARGETS). The
    # focal term drives a cell to dark or lit, lit from about half covered with "coverage" (the share itself)
    # and from about a fifth with "sqrt_coverage" (its square root): the cells of a target mostly out of view.
    prior_target: str = "coverage"
    # The categories stage's loss kept on in the main loop (it needs ``categories.steps``); added by
    # mpgsam2.training.kept_heads.KeptCategories around the loop's module, not by clip_losses.
    categories: float = 0.0

    def __post_init__(self):
        check_prior_target(self.prior_target, "loss.prior_target")


#: The official weights.
OFFICIAL_WEIGHTS = LossWeights()


def sigmoid_focal_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    num_boxes: float,
    alpha: float = 0.25,
    gamma: float = 2.0,
) -> torch.Tensor:
    """RetinaNet's focal loss on mask logits, as the official criterion reduces it.

    Args:
        logits: (B, ...) mask logits; everything after the first dimension (frames and pixels of a clip) is
            averaged.
        targets: (B, ...) the same shape, 0/1.
        num_boxes: the normaliser (visible frames, see :func:`count_visible_frames`).
        alpha: weight of the positive class (a negative value disables the weighting).
        gamma: focusing exponent.
    Returns:
        A scalar: per-clip means summed over the batch, divided by ``num_boxes``.
    """
    logits = logits.flatten(1).float()
    targets = targets.flatten(1).to(logits.dtype)
    probabilities = torch.sigmoid(logits)
    cross_entropy = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = probabilities * targets + (1 - probabilities) * (1 - targets)
    loss = cross_entropy * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss.mean(1).sum() / num_boxes


def dice_loss(logits: torch.Tensor, targets: torch.Tensor, num_boxes: float) -> torch.Tensor:
    """Dice loss over each clip's whole volume (all frames together), smoothed by 1.

    Args:
        logits: (B, ...) mask logits; targets: (B, ...) 0/1 of the same shape.
        num_boxes: the normaliser (visible frames).
    Returns:
        A scalar: ``sum_b (1 - (2 sum(p g) + 1) / (sum(p) + sum(g) + 1)) / num_boxes``.
    """
    probabilities = torch.sigmoid(logits.flatten(1).float())
    targets = targets.flatten(1).to(probabilities.dtype)
    numerator = 2 * (probabilities * targets).sum(1)
    denominator = probabilities.sum(1) + targets.sum(1)
    return (1 - (numerator + 1) / (denominator + 1)).sum() / num_boxes


def mask_text_similarity_loss(
    logits: torch.Tensor, targets: torch.Tensor, sentence_scores: torch.Tensor
) -> torch.Tensor:
    """The official "mask-text similarity" loss, computed exactly as the official criterion does.

    Per frame f, with ``p`` the predicted probabilities and ``g`` the ground truth flattened to N pixels and
    ``s`` the frame's sentence score (the projected ``<s>`` token through ``text2one_linear``, one scalar)
    broadcast to an N-vector, the loss is ``mean_f (cos(p, s 1) - cos(g, s 1))^2``.

    **This term does not depend on the text.** Cosine similarity is invariant to the scale of ``s 1`` and
    the sign of ``s`` cancels in the square, so for any ``s != 0`` the loss equals
    ``mean_f (sum(p) / (|p| sqrt(N)) - sum(g) / (|g| sqrt(N)))^2``: it compares a "square root of the area
    fraction" statistic of the prediction with that of the ground truth (exactly ``sqrt(area / N)`` for a
    binary mask, 0 for an empty one). The sentence score only enters through its sign, so the text branch
    (``mask_prior.sentence_score``) receives no gradient from it (numerically zero). It is implemented
    faithfully here because the released models were trained with it.

    Args:
        logits: (F, H, W) mask logits of F frames (any trailing shape works).
        targets: (F, H, W) 0/1 ground truth.
        sentence_scores: (F,) one scalar per frame.
    Returns:
        A scalar, the mean over the F frames.
    """
    probabilities = torch.sigmoid(logits.flatten(1).float())
    targets = targets.flatten(1).to(probabilities.dtype)
    sentence = sentence_scores.reshape(-1, 1).to(probabilities.dtype).expand_as(probabilities)
    predicted = F.cosine_similarity(probabilities, sentence, dim=1)
    expected = F.cosine_similarity(targets, sentence, dim=1)
    return F.mse_loss(predicted, expected)


def object_score_loss(
    object_scores: torch.Tensor, visible: torch.Tensor, hidden_weight: float = 1.0
) -> torch.Tensor:
    """SAM 2's object-score loss: binary cross-entropy of "the target is visible", averaged over frames.

    (SAM 2's ``loss_class`` is a focal loss with alpha 0.5 and gamma 0, i.e. half this cross-entropy.)

    Args:
        object_scores: (F,) object-score logits.
        visible: (F,) bool or 0/1, whether the target is visible.
        hidden_weight: the weight of a hidden frame's term (a visible frame's is 1).
    Returns:
        A scalar, the weighted mean over the F frames.
    """
    logits = object_scores.reshape(-1).float()
    targets = visible.reshape(-1).to(logits.dtype)
    weights = targets + hidden_weight * (1 - targets)
    terms = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    return (weights * terms).sum() / weights.sum().clamp_min(1e-6)


def covered_fractions(targets: torch.Tensor, grid: Sequence[int]) -> torch.Tensor:
    """(T, S, S) 0/1 ground truth -> (T, g, g) the fraction of each prior cell that the target covers."""
    return F.interpolate(targets[:, None].float(), size=tuple(grid), mode="area")[:, 0]


def prior_loss(
    prior_logits: torch.Tensor,
    targets: torch.Tensor,
    num_boxes: float,
    per_frame: bool = False,
    cell_target: str = "coverage",
) -> torch.Tensor:
    """Focal + dice of one clip's prior masks against its ground truth averaged onto the prior's grid.

    Over the clip's whole volume (as the official mask terms), a frame where the target is hidden barely
    counts: its lit cells only add a little to the clip's dice denominator, so a prior that lights a
    look-alike there costs almost nothing. ``per_frame`` scores each frame as a clip of its own, where an
    empty frame's dice is ``1 - 1 / (sum(p) + 1)`` and any lit cell costs; a clip of one frame gives the
    same either way.

    Args:
        prior_logits: (T, g, g) logits of the prior masks.
        targets: (T, S, S) 0/1 ground truth; each prior cell's target is the fraction of it covered.
        num_boxes: the normaliser (visible frames), as for the mask terms.
        per_frame: focal and dice of each frame alone, summed over the T frames (default: over the volume).
        cell_target: a key of :data:`PRIOR_TARGETS`: each cell's target as a function of its covered fraction.
    Returns:
        A scalar.
    """
    fractions = PRIOR_TARGETS[cell_target](covered_fractions(targets, prior_logits.shape[-2:]))
    logits = prior_logits.float()
    if not per_frame:
        logits, fractions = logits[None], fractions[None]
    return sigmoid_focal_loss(logits, fractions, num_boxes) + dice_loss(logits, fractions, num_boxes)


def prior_cell_choice_loss(
    prior_logits: torch.Tensor, targets: torch.Tensor, num_boxes: float
) -> torch.Tensor:
    """Cross-entropy of a softmax over each frame's g x g prior cells against the target's share of each cell.

    Focal + dice (:func:`prior_loss`) score every cell on its own, so a prior that lights up every shape the
    words might mean pays little more than one on the named shape. Over a softmax the cells compete: mass on
    another shape is taken from the target. Frames without a visible target add nothing.

    Args:
        prior_logits: (T, g, g) logits of the prior masks.
        targets: (T, S, S) 0/1 ground truth.
        num_boxes: the normaliser (visible frames), as for the other terms.
    Returns:
        A scalar: the sum over visible frames divided by ``num_boxes``.
    """
    fractions = covered_fractions(targets, prior_logits.shape[-2:]).flatten(1)  # (T, g*g)
    totals = fractions.sum(-1, keepdim=True)
    shares = fractions / totals.clamp_min(torch.finfo(fractions.dtype).tiny)
    log_probabilities = F.log_softmax(prior_logits.flatten(1).float(), dim=-1)
    return -(shares * log_probabilities).sum() / num_boxes


def count_visible_frames(
    visible: Sequence[torch.Tensor] | torch.Tensor, distributed: bool | None = None
) -> float:
    """The official ``num_boxes``: frames where the target is visible, averaged over processes, at least 1.

    Args:
        visible: (T,) bool per clip of this process's batch (or one stacked tensor).
        distributed: all-reduce over the default process group; default: when one is initialised.
    """
    if isinstance(visible, torch.Tensor):
        visible = [visible]
    total = torch.tensor(
        [float(sum(int(v.sum()) for v in visible))],
        device=visible[0].device if len(visible) else "cpu",
    )
    if distributed is None:
        distributed = dist.is_available() and dist.is_initialized()
    if distributed:
        # The visible flags are on the process's device (the batch is moved before the loss), which is the
        # device its process group communicates on.
        dist.all_reduce(total)
        total = total / dist.get_world_size()
    return max(float(total.item()), 1.0)


def clip_losses(
    logits: Sequence[torch.Tensor],
    targets: Sequence[torch.Tensor],
    sentence_scores: Sequence[torch.Tensor],
    num_boxes: float,
    weights: LossWeights = OFFICIAL_WEIGHTS,
    object_scores: Sequence[torch.Tensor] | None = None,
    visible: Sequence[torch.Tensor] | None = None,
    prior_logits: Sequence[torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """The weighted terms and their total for a batch of clips of possibly different lengths.

    Args:
        logits: per clip (T_b, S, S) mask logits at SAM 2's square resolution.
        targets: per clip (T_b, S, S) 0/1 ground truth at the same resolution.
        sentence_scores: per clip (T_b,) sentence scores.
        num_boxes: from :func:`count_visible_frames`.
        object_scores, visible: per clip (T_b,) object-score logits and visibility; needed when
            ``weights.object_score`` is not 0.
        prior_logits: per clip (T_b, g, g) prior logits; needed when ``weights.prior`` is not 0.
    Returns:
        ``{"loss_mask", "loss_dice", "loss_sim"}`` (unweighted), ``"loss_object"`` and ``"loss_prior"`` when
        their weights are not 0, and ``"loss"`` (the weighted total).
    """
    focal = sum(sigmoid_focal_loss(p[None], g[None], num_boxes) for p, g in zip(logits, targets))
    dice = sum(dice_loss(p[None], g[None], num_boxes) for p, g in zip(logits, targets))
    sim = mask_text_similarity_loss(
        torch.cat([p.flatten(1) for p in logits]),
        torch.cat([g.flatten(1) for g in targets]),
        torch.cat([s.reshape(-1) for s in sentence_scores]),
    )
    total = weights.mask * focal + weights.dice * dice + weights.sim * sim
    losses = {"loss_mask": focal, "loss_dice": dice, "loss_sim": sim}
    if weights.object_score:
        if object_scores is None or visible is None:
            raise ValueError("The object-score loss needs the object scores and visibility of every clip.")
        losses["loss_object"] = object_score_loss(
            torch.cat([s.reshape(-1) for s in object_scores]),
            torch.cat([v.reshape(-1) for v in visible]),
            weights.object_hidden,
        )
        total = total + weights.object_score * losses["loss_object"]
    if weights.prior:
        if prior_logits is None:
            raise ValueError("The prior loss needs the prior logits of every clip.")
        losses["loss_prior"] = sum(
            prior_loss(p, g, num_boxes, weights.prior_per_frame, weights.prior_target)
            for p, g in zip(prior_logits, targets)
        )
        total = total + weights.prior * losses["loss_prior"]
    return {"loss": total, **losses}
