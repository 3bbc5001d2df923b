"""The optimiser: AdamW with the two official learning-rate groups."""

from __future__ import annotations

import torch
from torch import nn

#: Parameters trained with the fast learning rate (the official ``--lr_bifit_names``: ``mask_linear``,
#: ``mask_product``, ``vmtoken``, ``vtlfusion_module``, ``mmfusion_module``, ``objfusion_module``).
FAST_LR_PREFIXES: tuple[str, ...] = (
    "mask_prior.channel_modulation.",
    "mask_prior.prior_head.",
    "mask_prior.class_token_attention.",
    "aggregator.pixel_global.",
    "aggregator.object_global.",
    "aggregator.object_local.",
)


def is_fast_parameter(name: str) -> bool:
    """Whether a parameter (our name) is in the official fast learning-rate group."""
    return name.startswith(FAST_LR_PREFIXES)


def parameter_groups(model: nn.Module, lr: float, lr_fast: float) -> list[dict]:
    """The two official groups of trainable parameters: ``lr`` for most, ``lr_fast`` for the new modules."""
    slow = [p for n, p in model.named_parameters() if p.requires_grad and not is_fast_parameter(n)]
    fast = [p for n, p in model.named_parameters() if p.requires_grad and is_fast_parameter(n)]
    return [{"params": slow, "lr": lr, "name": "base"}, {"params": fast, "lr": lr_fast, "name": "fast"}]


def build_optimizer(
    model: nn.Module, lr: float = 2e-6, lr_fast: float = 5e-5, weight_decay: float = 5e-4
) -> torch.optim.AdamW:
    """AdamW with the official weight decay (on every trainable parameter) and learning-rate groups.

    The official defaults are ``lr`` 2e-6 (1e-5 for RefCOCO pre-training) and ``lr_fast`` 5e-5; the official
    run has no learning-rate schedule (its DeepSpeed set-up returns none).
    """
    return torch.optim.AdamW(parameter_groups(model, lr, lr_fast), lr=lr, weight_decay=weight_decay)
