"""Preparing a model for training: the frozen image encoder (trained instead from scratch), the official
dropout, gradient checkpointing."""

from __future__ import annotations

import weakref

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..modeling.model import MPGSAM2

#: The only frozen part of the official training: SAM 2's Hiera trunk and FPN neck.
FROZEN_PREFIX = "sam2.image_encoder."
OFFICIAL_DROPOUT = 0.1


def freeze_image_encoder(model: MPGSAM2) -> None:
    """Freeze SAM 2's image encoder (Hiera + FPN), as the official training; everything else trains."""
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(not name.startswith(FROZEN_PREFIX))


def _fusion_layers(model: MPGSAM2) -> list[nn.Module]:
    layers = [model.mask_prior.visual_interaction]
    for name in ("pixel_global", "object_global", "object_local"):
        layers += list(getattr(model.aggregator, name))
    return layers


class _OutputDropout:
    """Forward hook: dropout on a module's output (the first element of a tuple), in training mode only."""

    def __init__(self, p: float):
        self.p = p

    def __call__(self, module: nn.Module, inputs: tuple, output):
        if not module.training or self.p <= 0:
            return None
        if isinstance(output, tuple):
            return (F.dropout(output[0], self.p, True), *output[1:])
        return F.dropout(output, self.p, True)


_DROPOUT_HOOKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def set_dropout(model: MPGSAM2, p: float = OFFICIAL_DROPOUT) -> None:
    """Dropout ``p`` where the official model has it (0.1 there), active in training mode only.

    The official fusion layers (the aggregator's three fusions and the prior generator's joint attention
    layer) apply dropout to the attention weights, after the attention, inside the FFN and after the FFN;
    SAM 2's memory attention has its own dropout layers. This package's fusion layers have no dropout
    modules (inference does not need them), so the same four dropouts are attached here as forward hooks
    (the FFN's hidden dropout as a hook on ``linear1``, which is the same since dropout commutes with ReLU).
    The mask decoder's two-way transformer and BEiT-3 have none, as officially. ``p = 0`` turns all off.
    """
    for handle in _DROPOUT_HOOKS.pop(model, []):
        handle.remove()
    handles = []
    for layer in _fusion_layers(model):
        attention = layer.multihead_attn if hasattr(layer, "multihead_attn") else layer.self_attn
        attention.dropout = p
        if any(isinstance(m, nn.Dropout) for m in layer.modules()):
            for module in layer.modules():
                if isinstance(module, nn.Dropout):
                    module.p = p
            continue
        for module in (attention, layer.linear1, layer.linear2):
            handles.append(module.register_forward_hook(_OutputDropout(p)))
    _DROPOUT_HOOKS[model] = handles
    for module in model.sam2.memory_attention.modules():
        if isinstance(module, nn.Dropout):
            module.p = p
        if hasattr(module, "dropout_p"):
            module.dropout_p = p
        if hasattr(module, "dropout_value"):
            module.dropout_value = p


_CHECKPOINTED: weakref.WeakSet = weakref.WeakSet()


def enable_gradient_checkpointing(model: MPGSAM2) -> None:
    """Recompute BEiT-3's layers in the backward pass instead of storing their activations.

    (:func:`video_forward` also recomputes each tracked frame when asked.) The layers' ``forward`` is
    wrapped in place, so parameter names and checkpoints do not change.
    """
    for layer in model.multimodal_encoder.encoder.layers:
        if layer in _CHECKPOINTED:
            continue
        original = layer.forward

        def forward(*args, _original=original, **kwargs):
            if torch.is_grad_enabled():
                return checkpoint(_original, *args, use_reentrant=False, **kwargs)
            return _original(*args, **kwargs)

        layer.forward = forward
        _CHECKPOINTED.add(layer)


def prepare_for_training(
    model: MPGSAM2,
    dropout: float = OFFICIAL_DROPOUT,
    gradient_checkpointing: bool = False,
    freeze_encoder: bool = True,
) -> MPGSAM2:
    """Official training state: image encoder frozen (and in eval mode), the rest in train mode, dropout.

    ``freeze_encoder=False`` (not official) trains SAM 2's image encoder too, in train mode: a model trained
    from scratch has no pre-trained Hiera to keep.
    """
    model.train()
    if freeze_encoder:
        freeze_image_encoder(model)
        model.sam2.image_encoder.eval()
    else:
        model.requires_grad_(True)
    set_dropout(model, dropout)
    if gradient_checkpointing:
        enable_gradient_checkpointing(model)
    return model
