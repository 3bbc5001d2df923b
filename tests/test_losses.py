"""The official training losses: focal, dice, the (text-independent) mask-text similarity term, num_boxes;
and the two terms for training from scratch, off unless weighted."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from torchvision.ops import sigmoid_focal_loss as torchvision_focal

from mpgsam2.training.losses import (
    OFFICIAL_WEIGHTS,
    PRIOR_TARGETS,
    LossWeights,
    clip_losses,
    count_visible_frames,
    covered_fractions,
    dice_loss,
    mask_text_similarity_loss,
    object_score_loss,
    prior_cell_choice_loss,
    prior_loss,
    sigmoid_focal_loss,
)


def clip_batch(seed: int = 0, clips: int = 2, frames: int = 3, size: int = 8):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(clips, frames, size, size, generator=generator) * 3
    targets = (torch.rand(clips, frames, size, size, generator=generator) > 0.6).float()
    return logits, targets


def test_focal_loss_is_the_retinanet_loss_averaged_per_clip_and_divided_by_num_boxes():
    logits, targets = clip_batch()
    # torchvision's independent implementation, reduced as the official criterion does.
    expected = torchvision_focal(logits, targets, alpha=0.25, gamma=2, reduction="none")
    expected = expected.flatten(1).mean(1).sum() / 3.0
    torch.testing.assert_close(sigmoid_focal_loss(logits, targets, num_boxes=3.0), expected)
    # By hand for one pixel: a confident wrong negative (logit 2, target 0).
    p = 1 / (1 + math.exp(-2.0))
    by_hand = (1 - 0.25) * (-math.log(1 - p)) * p**2
    value = sigmoid_focal_loss(torch.tensor([[2.0]]), torch.tensor([[0.0]]), num_boxes=1)
    assert value.item() == pytest.approx(by_hand, rel=1e-6)


def test_dice_loss_over_the_clip_volume():
    logits, targets = clip_batch(1)
    probabilities = torch.sigmoid(logits)
    per_clip = []
    for p, g in zip(probabilities, targets):
        per_clip.append(1 - (2 * (p * g).sum() + 1) / (p.sum() + g.sum() + 1))
    torch.testing.assert_close(dice_loss(logits, targets, num_boxes=2.0), sum(per_clip) / 2.0)
    # A confident perfect prediction scores ~0, its opposite ~1.
    perfect = torch.where(targets > 0, 30.0, -30.0)
    assert dice_loss(perfect, targets, 1).item() < 1e-4
    assert dice_loss(-perfect, targets, 2).item() > 0.99


def test_similarity_loss_does_not_depend_on_the_text():
    logits, targets = clip_batch(2, clips=1, frames=4)
    logits, targets = logits[0], targets[0]
    targets[1] = 0  # an empty ground truth on one frame
    values = []
    for scale in (0.3, -2.0, 1e3, -1e-3):
        scores = torch.full((4,), scale, requires_grad=True)
        loss = mask_text_similarity_loss(logits, targets, scores)
        loss.backward()
        # The sentence score gets no gradient (rounding noise only, which scales as 1 / score): only its
        # sign could matter, and the sign cancels.
        assert (scores.grad * scale).abs().max().item() < 1e-6
        values.append(loss.item())
    assert max(values) - min(values) < 1e-6
    # Different scores per frame (any non-zero values) give the same loss too.
    mixed = mask_text_similarity_loss(logits, targets, torch.tensor([0.5, -7.0, 2.0, -0.1]))
    assert mixed.item() == pytest.approx(values[0], abs=1e-6)
    # The closed form: a comparison of sum(p) / (|p| sqrt(N)) with the same statistic of the ground truth.
    p = torch.sigmoid(logits).flatten(1)
    g = targets.flatten(1)
    n = p.shape[1]
    stat_p = p.sum(1) / (p.norm(dim=1) * math.sqrt(n))
    stat_g = torch.where(g.sum(1) > 0, g.sum(1) / (g.norm(dim=1).clamp_min(1e-12) * math.sqrt(n)), 0.0)
    assert values[0] == pytest.approx(((stat_p - stat_g) ** 2).mean().item(), rel=1e-5)
    # For binary masks that statistic is the square root of the area fraction.
    assert stat_g[0].item() == pytest.approx(math.sqrt(g[0].mean().item()), rel=1e-5)


def test_similarity_loss_still_trains_the_mask():
    logits, targets = clip_batch(3, clips=1)
    logits = logits[0].requires_grad_(True)
    mask_text_similarity_loss(logits, targets[0], torch.ones(3)).backward()
    assert logits.grad.abs().sum() > 0


def test_clip_losses_weights_and_clips_of_different_lengths():
    logits, targets = clip_batch(4, clips=2, frames=3)
    scores = [torch.randn(3), torch.randn(2)]
    clips_logits = [logits[0], logits[1, :2]]
    clips_targets = [targets[0], targets[1, :2]]
    losses = clip_losses(clips_logits, clips_targets, scores, num_boxes=2.5)
    assert LossWeights(2.0, 5.0, 2.0) == OFFICIAL_WEIGHTS
    total = 2 * losses["loss_mask"] + 5 * losses["loss_dice"] + 2 * losses["loss_sim"]
    torch.testing.assert_close(losses["loss"], total)
    focal = sum(sigmoid_focal_loss(p[None], g[None], 2.5) for p, g in zip(clips_logits, clips_targets))
    torch.testing.assert_close(losses["loss_mask"], focal)
    # The similarity term averages over all 5 frames of the batch.
    per_frame = [
        mask_text_similarity_loss(p[t : t + 1], g[t : t + 1], s[t : t + 1])
        for p, g, s in zip(clips_logits, clips_targets, scores)
        for t in range(len(p))
    ]
    torch.testing.assert_close(losses["loss_sim"], torch.stack(per_frame).mean())
    custom = clip_losses(clips_logits, clips_targets, scores, 2.5, LossWeights(1.0, 0.0, 0.0))
    torch.testing.assert_close(custom["loss"], losses["loss_mask"])


def test_num_boxes_counts_visible_frames_and_is_at_least_one():
    assert count_visible_frames([torch.tensor([True, False, True]), torch.tensor([True])]) == 3.0
    assert count_visible_frames([torch.tensor([False, False])]) == 1.0
    assert count_visible_frames(torch.tensor([True, True])) == 2.0


def test_the_from_scratch_terms_are_off_by_default_and_add_their_weighted_values():
    logits, targets = clip_batch(5, clips=2, frames=3, size=28)
    clips_logits, clips_targets = list(logits), list(targets)
    scores = [torch.randn(3), torch.randn(3)]
    object_scores = [torch.randn(3), torch.randn(3)]
    visible = [g.flatten(1).any(1) for g in clips_targets]
    priors = [torch.randn(3, 14, 14), torch.randn(3, 14, 14)]
    extras = {"object_scores": object_scores, "visible": visible, "prior_logits": priors}
    official = clip_losses(clips_logits, clips_targets, scores, 2.0)
    assert OFFICIAL_WEIGHTS.object_score == OFFICIAL_WEIGHTS.prior == 0.0
    assert set(official) == {"loss", "loss_mask", "loss_dice", "loss_sim"}
    # Given the extra inputs with the official weights, nothing changes (the same total, to the bit).
    same = clip_losses(clips_logits, clips_targets, scores, 2.0, OFFICIAL_WEIGHTS, **extras)
    assert set(same) == set(official) and torch.equal(same["loss"], official["loss"])

    weights = LossWeights(object_score=2.0, prior=5.0)
    extended = clip_losses(clips_logits, clips_targets, scores, 2.0, weights, **extras)
    presence = object_score_loss(torch.cat(object_scores), torch.cat(visible))
    grounding = sum(prior_loss(p, g, 2.0) for p, g in zip(priors, clips_targets))
    torch.testing.assert_close(extended["loss_object"], presence)
    torch.testing.assert_close(extended["loss_prior"], grounding)
    torch.testing.assert_close(extended["loss"], official["loss"] + 2 * presence + 5 * grounding)
    with pytest.raises(ValueError, match="object scores"):
        clip_losses(clips_logits, clips_targets, scores, 2.0, weights)
    # The prior frame by frame: only that term changes.
    framewise = clip_losses(
        clips_logits, clips_targets, scores, 2.0, replace(weights, prior_per_frame=True), **extras
    )
    by_frame = sum(prior_loss(p, g, 2.0, per_frame=True) for p, g in zip(priors, clips_targets))
    torch.testing.assert_close(framewise["loss_prior"], by_frame)
    torch.testing.assert_close(framewise["loss"] - 5 * by_frame, extended["loss"] - 5 * grounding)


def test_object_score_loss_is_the_cross_entropy_of_visibility():
    scores, visible = torch.tensor([4.0, -3.0, 0.0]), torch.tensor([True, False, True])
    expected = (
        -(
            math.log(torch.sigmoid(torch.tensor(4.0)))
            + math.log(torch.sigmoid(torch.tensor(3.0)))
            + math.log(0.5)
        )
        / 3
    )
    assert object_score_loss(scores, visible).item() == pytest.approx(expected, rel=1e-5)
    # Hidden frames weighted up: a weighted mean, the hidden frame's term counting 5 times.
    terms = [-math.log(torch.sigmoid(torch.tensor(v)).item()) for v in (4.0, 3.0, 0.0)]
    weighted = (terms[0] + 5 * terms[1] + terms[2]) / 7
    assert object_score_loss(scores, visible, hidden_weight=5.0).item() == pytest.approx(weighted, rel=1e-5)
    # A head that always says "visible" pays for the rare hidden frames as much as for all visible ones.
    constant = torch.full((10,), 3.0)
    one_hidden = torch.tensor([False] + [True] * 9)
    assert object_score_loss(constant, one_hidden, 9.0) > 4 * object_score_loss(constant, one_hidden)


def test_prior_loss_compares_the_prior_with_the_covered_fraction_of_each_cell():
    """A 28x28 target seen on a 14x14 prior grid: each cell's target is the fraction of its 2x2 pixels set."""
    targets = torch.zeros(1, 28, 28)
    targets[0, :14, :14] = 1  # the top-left quarter: cells (0..6, 0..6) fully covered
    targets[0, 14, :14] = 1  # half of the cells of row 7
    fractions = torch.zeros(1, 14, 14)
    fractions[0, :7, :7], fractions[0, 7, :7] = 1.0, 0.5
    logits = torch.randn(1, 14, 14)
    expected = sigmoid_focal_loss(logits[None], fractions[None], 1.0) + dice_loss(
        logits[None], fractions[None], 1.0
    )
    torch.testing.assert_close(prior_loss(logits, targets, 1.0), expected)
    good = torch.where(fractions > 0.75, 8.0, torch.where(fractions > 0.25, 0.0, -8.0))
    assert prior_loss(good, targets, 1.0) < prior_loss(-good, targets, 1.0)


def test_a_square_root_prior_target_lights_the_cell_of_a_target_mostly_out_of_view():
    """Fitted alone to each target, the focal term drives each cell to dark or lit: a cell that the target
    covers three tenths of ends dark with the covered fraction as its target and lit with its square root;
    the empty cells stay dark and the whole one lit either way."""
    targets = torch.zeros(1, 20, 20)
    targets[0, :10, :10] = 1  # cell (0, 0) whole
    targets[0, 10:13, 10:20] = 1  # cell (1, 1): three tenths
    fitted = {}
    for cell_target in PRIOR_TARGETS:
        logits = torch.zeros(1, 2, 2, requires_grad=True)
        optimizer = torch.optim.Adam([logits], lr=0.1)
        for _ in range(300):
            optimizer.zero_grad()
            prior_loss(logits, targets, 1.0, cell_target=cell_target).backward()
            optimizer.step()
        fitted[cell_target] = torch.sigmoid(logits.detach())[0]
    for prior in fitted.values():
        assert prior[0, 0] > 0.9 and prior[0, 1] < 0.05 and prior[1, 0] < 0.05
    assert fitted["coverage"][1, 1] < 0.1 and fitted["sqrt_coverage"][1, 1] > 0.7, fitted
    with pytest.raises(ValueError, match="loss.prior_target must be one of"):
        LossWeights(prior_target="square")


def test_the_prior_loss_frame_by_frame_charges_a_lit_hidden_frame_as_a_clip_of_its_own():
    """Over a clip's volume, a look-alike lit on a frame where the target is hidden costs almost nothing;
    frame by frame it costs what it costs in a single-frame clip, and per-frame equals a sum of one-frame
    clips."""
    targets = torch.zeros(3, 28, 28)
    targets[:2, 4:12, 4:12] = 1  # visible on frames 0 and 1, hidden on frame 2
    right = torch.where(covered_fractions(targets, (14, 14)) > 0.5, 8.0, -8.0)
    lit = right.clone()
    lit[2, 10:12, 10:12] = 8.0  # frame 2: four cells on something else
    singles = sum(prior_loss(lit[t : t + 1], targets[t : t + 1], 2.0) for t in range(3))
    torch.testing.assert_close(prior_loss(lit, targets, 2.0, per_frame=True), singles)
    over_volume = prior_loss(lit, targets, 2.0) - prior_loss(right, targets, 2.0)
    per_frame = prior_loss(lit, targets, 2.0, True) - prior_loss(right, targets, 2.0, True)
    assert per_frame > 5 * over_volume
    alone = prior_loss(lit[2:], targets[2:], 2.0) - prior_loss(right[2:], targets[2:], 2.0)
    torch.testing.assert_close(per_frame, alone)
    # One frame: the two are the same loss.
    torch.testing.assert_close(
        prior_loss(lit[:1], targets[:1], 2.0, True), prior_loss(lit[:1], targets[:1], 2.0)
    )


def test_the_cell_choice_loss_makes_the_prior_cells_compete_for_the_target():
    """A cross-entropy over a frame's cells: mass on another shape costs, an empty frame adds nothing."""
    targets = torch.zeros(3, 28, 28)
    targets[0, :4, :4] = 1  # cells (0..1, 0..1), a quarter of the target each
    targets[1, 2:4, :2] = 1  # cell (1, 0) alone
    shares = torch.zeros(3, 196)
    shares[0, [0, 1, 14, 15]] = 0.25
    shares[1, 14] = 1.0
    logits = torch.randn(3, 14, 14)
    log_probabilities = torch.log_softmax(logits.flatten(1), -1)
    expected = -(shares * log_probabilities).sum() / 2.0
    torch.testing.assert_close(prior_cell_choice_loss(logits, targets, 2.0), expected)
    # Frame 2 has no target: its logits do not matter.
    changed = logits.clone()
    changed[2] = torch.randn(14, 14) * 10
    torch.testing.assert_close(prior_cell_choice_loss(changed, targets, 2.0), expected)
    # A distractor lit as brightly as the target halves the target's probability: log 2 more, where
    # per-cell focal + dice charge less than half of that.
    alone = torch.full((1, 14, 14), -8.0)
    alone[0, 1, 0] = 8.0
    both = alone.clone()
    both[0, 10, 10] = 8.0
    one = targets[1:2]
    extra = prior_cell_choice_loss(both, one, 1.0) - prior_cell_choice_loss(alone, one, 1.0)
    assert math.isclose(float(extra), math.log(2), abs_tol=1e-3)
    assert prior_loss(both, one, 1.0) - prior_loss(alone, one, 1.0) < extra / 2
