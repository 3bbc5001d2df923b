"""Categories pre-training: BEiT-3 alone learns the category of the object under each patch, before grounding.

Words can only point at what the image encoder tells apart. Trained from scratch on the toy data, BEiT-3's patch
tokens come to carry the colour and size of a shape but not its kind (square, circle...): the grounding loss
alone does not teach it, even with a kind loss added to it (docs/TRAINING.md). This stage does what BEiT-3's
own pre-training does for the released weights, in the small: a linear head on each patch token learns the
category of the object that owns the patch (:class:`mpgsam2.datasets.object_categories.PatchCategories`), the encoder
under it learns to see them, and the head is dropped at the end. The official recipe needs no such stage (it
starts from pre-trained BEiT-3); it is off by default (``categories.steps = 0``).

Taught first and then dropped, the kinds are worn away by the grounding stage that follows (docs/TRAINING.md).
With ``grounding.categories`` or ``loss.categories`` above 0, the heads are kept instead
(:mod:`mpgsam2.training.kept_heads`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..datasets.object_categories import (
    DIRECTIONS,
    EXTREME_GROUPS,
    IGNORED,
    NO_EXTREME,
    PatchCategories,
    object_meta_path,
)
from ..datasets.registry import DatasetSpec, TrainingSet, prepare_generated
from ..modeling.model import MPGSAM2
from ..tokenizer import ExpressionTokenizer
from .distributed import DistributedContext, resumable_loader, wrap_distributed
from .optim import learning_rate_factor, set_learning_rates
from .stage_log import StageLog

logger = logging.getLogger(__name__)

#: The stage's log, beside the main loop's ``log.jsonl`` in the run's folder.
CATEGORIES_LOG = "categories_log.jsonl"
#: Which frames a kept head trains on in the later stages: more frames of its own (one more BEiT-3 pass a
#: step), or the frames each stage already encodes.
KEPT_FRAMES = ("extra", "stage")


@dataclass(frozen=True)
class CategoriesSpec:
    """The ``categories`` section of a run: how long and how the stage trains (0 steps: none).

    The rate warms up linearly over ``warmup_steps`` and decays along half a cosine to 0 at ``steps``.
    """

    steps: int = 0
    batch_size: int = 24  # frames per process and step (one of each video)
    lr: float = 1e-3
    warmup_steps: int = 100
    # The text BEiT-3 reads beside every frame. One fixed text, so that what the tokens learn is what the
    # image shows, whatever an expression will later ask of it.
    expression: str = "the object"
    # Frames per process and step of the categories loss kept on in a later stage (``grounding.categories``,
    # ``loss.categories``).
    kept_batch_size: int = 8
    # The weight of a second head's loss beside the categories': whether the object under each patch is the
    # farthest one in each direction, among all objects and among those of its category
    # (:func:`mpgsam2.datasets.object_categories.extreme_targets`; 0: none). Position words ask for that
    # comparison, which the prior's grounding alone did not learn (docs/TRAINING.md).
    extremes: float = 0.0
    # Which frames the kept head trains on (:data:`KEPT_FRAMES`): ``"extra"``, ``kept_batch_size`` more
    # frames a step beside ``expression``; ``"stage"``, the later stages' own frames beside their own
    # expressions (their clips carry the labels: :func:`label_stage_frames`).
    kept_frames: str = "extra"

    def __post_init__(self) -> None:
        if self.kept_frames not in KEPT_FRAMES:
            raise ValueError(
                f"categories.kept_frames must be one of {KEPT_FRAMES}, not {self.kept_frames!r}."
            )
        if (
            min(self.steps, self.warmup_steps, self.extremes) < 0
            or min(self.batch_size, self.kept_batch_size) < 1
        ):
            raise ValueError(
                "categories.steps, warmup_steps and extremes must be at least 0, batch_size and "
                "kept_batch_size at least 1."
            )


class CategoriesForward(nn.Module):
    """The cross-entropy of a linear head's category of each owned patch token, and its accuracy; with
    ``extremes`` above 0, plus that weight times the binary cross-entropy of a second linear head's extreme
    targets (:func:`mpgsam2.datasets.object_categories.extreme_targets`).

    Holds BEiT-3 and the heads only, so that ``DistributedDataParallel`` synchronises nothing else.
    """

    def __init__(self, model: MPGSAM2, num_categories: int, extremes: float = 0.0):
        super().__init__()
        width = model.config.beit3.embed_dim
        self.multimodal_encoder = model.multimodal_encoder
        self.head = nn.Linear(width, num_categories)
        self.extremes = extremes
        if extremes:
            self.extreme_head = nn.Linear(width, len(EXTREME_GROUPS) * len(DIRECTIONS))

    def forward(self, images: torch.Tensor, input_ids: torch.Tensor, labels: torch.Tensor) -> dict:
        """images: (B, 3, s, s); input_ids: (L,) the stage's text; labels: (B, P) category indices or
        :data:`IGNORED`, or with ``extremes`` (B, P, 1 + G * D), the extreme targets after the category (see
        :class:`mpgsam2.datasets.object_categories.PatchCategories`). Returns ``{"loss", "accuracy"}`` over the
        owned patches (0 when there are none), and with ``extremes`` ``"loss_extremes"`` (before its weight)
        and ``"extremes_accuracy"``."""
        tokens = self.multimodal_encoder(images, input_ids[None].expand(len(images), -1)).visual_tokens
        return self.head_terms(tokens, labels)

    def head_terms(self, tokens: torch.Tensor, labels: torch.Tensor) -> dict:
        """As :meth:`forward`, from BEiT-3's patch tokens (B, P, C) already computed."""
        tokens = tokens.flatten(0, 1)
        logits = self.head(tokens)
        if self.extremes:
            if labels.dim() != 3:
                raise ValueError(
                    "categories.extremes needs the extreme targets in the labels (extremes=True)."
                )
            labels, relations = labels[..., 0].flatten(), labels[..., 1:].flatten(0, 1)
            terms = self._extreme_terms(self.extreme_head(tokens), relations)
        else:
            labels, terms = labels.flatten(), {}
        owned = labels != IGNORED
        if not owned.any():  # keeps every parameter in the graph, as DDP expects
            loss, accuracy = logits.sum() * 0.0, logits.new_zeros(())
        else:
            loss = F.cross_entropy(logits[owned], labels[owned])
            accuracy = (logits[owned].argmax(-1) == labels[owned]).float().mean()
        if terms:
            loss = loss + self.extremes * terms["loss_extremes"]
            terms["loss_extremes"] = terms["loss_extremes"].detach()
        return {"loss": loss, "accuracy": accuracy.detach(), **terms}

    def unlabelled(self, frames: int, patches: int) -> torch.Tensor:
        """Labels that say nothing, for ``frames`` frames of a clip without them: (frames, patches), or
        (frames, patches, 1 + G * D) with ``extremes``."""
        device = self.head.weight.device
        labels = torch.full((frames, patches), IGNORED, dtype=torch.int64, device=device)
        if not self.extremes:
            return labels
        width = len(EXTREME_GROUPS) * len(DIRECTIONS)
        relations = torch.full((frames, patches, width), NO_EXTREME, dtype=torch.int64, device=device)
        return torch.cat([labels[..., None], relations], -1)

    def heads(self) -> nn.Module:
        """The trained heads, for a later stage's optimiser and the checkpoints: the categories' head alone,
        or both heads when ``extremes`` is on."""
        if not self.extremes:
            return self.head
        return nn.ModuleDict({"categories": self.head, "extremes": self.extreme_head})

    @staticmethod
    def _extreme_terms(scores: torch.Tensor, relations: torch.Tensor) -> dict[str, torch.Tensor]:
        """scores, relations: (N, G * D) logits and targets (:data:`NO_EXTREME` where there is none)."""
        said = relations != NO_EXTREME
        if not said.any():
            return {"loss_extremes": scores.sum() * 0.0, "extremes_accuracy": scores.new_zeros(())}
        loss = F.binary_cross_entropy_with_logits(scores[said], relations[said].to(scores.dtype))
        right = ((scores[said] > 0) == (relations[said] == 1)).float().mean()
        return {"loss_extremes": loss, "extremes_accuracy": right.detach()}


def build_categories_set(
    specs: list[DatasetSpec], model: MPGSAM2, seed: int = 0, extremes: bool = False
) -> TrainingSet:
    """The frames of every training set that names its objects' categories (Ref-YouTube-VOS's ``meta.json``),
    labelled with one category list shared by all (``.categories`` of each part), and with ``extremes``
    each patch's extreme targets too."""
    usable = []
    for spec in specs:
        prepare_generated(spec)
        if spec.format == "ytvos" and object_meta_path(spec.root, spec.split).is_file():
            usable.append(spec)
    if not usable:
        raise ValueError(
            "categories.steps needs a training set whose objects have categories (a Ref-YouTube-VOS split "
            "with <split>/meta.json); none of data.train has one. Set categories.steps to 0."
        )
    parts = [
        PatchCategories.for_model(
            spec.root, spec.split, model.config, seed=seed, max_videos=spec.max_items, extremes=extremes
        )
        for spec in usable
    ]
    # One label order for all parts: each was read with its own split's categories.
    categories = tuple(sorted({c for part in parts for c in part.categories}))
    for part in parts:
        part.categories = categories
    return TrainingSet(parts)


def categories_batches(
    dataset: TrainingSet,
    batch_size: int,
    context: DistributedContext,
    seed: int = 0,
    num_workers: int = 0,
    start: int = 0,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless ``(images, labels)`` batches of this process's share of ``dataset``, one epoch after another
    (each with other frames of the videos): (B, 3, s, s) float32 and (B, P) int64, on the CPU.

    ``start``: batches already drawn (by every process alike), skipped without reading them, so that a
    resumed run goes on with the batches an uninterrupted one would have drawn.
    """
    sampler, loader = resumable_loader(dataset, batch_size, context, seed, num_workers)
    per_epoch = len(loader)  # the epoch's batches of one process
    epoch, skipped = divmod(start, per_epoch)
    while True:
        sampler.set_epoch(epoch)
        dataset.set_epoch(epoch)
        # An epoch's order is dealt to the processes in blocks of batch_size x processes samples.
        sampler.consumed = skipped * batch_size * context.world_size
        yield from loader
        epoch, skipped = epoch + 1, 0


def stage_input_ids(model: MPGSAM2, tokenizer: ExpressionTokenizer, spec: CategoriesSpec) -> torch.Tensor:
    """(L,) int64: the tokens of the stage's fixed text."""
    return tokenizer.limited_to(model.config.beit3.max_text_tokens).encode(spec.expression).input_ids


def pretrain_categories(
    model: MPGSAM2,
    spec: CategoriesSpec,
    dataset: TrainingSet,
    tokenizer: ExpressionTokenizer,
    context: DistributedContext,
    output_dir: Path,
    weight_decay: float = 5e-4,
    clip_max_norm: float = 1.0,
    seed: int = 0,
    log_every: int = 50,
    num_workers: int = 0,
    forward: CategoriesForward | None = None,
) -> list[float]:
    """Train BEiT-3 of ``model`` in place for ``spec.steps`` steps on the categories of ``dataset``'s patches.

    The optimiser (AdamW) is the stage's own and is dropped at the end; so is the head, unless the caller
    passes it as ``forward`` (a :class:`CategoriesForward` of ``model``, on its device) to keep training it.

    Args:
        dataset: from :func:`build_categories_set`.
        output_dir: where the stage's log (``categories_log.jsonl``: loss and accuracy on each step's
            frames before they are trained on) is written by the main process.
    Returns:
        This process's loss at every step.
    """
    if spec.steps == 0:
        return []
    categories = dataset.datasets[0].categories
    if forward is None:
        forward = CategoriesForward(model, len(categories)).to(context.device)
    parameters = [p for p in forward.parameters() if p.requires_grad]
    fused = context.device.type in ("cpu", "cuda")
    optimizer = torch.optim.AdamW(parameters, lr=spec.lr, weight_decay=weight_decay, fused=fused or None)
    # Only the patch tokens are used: the text's own outputs are not.
    module = wrap_distributed(forward, context, find_unused_parameters=True)
    input_ids = stage_input_ids(model, tokenizer, spec).to(context.device)
    logger.info(
        "Categories pre-training: %d steps of %d frame(s) per process, %d categories %s",
        spec.steps,
        spec.batch_size,
        len(categories),
        list(categories),
    )
    losses: list[float] = []
    log = StageLog("categories", output_dir / CATEGORIES_LOG, spec.steps, log_every, context)
    batches = categories_batches(dataset, spec.batch_size, context, seed, num_workers)
    for step, (images, labels) in zip(range(spec.steps), batches):
        set_learning_rates(optimizer, learning_rate_factor(step, spec.warmup_steps, "cosine", spec.steps))
        optimizer.zero_grad(set_to_none=True)
        terms = module(images.to(context.device), input_ids, labels.to(context.device))
        if not torch.isfinite(terms["loss"]):
            raise FloatingPointError(f"Non-finite categories loss at step {step + 1}; stopping.")
        terms["loss"].backward()
        if clip_max_norm > 0:
            torch.nn.utils.clip_grad_norm_(parameters, clip_max_norm)
        optimizer.step()
        losses.append(float(terms["loss"].detach()))
        terms = {"loss": losses[-1], **{k: float(v) for k, v in terms.items() if k != "loss"}}
        log.add(step + 1, terms, optimizer.param_groups[0]["lr"])
    return losses
