"""Deterministic random weights for untrained models (the "test" preset, demos without a checkpoint).

Default PyTorch initialisation leaves SAM 2's object-score head near 0, so an untrained model often says
"no object" and shows nothing. This rule scales matrices by 1/sqrt(fan-in), keeps norms near 1 and biases
the object-score head to "present", so that an untrained model draws masks, which is what the UI and
pipeline tests need to see. It is also the rule with which the official code's parity outputs were made:
the tensor in row ``r`` of a state dict is drawn from a generator seeded with ``seed * 1_000_003 + r``, so
the weights depend only on each entry's name, shape and position.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

#: Every official and every one of our names for the object-score head's last bias ends like this.
OBJECT_SCORE_BIAS_SUFFIX = "pred_obj_score_head.layers.2.bias"
#: Its value: the object is "present" for random inputs, so that untrained models draw masks.
OBJECT_SCORE_BIAS = 4.0
_SEED_STRIDE = 1_000_003


def random_tensor(name: str, shape: tuple[int, ...], row: int, seed: int = 0) -> torch.Tensor:
    """The float32 tensor of state-dict row ``row`` named ``name``."""
    generator = torch.Generator().manual_seed(seed * _SEED_STRIDE + row)
    noise = torch.randn(shape, generator=generator, dtype=torch.float32)
    leaf = name.rsplit(".", 1)[-1]
    if name.endswith("positional_encoding_gaussian_matrix"):
        return noise  # random Fourier features are drawn at scale 1
    if name.endswith(OBJECT_SCORE_BIAS_SUFFIX):
        return noise + OBJECT_SCORE_BIAS
    if len(shape) >= 2:
        return noise / math.sqrt(math.prod(shape[1:]))
    if leaf in ("weight", "gamma"):
        return 1.0 + 0.1 * noise  # norm scales and layer scales near 1
    return 0.02 * noise  # biases and 1-d embeddings


def random_state_dict(rows: Iterable[tuple[str, tuple[int, ...]]], seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict for ``(name, shape)`` rows in state-dict order (an official checkpoint's manifest)."""
    return {name: random_tensor(name, shape, row, seed) for row, (name, shape) in enumerate(rows)}


def randomize_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Fill every floating-point parameter and persistent buffer of ``model`` in place; returns the model."""
    with torch.no_grad():
        for row, (name, tensor) in enumerate(model.state_dict().items()):
            if tensor.is_floating_point():
                tensor.copy_(random_tensor(name, tuple(tensor.shape), row, seed).to(tensor.dtype))
    return model
