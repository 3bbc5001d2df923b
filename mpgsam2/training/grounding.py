"""Grounding pre-training: BEiT-3 and the mask prior generator alone, on the prior loss, before the main loop.

Trained from scratch, the text grounding (which shape the words name) is what the whole model learns slowest:
inside the full model every step pays for SAM 2's tracking loop, and the grounding sees few expressions an
hour. This stage trains only the part that grounds (the encoder and the generator that makes the prior masks)
on many clips a step, so that the main loop starts from a model that already points at its target. The official
recipe needs no such stage (it starts from pre-trained BEiT-3 and EVF-SAM weights); it is off by default
(``grounding.steps = 0``).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..datasets import TrainingClip, collate_clips
from ..datasets.registry import TrainingSet
from ..datasets.videos import no_lookalike_frames
from ..modeling.beit3 import BEiT3Output
from ..modeling.model import MPGSAM2
from .distributed import (
    DistributedContext,
    resumable_loader,
    wrap_distributed,
)
from .forward import forward_backward
from .kept_heads import KeptHead
from .losses import check_prior_target, prior_cell_choice_loss, prior_loss
from .optim import learning_rate_factor, set_learning_rates
from .stage_log import StageLog

logger = logging.getLogger(__name__)

#: The stage's log, beside the main loop's ``log.jsonl`` in the run's folder.
GROUNDING_LOG = "grounding_log.jsonl"
#: The log of its second pass on clips of several frames (``clip_grounding``).
CLIP_GROUNDING_LOG = "clip_grounding_log.jsonl"


@dataclass(frozen=True)
class GroundingSpec:
    """The ``grounding`` section of a run: how long and how the pre-training stage trains (0 steps: none).

    The rate warms up linearly over ``warmup_steps`` and decays along half a cosine to 0 at ``steps``. The loss
    is the prior loss, plus ``cell_choice`` times a cross-entropy over each frame's prior cells.
    """

    steps: int = 0
    batch_size: int = 4  # clips per process and step (every frame of each)
    lr: float = 1e-3
    warmup_steps: int = 100
    # Frames per clip (0: the training data's own ``num_frames``). The frames of one clip look alike and
    # share their expression, so that one frame of each of more clips teaches more for the same work.
    num_frames: int = 0
    # The weight of a cross-entropy over each frame's prior cells added to the prior loss (0: the prior loss
    # alone); see :func:`mpgsam2.training.losses.prior_cell_choice_loss`.
    cell_choice: float = 0.0
    # The weight of the categories stage's loss kept on during this stage (0: none; it needs
    # ``categories.steps``), on ``categories.kept_batch_size`` more frames a step: see
    # :class:`mpgsam2.training.kept_heads.KeptCategories`.
    categories: float = 0.0
    # The prior loss frame by frame instead of over each clip's volume (see
    # :func:`mpgsam2.training.losses.prior_loss`): with clips of several frames, a frame where the target is
    # hidden is then taught an empty prior as firmly as in a clip of its own.
    prior_per_frame: bool = False
    # Each prior cell's target as a function of the share of it that the target covers, a key of
    # :data:`mpgsam2.training.losses.PRIOR_TARGETS` (as ``loss.prior_target`` in the main loop).
    prior_target: str = "coverage"
    # The share of each batch's clips anchored on a frame where the target is hidden while a look-alike is in
    # view (:meth:`mpgsam2.datasets.registry.TrainingSet.anchored_on_lookalikes`; the toy writer records those
    # frames), the rest drawn as usual. Few clips show one, and only the other frames of the clip tell it
    # apart from a frame that shows the target: drawn this often, the prior learns to stay empty there.
    lookalike_share: float = 0.0

    @property
    def lookalike_clips(self) -> int:
        """Clips per process and step anchored on a hidden target's look-alike frame."""
        return round(self.batch_size * self.lookalike_share)

    def __post_init__(self) -> None:
        check_prior_target(self.prior_target, "prior_target")
        if self.lookalike_share and not 1 <= self.lookalike_clips < self.batch_size:
            size = self.batch_size
            if size < 2:
                choice = "set batch_size to at least 2"
            else:
                shares = f"of {1 / size:g}" if size == 2 else f"from {1 / size:g} to {(size - 1) / size:g}"
                choice = f"choose a share {shares}, or more clips a step (batch_size)"
            raise ValueError(
                f"lookalike_share {self.lookalike_share} of {size} clips a step gives {self.lookalike_clips} "
                f"anchored and {size - self.lookalike_clips} drawn as usual; {choice}, so that each kind "
                "has at least one clip."
            )
        weights = (self.steps, self.warmup_steps, self.num_frames, self.cell_choice, self.categories)
        if min(weights) < 0 or self.batch_size < 1:
            raise ValueError(
                "steps, warmup_steps, num_frames, cell_choice and categories must be at least 0, "
                "batch_size at least 1."
            )


class GroundingForward(nn.Module):
    """The prior loss of a batch of clips from BEiT-3 and the mask prior generator (SAM 2 never runs),
    plus ``cell_choice`` times the cross-entropy over the prior's cells.

    Holds the two trained parts only, so that ``DistributedDataParallel`` synchronises nothing else.
    """

    def __init__(
        self,
        model: MPGSAM2,
        cell_choice: float = 0.0,
        prior_per_frame: bool = False,
        prior_target: str = "coverage",
    ):
        super().__init__()
        self.multimodal_encoder = model.multimodal_encoder
        self.mask_prior = model.mask_prior
        self.cell_choice = cell_choice
        self.prior_per_frame = prior_per_frame
        self.prior_target = prior_target

    def forward(self, clips: Sequence[TrainingClip], num_boxes: float) -> dict[str, torch.Tensor]:
        """clips: on the model's device. Returns ``{"loss", "loss_prior"}``, and ``"loss_cell_choice"`` (before
        its weight) when that term is on."""
        encoded = self.multimodal_encoder(*encoder_batch(clips))
        prior, choice = [], []
        start = 0
        for clip in clips:
            rows = slice(start, start + clip.beit_images.shape[0])
            start = rows.stop
            length = clip.input_ids.shape[0]
            own = BEiT3Output(
                class_token=encoded.class_token[rows],
                visual_tokens=encoded.visual_tokens[rows],
                text_tokens=encoded.text_tokens[rows, :length],
                hidden=encoded.hidden[rows],
            )
            context = self.mask_prior(own)
            prior.append(
                prior_loss(
                    context.prior_logits, clip.masks, num_boxes, self.prior_per_frame, self.prior_target
                )
            )
            if self.cell_choice:
                choice.append(prior_cell_choice_loss(context.prior_logits, clip.masks, num_boxes))
        loss_prior = torch.stack(prior).sum()
        if not choice:
            return {"loss": loss_prior, "loss_prior": loss_prior.detach()}
        loss_choice = torch.stack(choice).sum()
        return {
            "loss": loss_prior + self.cell_choice * loss_choice,
            "loss_prior": loss_prior.detach(),
            "loss_cell_choice": loss_choice.detach(),
        }


def encoder_batch(clips: Sequence[TrainingClip]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """BEiT-3's inputs for every frame of every clip in one batch: one pass over a batch is faster than one
    pass per clip, and with the shorter expressions padded (keys masked) it computes the same tokens.

    Returns:
        images (F, 3, s, s) for the F frames of all clips in order, input_ids (F, L) and text_padding (F, L)
        (None when no token is padding), L the longest expression's tokens.
    """
    longest = max(clip.input_ids.shape[0] for clip in clips)
    ids, padding = [], []
    for clip in clips:
        frames, extra = clip.beit_images.shape[0], longest - clip.input_ids.shape[0]
        own = (
            clip.text_padding
            if clip.text_padding is not None
            else torch.zeros_like(clip.input_ids, dtype=torch.bool)
        )
        ids.append(F.pad(clip.input_ids, (0, extra)).expand(frames, -1))
        padding.append(F.pad(own, (0, extra), value=True).expand(frames, -1))
    images = torch.cat([clip.beit_images for clip in clips])
    text_padding = torch.cat(padding)
    return images, torch.cat(ids), text_padding if bool(text_padding.any()) else None


def endless_batches(
    dataset: TrainingSet, batch_size: int, context: DistributedContext, seed: int, num_workers: int = 0
) -> Iterator[list[TrainingClip]]:
    """Batches of ``dataset`` (this process's share of each epoch's order), epoch after epoch."""
    sampler, loader = resumable_loader(dataset, batch_size, context, seed, num_workers, collate_clips)
    for epoch in itertools.count():
        sampler.set_epoch(epoch)
        dataset.set_epoch(epoch)
        yield from loader


def grounding_parameters(model: MPGSAM2) -> list[nn.Parameter]:
    """The trainable parameters of BEiT-3 and the mask prior generator."""
    modules = (model.multimodal_encoder, model.mask_prior)
    return [p for module in modules for p in module.parameters() if p.requires_grad]


def pretrain_grounding(
    model: MPGSAM2,
    spec: GroundingSpec,
    dataset: TrainingSet,
    context: DistributedContext,
    output_dir: Path,
    weight_decay: float = 5e-4,
    clip_max_norm: float = 1.0,
    seed: int = 0,
    log_every: int = 50,
    num_workers: int = 0,
    kept: KeptHead | None = None,
    log_name: str = GROUNDING_LOG,
) -> list[float]:
    """Train BEiT-3 and the mask prior generator of ``model`` in place for ``spec.steps`` steps.

    The optimiser (AdamW) is the stage's own and is dropped at the end: the main loop starts its own.

    Args:
        dataset: the run's training set (its clips, all frames, the same expressions).
        output_dir: where the stage's log (``log_name``: ``grounding_log.jsonl`` unless told) is written by the
            main process.
        kept: the categories stage's head, trained on with the weight ``spec.categories`` (needed when
            that weight is above 0).
    Returns:
        This process's loss at every step.
    """
    if spec.steps == 0:
        return []
    section = log_name.removesuffix("_log.jsonl")  # the run's section: grounding or clip_grounding
    sampler, loader = resumable_loader(
        dataset, spec.batch_size - spec.lookalike_clips, context, seed, num_workers, collate_clips
    )
    lookalikes = None
    if spec.lookalike_clips:
        anchored = dataset.anchored_on_lookalikes() if isinstance(dataset, TrainingSet) else None
        if anchored is None:
            raise no_lookalike_frames(f"{section}.lookalike_share")
        lookalikes = endless_batches(anchored, spec.lookalike_clips, context, seed + 1, num_workers)
    if spec.categories and kept is None:
        raise ValueError(f"{section}.categories needs the categories stage's head (categories.steps > 0).")
    parameters = grounding_parameters(model)
    if spec.categories:
        parameters += [p for p in kept.forward.heads().parameters() if p.requires_grad]
    fused = context.device.type in ("cpu", "cuda")
    optimizer = torch.optim.AdamW(parameters, lr=spec.lr, weight_decay=weight_decay, fused=fused or None)
    # Only the prior's path is used: the sparse prompt, the mask embeddings and the text projection are not.
    forward = GroundingForward(model, spec.cell_choice, spec.prior_per_frame, spec.prior_target)
    if spec.categories:
        forward = kept.around(forward, spec.categories)
    module = wrap_distributed(forward, context, find_unused_parameters=True)
    stage = section.replace("_", " ")
    logger.info(
        "Pre-training (%s): %d steps of %d clip(s) per process (%d on a look-alike frame), %.2f M parameters",
        stage,
        spec.steps,
        spec.batch_size,
        spec.lookalike_clips,
        sum(p.numel() for p in parameters) / 1e6,
    )
    losses: list[float] = []
    log = StageLog(stage, output_dir / log_name, spec.steps, log_every, context)
    step, epoch = 0, 0
    while step < spec.steps:
        sampler.set_epoch(epoch)
        dataset.set_epoch(epoch)
        for clips in loader:
            set_learning_rates(optimizer, learning_rate_factor(step, spec.warmup_steps, "cosine", spec.steps))
            optimizer.zero_grad(set_to_none=True)
            if lookalikes is not None:
                clips = [*clips, *next(lookalikes)]
            terms = forward_backward(module, clips, context.device)
            loss = float(terms["loss"])
            if clip_max_norm > 0:
                torch.nn.utils.clip_grad_norm_(parameters, clip_max_norm)
            optimizer.step()
            step += 1
            losses.append(loss)
            # Every loss but the total, which is their weighted sum.
            terms = {name: float(value) for name, value in terms.items() if name != "loss"}
            log.add(step, terms, optimizer.param_groups[0]["lr"])
            if step >= spec.steps:
                break
        epoch += 1
    return losses
