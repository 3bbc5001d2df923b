"""The official checkpoints' names and ours: one declarative table, and loading and exporting through it.

The official checkpoints (Hugging Face ``ReeF2025/MPG-SAM2``) are ``EvfSamModel`` state dicts. Each row of
:data:`OFFICIAL_TO_OURS` maps an official prefix to ours; names below a prefix are identical. The table
doubles as a glossary of the paper's components.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from .errors import CheckpointError

# Official prefix -> our prefix. Longer (more specific) prefixes first.
OFFICIAL_TO_OURS: tuple[tuple[str, str], ...] = (
    ("visual_model.sam_mask_decoder.vtlfusion_module.", "aggregator.pixel_global.0."),
    ("visual_model.sam_mask_decoder.mmfusion_module.", "aggregator.object_global.0."),
    ("visual_model.sam_mask_decoder.objfusion_module.", "aggregator.object_local.0."),
    ("visual_model.sam_mask_decoder.patch_linear.", "aggregator.patch_merge."),
    ("visual_model.", "sam2."),
    ("mm_extractor.beit3.", "multimodal_encoder."),
    ("visual_ifi.", "mask_prior.visual_interaction."),
    ("vmtoken.multihead_attn.", "mask_prior.class_token_attention."),
    ("mask_linear.", "mask_prior.channel_modulation."),
    ("mask_product.", "mask_prior.prior_head."),
    ("meo_linear.", "mask_prior.mask_embedding."),
    ("text_hidden_fcs.0.", "mask_prior.sparse_prompt."),
    ("text_feat_linear.", "mask_prior.text_projection."),
    ("text2one_linear.", "mask_prior.sentence_score."),
)

# Wrappers that the official training scripts leave in front of the names (DeepSpeed, ReferFormer).
WRAPPER_PREFIXES = ("module.", "evf_model.")

# Stacked fusion layers (the paper's ablations) have no official counterpart.
_STACKED_FUSION = re.compile(r"aggregator\.\w+\.[1-9]")


def _rename(name: str, table: tuple[tuple[str, str], ...]) -> str | None:
    for source, target in table:
        if name.startswith(source):
            return target + name[len(source) :]
    return None


def from_official(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official names -> ours. Unknown names are kept, so that a strict load reports them."""
    renamed = {}
    for name, tensor in state.items():
        for wrapper in WRAPPER_PREFIXES:
            if name.startswith(wrapper):
                name = name[len(wrapper) :]
        renamed[_rename(name, OFFICIAL_TO_OURS) or name] = tensor
    return renamed


def to_official(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our names -> official ones (only the released configuration has official names).

    Raises:
        CheckpointError: a name without an official counterpart (stacked fusion layers of an ablation).
    """
    reverse = tuple(
        sorted(((ours, official) for official, ours in OFFICIAL_TO_OURS), key=lambda p: -len(p[0]))
    )
    renamed = {}
    for name, tensor in state.items():
        official = _rename(name, reverse)
        if official is None or _STACKED_FUSION.match(name):
            raise CheckpointError(f"{name!r} has no official name: only the released configuration exports.")
        renamed[official] = tensor
    return renamed


def has_official_names(model: nn.Module) -> bool:
    """True when every weight of ``model`` has an official name (the released configuration)."""
    return not any(_STACKED_FUSION.match(name) for name in model.state_dict())


def official_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """``model``'s weights under the official checkpoint's names."""
    return to_official(model.state_dict())
