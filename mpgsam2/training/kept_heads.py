"""The categories stage's heads kept training beside the later stages (grounding, the main loop).

Taught first and then dropped, the kinds are worn away by the grounding stage (docs/TRAINING.md), so with
``grounding.categories`` or ``loss.categories`` above 0 the heads of :mod:`mpgsam2.training.categories` stay on:
:class:`KeptCategories` adds their loss on another batch of frames to every step (``categories.kept_frames``
``"extra"``), :class:`StageFrameCategories` on the frames that the stage already passes through BEiT-3
(``"stage"``: no extra pass of the encoder), whose clips :func:`label_stage_frames` makes carry their labels.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from ..datasets.registry import TrainingSet
from .categories import CategoriesForward, categories_batches
from .distributed import DistributedContext


@dataclass
class KeptHead:
    """The categories stage's head, kept to go on training beside a later stage (:class:`KeptCategories`),
    with the frames it trains on: another batch of ``dataset`` (from :func:`categories_batches`) at each
    step, read beside the stage's text ``input_ids`` ((L,) on the model's device)."""

    forward: CategoriesForward  # on the model's device
    dataset: TrainingSet
    input_ids: torch.Tensor
    batch_size: int
    context: DistributedContext
    seed: int = 0
    num_workers: int = 0
    drawn: int = 0  # batches drawn so far, over all the later stages
    frames: str = "extra"  # :data:`KEPT_FRAMES`; with "stage", no batch is ever drawn
    _batches: Iterator | None = field(default=None, repr=False)

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next ``(images, labels)`` batch, on the model's device."""
        if self._batches is None:
            self._batches = categories_batches(
                self.dataset, self.batch_size, self.context, self.seed, self.num_workers, self.drawn
            )
        images, labels = next(self._batches)
        self.drawn += 1
        device = self.input_ids.device
        return images.to(device), labels.to(device)

    def resume_at(self, drawn: int) -> None:
        """Go on from the ``drawn``-th batch (of a run that stopped there)."""
        self.drawn, self._batches = drawn, None

    def around(self, stage: nn.Module, weight: float) -> nn.Module:
        """``stage`` with the categories loss at ``weight`` added (``stage`` itself at weight 0), on frames
        of its own or on the stage's frames (``frames``)."""
        if not weight:
            return stage
        if self.frames == "stage":
            return StageFrameCategories(stage, self.forward, weight)
        return KeptCategories(stage, self, weight)


class KeptCategories(nn.Module):
    """A later stage's losses plus ``weight`` times the categories loss of the next batch of frames.

    Wraps the stage's module (e.g. :class:`mpgsam2.training.grounding.GroundingForward`) together with the
    categories head, so that one ``DistributedDataParallel`` synchronises both; BEiT-3 is shared, not copied.
    """

    def __init__(self, stage: nn.Module, kept: KeptHead, weight: float):
        super().__init__()
        self.stage = stage
        self.categories = kept.forward
        self.kept = kept
        self.weight = weight

    def forward(self, clips: Sequence, num_boxes: float) -> dict[str, torch.Tensor]:
        """The stage's terms, its ``"loss"`` plus the weighted categories loss, ``"loss_categories"``
        (before its weight) and ``"categories_accuracy"`` on the frames, and the categories stage's other
        terms under their own names (``"loss_extremes"``, ``"extremes_accuracy"`` with that head)."""
        terms = self.stage(clips, num_boxes)
        images, labels = self.kept.next_batch()
        return _with_head_terms(terms, self.categories(images, self.kept.input_ids, labels), self.weight)


def _with_head_terms(terms: dict, kept: dict, weight: float) -> dict[str, torch.Tensor]:
    """A stage's terms with ``weight`` times the head's loss added and the head's terms beside them."""
    others = {name: value for name, value in kept.items() if name not in ("loss", "accuracy")}
    return {
        **terms,
        **others,
        "loss": terms["loss"] + weight * kept["loss"],
        "loss_categories": kept["loss"].detach(),
        "categories_accuracy": kept["accuracy"],
    }


class StageFrameCategories(nn.Module):
    """A later stage's losses plus ``weight`` times the categories loss of the frames the stage itself passes
    through BEiT-3: no extra pass of the encoder, and the head sees each frame beside its own expression.

    The patch tokens are taken as BEiT-3 returns them during the stage's forward (every call, in order), and
    labelled with the clips' ``patch_labels`` in the same order (frames of a clip without them teach nothing).
    The head's terms are named as :class:`KeptCategories` names them.
    """

    def __init__(self, stage: nn.Module, categories: CategoriesForward, weight: float):
        super().__init__()
        self.stage = stage
        self.categories = categories
        self.weight = weight

    def forward(self, clips: Sequence, num_boxes: float) -> dict[str, torch.Tensor]:
        encoded: list[torch.Tensor] = []
        # A hook rather than a change to every stage's forward: whichever way a stage batches its frames
        # through BEiT-3, each call's rows follow the clips' frames in order.
        hook = self.categories.multimodal_encoder.register_forward_hook(
            lambda _module, _inputs, output: encoded.append(output.visual_tokens)
        )
        try:
            terms = self.stage(clips, num_boxes)
        finally:
            hook.remove()
        tokens = torch.cat(encoded)
        patches = tokens.shape[1]
        labels = torch.cat(
            [
                clip.patch_labels
                if clip.patch_labels is not None
                else self.categories.unlabelled(clip.num_frames, patches)
                for clip in clips
            ]
        )
        if len(labels) != len(tokens):
            raise RuntimeError(
                f"The stage passed {len(tokens)} frames through BEiT-3 for {len(labels)} frames of its clips: "
                'categories.kept_frames "stage" needs a stage that encodes each frame of its clips once.'
            )
        return _with_head_terms(terms, self.categories.head_terms(tokens, labels), self.weight)


def label_stage_frames(training_set: TrainingSet, categories_set: TrainingSet) -> int:
    """Make the video datasets of ``training_set`` add patch labels to their clips (for
    :class:`StageFrameCategories`), from the part of ``categories_set`` (:func:`build_categories_set`) that
    reads the same split, so that both label with the same category order.

    Returns:
        The number of datasets labelled (those without a matching part give clips without labels).
    """
    parts = {(part.benchmark.root.resolve(), part.benchmark.split): part for part in categories_set.datasets}
    labelled = 0
    for dataset in {id(d): d for d in training_set.datasets}.values():
        benchmark = getattr(dataset, "benchmark", None)
        part = None if benchmark is None else parts.get((benchmark.root.resolve(), benchmark.split))
        if part is not None:
            dataset.patch_labeller = part.labels_of
            labelled += 1
    return labelled
