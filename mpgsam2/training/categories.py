"""Categories pre-training: BEiT-3 alone learns the category of the object under each patch, before grounding.

Words can only point at what the image encoder tells apart. Trained from scratch on the toy data, BEiT-3's patch
tokens come to carry the colour and size of a shape but not its kind (square, circle...): the grounding loss
alone does not teach it, even with a kind loss added to it (docs/TRAINING.md). This stage does what BEiT-3's
own pre-training does for the released weights, in the small: a linear head on each patch token learns the
category of the object that owns the patch (:class:`mpgsam2.datasets.object_categories.PatchCategories`), the encoder
under it learns to see them, and the head is dropped at the end. The official recipe needs no such stage (it
starts from pre-trained BEiT-3); it is off by default (``categories.steps = 0``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from ..datasets.object_categories import IGNORED, PatchCategories, object_meta_path
from ..datasets.registry import DatasetSpec, TrainingSet, prepare_generated
from ..modeling.model import MPGSAM2
from ..tokenizer import ExpressionTokenizer
from .distributed import DistributedContext, ResumableSampler, wrap_distributed
from .optim import learning_rate_factor, set_learning_rates
from .stage_log import StageLog

logger = logging.getLogger(__name__)

#: The stage's log, beside the main loop's ``log.jsonl`` in the run's folder.
CATEGORIES_LOG = "categories_log.jsonl"


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

    def __post_init__(self) -> None:
        if min(self.steps, self.warmup_steps) < 0 or self.batch_size < 1:
            raise ValueError("categories.steps and warmup_steps must be at least 0, batch_size at least 1.")


class CategoriesForward(nn.Module):
    """The cross-entropy of a linear head's category of each owned patch token, and its accuracy.

    Holds BEiT-3 and the head only, so that ``DistributedDataParallel`` synchronises nothing else.
    """

    def __init__(self, model: MPGSAM2, num_categories: int):
        super().__init__()
        self.multimodal_encoder = model.multimodal_encoder
        self.head = nn.Linear(model.config.beit3.embed_dim, num_categories)

    def forward(self, images: torch.Tensor, input_ids: torch.Tensor, labels: torch.Tensor) -> dict:
        """images: (B, 3, s, s); input_ids: (L,) the stage's text; labels: (B, P) category indices or
        :data:`IGNORED`. Returns ``{"loss", "accuracy"}`` over the owned patches (0 when there are none)."""
        tokens = self.multimodal_encoder(images, input_ids[None].expand(len(images), -1)).visual_tokens
        logits = self.head(tokens).flatten(0, 1)
        labels = labels.flatten()
        owned = labels != IGNORED
        if not owned.any():  # keeps every parameter in the graph, as DDP expects
            return {"loss": logits.sum() * 0.0, "accuracy": logits.new_zeros(())}
        loss = F.cross_entropy(logits[owned], labels[owned])
        accuracy = (logits[owned].argmax(-1) == labels[owned]).float().mean()
        return {"loss": loss, "accuracy": accuracy.detach()}


def build_categories_set(specs: list[DatasetSpec], model: MPGSAM2, seed: int = 0) -> TrainingSet:
    """The frames of every training set that names its objects' categories (Ref-YouTube-VOS's ``meta.json``),
    labelled with one category list shared by all (``.categories`` of each part)."""
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
    beit3, preprocessing = model.config.beit3, model.config.preprocess

    def frames(spec: DatasetSpec, categories=None) -> PatchCategories:
        return PatchCategories(
            spec.root,
            spec.split,
            beit3.image_size,
            preprocessing.mean,
            preprocessing.std,
            beit3.grid_size,
            seed,
            spec.max_items,
            categories,
        )

    parts = [frames(spec) for spec in usable]
    categories = tuple(sorted({c for part in parts for c in part.categories}))
    return TrainingSet([frames(spec, categories) for spec in usable])


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
) -> list[float]:
    """Train BEiT-3 of ``model`` in place for ``spec.steps`` steps on the categories of ``dataset``'s patches.

    The head and the optimiser (AdamW) are the stage's own and are dropped at the end.

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
    sampler = ResumableSampler(dataset, context.world_size, context.rank, seed)
    loader = DataLoader(
        dataset,
        batch_size=spec.batch_size,
        sampler=sampler,
        num_workers=num_workers,
        generator=torch.Generator().manual_seed(seed),
    )
    forward = CategoriesForward(model, len(categories)).to(context.device)
    parameters = [p for p in forward.parameters() if p.requires_grad]
    fused = context.device.type in ("cpu", "cuda")
    optimizer = torch.optim.AdamW(parameters, lr=spec.lr, weight_decay=weight_decay, fused=fused or None)
    # Only the patch tokens are used: the text's own outputs are not.
    module = wrap_distributed(forward, context, find_unused_parameters=True)
    input_ids = tokenizer.limited_to(model.config.beit3.max_text_tokens).encode(spec.expression).input_ids
    input_ids = input_ids.to(context.device)
    logger.info(
        "Categories pre-training: %d steps of %d frame(s) per process, %d categories %s",
        spec.steps,
        spec.batch_size,
        len(categories),
        list(categories),
    )
    losses: list[float] = []
    log = StageLog("categories", output_dir / CATEGORIES_LOG, spec.steps, log_every, context)
    step, epoch = 0, 0
    while step < spec.steps:
        sampler.set_epoch(epoch)
        dataset.set_epoch(epoch)
        for images, labels in loader:
            set_learning_rates(optimizer, learning_rate_factor(step, spec.warmup_steps, "cosine", spec.steps))
            optimizer.zero_grad(set_to_none=True)
            terms = module(images.to(context.device), input_ids, labels.to(context.device))
            if not torch.isfinite(terms["loss"]):
                raise FloatingPointError(f"Non-finite categories loss at step {step + 1}; stopping.")
            terms["loss"].backward()
            if clip_max_norm > 0:
                torch.nn.utils.clip_grad_norm_(parameters, clip_max_norm)
            optimizer.step()
            step += 1
            losses.append(float(terms["loss"].detach()))
            terms = {"loss": losses[-1], "accuracy": float(terms["accuracy"])}
            log.add(step, terms, optimizer.param_groups[0]["lr"])
            if step >= spec.steps:
                break
        epoch += 1
    return losses
