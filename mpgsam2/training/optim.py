"""The optimiser: AdamW with the two official learning-rate groups; an optional learning-rate schedule."""

from __future__ import annotations

import math

import torch
from torch import nn

#: Learning-rate decays: "none" (the official constant rates) or "cosine" (half a cosine to 0).
LR_DECAYS = ("none", "cosine")

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


#: The multimodal encoder (BEiT-3), which ``lr_encoder`` may set apart from the base group.
ENCODER_PREFIX = "multimodal_encoder."

#: The whole mask prior generator (in both official groups), which ``lr_prior`` may set apart.
PRIOR_PREFIX = "mask_prior."


def parameter_groups(
    model: nn.Module,
    lr: float,
    lr_fast: float,
    lr_encoder: float | None = None,
    lr_prior: float | None = None,
) -> list[dict]:
    """The two official groups of trainable parameters: ``lr`` for most, ``lr_fast`` for the new modules.

    With ``lr_encoder`` (not official), BEiT-3's parameters form a third group at that rate, so that a main
    stage after grounding pre-training (:mod:`mpgsam2.training.grounding`) does not undo what it learnt.
    ``lr_prior`` (not official) does the same for every parameter of the mask prior generator, the other
    module that the grounding stages train.
    """
    rates = {"base": lr, "fast": lr_fast, "encoder": lr_encoder, "prior": lr_prior}
    groups: dict[str, list] = {name: [] for name in rates}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        if lr_prior is not None and name.startswith(PRIOR_PREFIX):
            groups["prior"].append(parameter)
        elif is_fast_parameter(name):
            groups["fast"].append(parameter)
        elif lr_encoder is not None and name.startswith(ENCODER_PREFIX):
            groups["encoder"].append(parameter)
        else:
            groups["base"].append(parameter)
    return [
        {"params": params, "lr": rates[name], "name": name}
        for name, params in groups.items()
        if rates[name] is not None
    ]


def build_optimizer(
    model: nn.Module,
    lr: float = 2e-6,
    lr_fast: float = 5e-5,
    weight_decay: float = 5e-4,
    lr_encoder: float | None = None,
    lr_prior: float | None = None,
) -> torch.optim.AdamW:
    """AdamW with the official weight decay (on every trainable parameter) and learning-rate groups.

    The official defaults are ``lr`` 2e-6 (1e-5 for RefCOCO pre-training) and ``lr_fast`` 5e-5; the official
    run has no learning-rate schedule (its DeepSpeed set-up returns none). ``lr_encoder`` and ``lr_prior``:
    see :func:`parameter_groups`.

    On CPU and CUDA the fused implementation runs: the same update in one kernel instead of one per parameter
    tensor, which on a CPU is a fifth of a small model's step (e.g. 24 against 4.5 ms for the toy preset).
    """
    groups = parameter_groups(model, lr, lr_fast, lr_encoder, lr_prior)
    devices = {p.device.type for group in groups for p in group["params"]}
    fused = bool(devices) and devices <= {"cpu", "cuda"}
    return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay, fused=fused or None)


def learning_rate_factor(
    step: int, warmup_steps: int = 0, decay: str = "none", total_steps: int | None = None
) -> float:
    """The multiple of the base learning rates for optimiser step ``step`` (0-based).

    The official recipe is constant (``warmup_steps=0``, ``decay="none"``: always 1). Training from scratch
    may warm up linearly over ``warmup_steps`` and decay along half a cosine to 0 at ``total_steps``
    (``decay="cosine"``). A function of the step alone, so that a resumed run continues on the same curve.
    """
    factor = min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
    if decay == "cosine":
        if not total_steps:
            raise ValueError("A cosine decay needs the total number of steps (train.max_steps).")
        factor *= 0.5 * (1.0 + math.cos(math.pi * min(1.0, step / total_steps)))
    elif decay != "none":
        raise ValueError(f"Unknown learning-rate decay {decay!r}; choose one of {LR_DECAYS}.")
    return factor


def set_learning_rates(optimizer: torch.optim.Optimizer, factor: float) -> None:
    """Set every group's learning rate to ``factor`` times its base rate.

    The base rate is recorded in the group (``base_lr``) on first use; it travels with the optimiser's state
    dict, so that a resumed run scales the configured rate, not an already scaled one.
    """
    for group in optimizer.param_groups:
        group.setdefault("base_lr", group["lr"])
        group["lr"] = group["base_lr"] * factor
