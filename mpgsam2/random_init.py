"""Deterministic random weights for untrained models (the "test" preset, demos without a checkpoint).

Default PyTorch initialisation leaves SAM 2's object-score head near 0, so an untrained model often says
"no object" and shows nothing. This rule (the same as the parity reference's) scales matrices by
1/sqrt(fan-in), keeps norms near 1 and biases the object-score head to "present", so that an untrained
model draws masks, which is what the UI and pipeline tests need to see.
"""

from __future__ import annotations

import math

import torch
from torch import nn

OBJECT_SCORE_BIAS = "sam2.sam_mask_decoder.pred_obj_score_head.layers.2.bias"


def randomize_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Fill every parameter and persistent buffer of ``model`` in place; returns the model."""
    with torch.no_grad():
        for row, (name, tensor) in enumerate(model.state_dict().items()):
            if not tensor.is_floating_point():
                continue
            generator = torch.Generator().manual_seed(seed * 1_000_003 + row)
            noise = torch.randn(tensor.shape, generator=generator, dtype=torch.float32)
            leaf = name.rsplit(".", 1)[-1]
            if name.endswith("positional_encoding_gaussian_matrix"):
                value = noise
            elif name == OBJECT_SCORE_BIAS:
                value = noise + 4.0
            elif tensor.dim() >= 2:
                value = noise / math.sqrt(math.prod(tensor.shape[1:]))
            elif leaf in ("weight", "gamma"):
                value = 1.0 + 0.1 * noise
            else:
                value = 0.02 * noise
            tensor.copy_(value.to(tensor.dtype))
    return model
