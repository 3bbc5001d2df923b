"""What a toy model's image encoder sees: linear read-outs of BEiT-3's patch tokens on generated clips.

The grounding can only name a shape by an attribute that BEiT-3's patch tokens carry. :func:`probe_patch_tokens`
fits, on the tokens of some clips, one linear read-out per attribute (the colour, the kind of shape, the
size of the shape under each patch) and scores it on the tokens of other clips. An attribute read back well
above its chance level is in the tokens; one read back at chance is not, whatever the text asks.

A patch is labelled with the attributes of the shape that covers more than half of it (its visible part,
:func:`mpgsam2.datasets.object_categories.owned_patches`);
patches of background or shared by several shapes are left out. BEiT-3 reads the frame with a neutral
expression (``"the shape"``), so the tokens say what the encoder sees before any word selects a shape.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ...inference.frames import preprocess
from ..object_categories import owned_patches
from .generator import generate_toy_clip
from .scene import ToyConfig
from .vocabulary import COLOURS, SHAPES, SIZES

#: The expression BEiT-3 reads beside each frame: it names no attribute.
NEUTRAL_EXPRESSION = "the shape"
#: The attributes read back from each patch token, with their values.
ATTRIBUTE_VALUES = {"colour": tuple(COLOURS), "shape": tuple(SHAPES), "size": tuple(SIZES)}
#: The ridge penalty of each read-out, per fitted patch (on standardised tokens): enough to keep a read-out
#: from memorising the few shapes of the fitted clips, small against the signal of an attribute the tokens hold.
RIDGE = 0.01


@dataclass(frozen=True)
class PatchProbe:
    """Held-out accuracies of the linear read-outs, with the share of the most common value (chance)."""

    fit_patches: int
    test_patches: int
    accuracy: dict[str, float]  # attribute -> accuracy on the test patches
    chance: dict[str, float]  # attribute -> share of its most common value among the test patches
    shape_by_size: dict[str, float]  # the shape read-out's accuracy on patches of small and of big shapes

    def as_dict(self) -> dict:
        return {
            name: {key: round(v, 4) for key, v in value.items()} if isinstance(value, dict) else value
            for name, value in asdict(self).items()
        }


@torch.no_grad()
def patch_tokens(model, tokenizer, seeds: Iterable[int], config: ToyConfig | None = None):
    """BEiT-3's patch tokens of every frame of the clips of ``seeds``, and the labels of the owned patches.

    Args:
        model: an :class:`mpgsam2.MPGSAM2` (a toy preset); tokenizer: its tokenizer.
    Returns:
        ``(tokens, labels)``: (N, D) float32 tokens of the N owned patches, and ``{attribute: (N,) int64}``
        indices into :data:`ATTRIBUTE_VALUES`.
    """
    grid = model.config.beit3.grid_size
    ids = tokenizer.encode(NEUTRAL_EXPRESSION).input_ids.to(model.device)
    tokens, labels = [], {name: [] for name in ATTRIBUTE_VALUES}
    for seed in seeds:
        clip = generate_toy_clip(seed, config)
        images = encoder_inputs(model, clip.frames).to(model.device, model.dtype)
        encoded = model.multimodal_encoder(images, ids[None].expand(len(images), -1)).visual_tokens
        owned, owner = owned_patches(clip.masks, grid)
        tokens.append(encoded.float().cpu()[owned])
        for name, values in object_attributes(clip.objects).items():
            labels[name].append(values[owner[owned]])
    return torch.cat(tokens), {name: torch.cat(values) for name, values in labels.items()}


def encoder_inputs(model, frames: np.ndarray) -> torch.Tensor:
    """(T, H, W, 3) uint8 frames -> (T, 3, s, s) BEiT-3 inputs on the host, as training prepares them."""
    beit3, preprocessing = model.config.beit3, model.config.preprocess
    return torch.stack(
        [preprocess(f, beit3.image_size, preprocessing.mean, preprocessing.std) for f in frames]
    )


def object_attributes(objects) -> dict[str, torch.Tensor]:
    """``{attribute: (K,) int64}``: each of a clip's K shapes' value of each attribute, as an index into
    :data:`ATTRIBUTE_VALUES` (index it with :func:`owned_patches`' owners to label patches)."""
    return {
        name: torch.tensor([values.index(getattr(shape, name)) for shape in objects], dtype=torch.int64)
        for name, values in ATTRIBUTE_VALUES.items()
    }


def fit_read_out(tokens: torch.Tensor, labels: torch.Tensor, num_values: int) -> torch.Tensor:
    """A ridge regression of the one-hot ``labels`` on ``tokens`` (N, D) with a bias: (D + 1, num_values)
    weights; the predicted value of a token is the argmax of its row times them (:func:`read_out`)."""
    inputs = with_bias(tokens.double())
    targets = F.one_hot(labels, num_values).double()
    gram = inputs.T @ inputs + RIDGE * len(inputs) * torch.eye(inputs.shape[1], dtype=torch.float64)
    return torch.linalg.solve(gram, inputs.T @ targets)


def with_bias(tokens: torch.Tensor) -> torch.Tensor:
    return torch.cat([tokens, tokens.new_ones(len(tokens), 1)], dim=1)


def read_out(weights: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """(N,) the value index each of ``tokens`` (N, D) reads as."""
    return (with_bias(tokens.double()) @ weights).argmax(1)


def probe_patch_tokens(
    predictor, fit_seeds: Iterable[int], test_seeds: Iterable[int], config: ToyConfig | None = None
) -> PatchProbe:
    """Fit linear read-outs of each attribute on the patch tokens of ``fit_seeds``' clips; score them on
    ``test_seeds``' clips. ``predictor``: a :class:`mpgsam2.VideoPredictor` (its model and tokenizer)."""
    model, tokenizer = predictor.model, predictor.tokenizer
    fitted = patch_tokens(model, tokenizer, fit_seeds, config)
    return score_read_outs(*fitted, *patch_tokens(model, tokenizer, test_seeds, config))


def score_read_outs(
    fit_tokens: torch.Tensor,
    fit_labels: dict[str, torch.Tensor],
    test_tokens: torch.Tensor,
    test_labels: dict[str, torch.Tensor],
) -> PatchProbe:
    """Fit a read-out of each attribute on (N, D) tokens with their labels (as :func:`patch_tokens` gives
    them) and score it on others."""
    if not len(fit_tokens) or not len(test_tokens):
        raise ValueError("The clips have no patch owned by one shape; pass more seeds.")
    # Standardised with the fitted patches' statistics, so that one step size suits every model.
    mean, std = fit_tokens.mean(0), fit_tokens.std(0) + 1e-5
    fit_tokens, test_tokens = (fit_tokens - mean) / std, (test_tokens - mean) / std
    small = test_labels["size"] == ATTRIBUTE_VALUES["size"].index("small")
    accuracy, chance, shape_by_size = {}, {}, {}
    for name, values in ATTRIBUTE_VALUES.items():
        weights = fit_read_out(fit_tokens, fit_labels[name], len(values))
        right = read_out(weights, test_tokens) == test_labels[name]
        accuracy[name] = float(right.float().mean())
        chance[name] = float(torch.bincount(test_labels[name], minlength=len(values)).max()) / len(right)
        if name == "shape":
            for size, chosen in (("small", small), ("big", ~small)):
                if chosen.any():
                    shape_by_size[size] = float(right[chosen].float().mean())
    return PatchProbe(len(fit_tokens), len(test_tokens), accuracy, chance, shape_by_size)
