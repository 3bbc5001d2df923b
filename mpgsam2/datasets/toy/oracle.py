"""The ground truth as a toy model's prior: what the rest of the model makes of a perfect grounding.

:func:`oracle_prior` replaces every prior that the mask prior generator makes with the ground truth, in the form
the prior loss taught the model (:func:`recorded_prior_target` reads which from a checkpoint's run
configuration), so that a grounding that fails can be told from a segmentation that fails.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from ...training.losses import PRIOR_TARGETS, LossWeights, covered_fractions
from ...training.run_config import load_config

#: The logit of a fully covered cell of an oracle prior (sigmoid: 0.9997); an empty cell gets its negative.
ORACLE_LOGIT = 8.0


@contextmanager
def oracle_prior(model: torch.nn.Module, truth: np.ndarray, cell_target: str = "coverage") -> Iterator[None]:
    """While open, every prior the model's mask prior generator makes is the ground truth instead.

    Each cell's logit is ``ORACLE_LOGIT * (2 t - 1)``, t the prior loss's target for the fraction of the cell
    the target covers, so a covered cell is near 1 and an empty one near 0.

    Args:
        model: an :class:`mpgsam2.MPGSAM2`.
        truth: (T, H, W) bool masks of the one expression the clip is run with.
        cell_target: the prior loss's cell target the model was trained with (``loss.prior_target``, a key of
            :data:`mpgsam2.training.losses.PRIOR_TARGETS`): the perfect prior of that model.
    """
    masks = torch.from_numpy(np.ascontiguousarray(truth)).float()

    def replace(module, inputs, context):
        targets = PRIOR_TARGETS[cell_target](covered_fractions(masks, context.prior_logits.shape[-2:]))
        logits = (ORACLE_LOGIT * (2 * targets - 1)).to(context.prior_logits)
        return dataclasses.replace(context, prior_logits=logits, priors=torch.sigmoid(logits))

    handle = model.mask_prior.register_forward_hook(replace)
    try:
        yield
    finally:
        handle.remove()


def recorded_prior_target(folder: str | Path) -> str:
    """The prior loss's cell target (``loss.prior_target``) of the run that made a checkpoint folder, from the
    ``train_config.json`` it carries (``"coverage"``, the default, when it carries none)."""
    recorded = Path(folder) / "train_config.json"
    return load_config(recorded).loss.prior_target if recorded.is_file() else LossWeights().prior_target
