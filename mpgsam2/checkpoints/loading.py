"""Loading: strict copies into a model, the configuration read from a checkpoint's shapes, and
:func:`load_model`, which builds MPG-SAM 2 for a checkpoint without ever holding two copies of its weights.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Callable

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from ..devices import pick_device
from ..modeling.config import (
    HIERA_PRESETS,
    AggregatorConfig,
    BEiT3Config,
    HieraConfig,
    MaskPriorConfig,
    MPGSAM2Config,
    SAM2Config,
)
from ..modeling.model import MPGSAM2, build_model
from .errors import CheckpointError
from .files import read_config_hints, read_weights, weights_file
from .hub import resolve_source
from .official_names import from_official

logger = logging.getLogger(__name__)


def check_state_dict(model: nn.Module, state: dict[str, torch.Tensor], strict: bool = True) -> None:
    """Raise :class:`CheckpointError` naming every missing, unexpected, mis-shaped or integer entry of
    ``state`` (our names) for ``model``; missing and unexpected ones only when ``strict``."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = [
        f"{name}: checkpoint {tuple(state[name].shape)} vs model {tuple(expected[name].shape)}"
        for name in expected
        if name in state and state[name].shape != expected[name].shape
    ]
    not_float = [
        f"{name}: {state[name].dtype}"
        for name in expected
        if name in state and expected[name].is_floating_point() and not state[name].is_floating_point()
    ]
    problems = []
    if mismatched:
        problems.append(_listing("shape conflicts", mismatched))
    if not_float:
        problems.append(_listing("non-floating-point tensors where weights are expected", not_float))
    if strict and missing:
        problems.append(_listing("missing keys", missing))
    if strict and unexpected:
        problems.append(_listing("unexpected keys", unexpected))
    if problems:
        raise CheckpointError("The checkpoint does not match MPG-SAM 2:\n" + "\n".join(problems))


def load_state_dict_strict(model: nn.Module, state: dict[str, torch.Tensor], strict: bool = True) -> None:
    """Copy ``state`` (our names) into ``model``'s tensors, in their dtype (see :func:`check_state_dict`)."""
    check_state_dict(model, state, strict)
    with torch.no_grad():
        for name, target in model.state_dict().items():
            if name in state:
                target.copy_(state[name].to(dtype=target.dtype))


def load_official_state_dict(model: MPGSAM2, state: dict[str, torch.Tensor], strict: bool = True) -> None:
    """Load a state dict with the official names (``visual_model.*``, ``mm_extractor.*``...) into ``model``."""
    load_state_dict_strict(model, from_official(state), strict=strict)


def _listing(title: str, items: list[str], limit: int = 12) -> str:
    shown = "\n".join(f"  - {item}" for item in items[:limit])
    more = f"\n  ... and {len(items) - limit} more" if len(items) > limit else ""
    return f"{len(items)} {title}:\n{shown}{more}"


def config_from_state_dict(state: dict[str, torch.Tensor], hints: dict | None = None) -> MPGSAM2Config:
    """Every checkpoint-fixed width of an official-named (or our-named) state dict.

    BEiT-3's width, depth, FFN, vocabulary and patch grid, the prior generator's width and FFN, the stacked
    fusion layers, SAM 2's widths (memory, memory attention, mask decoder) and the Hiera stages are read from
    tensor shapes. What shapes do not fix (head counts, switches that no weight records, SAM 2's image size,
    Hiera's windows) comes from ``hints`` (the ``mpgsam2`` section of a saved ``config.json``), a Hiera
    preset, or the standard BEiT-3 sizes.
    """
    state = from_official(state)
    hints = hints or {}

    def shape(name: str) -> tuple[int, ...]:
        if name not in state:
            raise CheckpointError(f"The checkpoint has no {name!r}; it is not an MPG-SAM 2 checkpoint.")
        return tuple(state[name].shape)

    def count(pattern: str) -> int:
        regex = re.compile(pattern)
        return len({m.group(1) for name in state if (m := regex.match(name))})

    width, vocab = shape("multimodal_encoder.text_embed.weight")[::-1]
    standard_heads = {1024: 16, 768: 12}
    beit3_hints = hints.get("beit3", {})
    patch_size = shape("multimodal_encoder.vision_embed.proj.weight")[-1]
    beit3 = BEiT3Config(
        **{
            **beit3_hints,
            "embed_dim": width,
            "depth": count(r"multimodal_encoder\.encoder\.layers\.(\d+)\."),
            "num_heads": beit3_hints.get("num_heads", standard_heads.get(width, max(1, width // 64))),
            "ffn_dim": shape("multimodal_encoder.encoder.layers.0.ffn.A.fc1.weight")[0],
            "image_size": _beit3_grid(shape, beit3_hints.get("position_offset", 2)) * patch_size,
            "patch_size": patch_size,
            "vocab_size": vocab,
            "max_text_positions": shape("multimodal_encoder.encoder.embed_positions.B.weight")[0],
        }
    )
    prior_hints = hints.get("mask_prior", {})
    mask_prior = MaskPriorConfig(
        width=shape("mask_prior.channel_modulation.weight")[0],
        num_heads=prior_hints.get("num_heads", 8),
        ffn_dim=shape("mask_prior.visual_interaction.linear1.weight")[0],
        dense_prompt=prior_hints.get("dense_prompt", True),
    )
    pixel_layers = count(r"aggregator\.pixel_global\.(\d+)\.")
    object_layers = max(
        count(r"aggregator\.object_global\.(\d+)\."), count(r"aggregator\.object_local\.(\d+)\.")
    )
    aggregator = AggregatorConfig(
        **{
            **hints.get("aggregator", {}),
            "pixel_global": pixel_layers > 0,
            "object_global": count(r"aggregator\.object_global\.(\d+)\.") > 0,
            "object_local": count(r"aggregator\.object_local\.(\d+)\.") > 0,
            "num_pixel_layers": max(1, pixel_layers),
            "num_object_layers": max(1, object_layers),
        }
    )
    sam2 = _sam2_config(state, shape, count, hints.get("sam2", {}))
    name = hints.get("name") or {1024: "large", 768: "base"}.get(width, "custom")
    preprocess = MPGSAM2Config.from_dict({"preprocess": hints.get("preprocess", {})}).preprocess
    return MPGSAM2Config(
        name=name, beit3=beit3, mask_prior=mask_prior, aggregator=aggregator, sam2=sam2, preprocess=preprocess
    )


def _beit3_grid(shape: Callable[[str], tuple[int, ...]], position_offset: int) -> int:
    """Patches per side of BEiT-3's image: the vision position table has a row per patch, one for the class
    token and ``position_offset`` unused ones in front (fairseq's numbering)."""
    rows = shape("multimodal_encoder.encoder.embed_positions.A.weight")[0]
    grid = math.isqrt(max(rows - 1 - position_offset, 0))
    if grid * grid != rows - 1 - position_offset:
        raise CheckpointError(f"BEiT-3's vision position table has {rows} rows: no square grid of patches.")
    return grid


def _hiera_config(
    state: dict[str, torch.Tensor], shape: Callable[[str], tuple[int, ...]], hinted: dict | None
) -> HieraConfig:
    """SAM 2's Hiera trunk: its width, stages and background position size are read from the shapes; the
    head count, global blocks and windows (which no shape fixes) come from the saved configuration or the
    preset that agrees with the shapes."""
    _, width, *background = shape("sam2.image_encoder.trunk.pos_embed")  # (1, C, h, w)
    block = re.compile(r"sam2\.image_encoder\.trunk\.blocks\.(\d+)\.")
    blocks = len({m.group(1) for name in state if (m := block.match(name))})
    # A stage's first block changes the width, so it alone has a projection (the first stage's has none).
    projection = re.compile(r"sam2\.image_encoder\.trunk\.blocks\.(\d+)\.proj\.")
    starts = sorted({0} | {int(m.group(1)) for name in state if (m := projection.match(name))})
    stages = tuple(end - start for start, end in zip(starts, [*starts[1:], blocks]))
    candidates = list(HIERA_PRESETS.values())
    if hinted:
        candidates.insert(
            0, HieraConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in hinted.items()})
        )
    for hiera in candidates:
        if (hiera.embed_dim, hiera.stages, hiera.window_pos_embed_bkg_spatial_size) == (
            width,
            stages,
            tuple(background),
        ):
            return hiera
    raise CheckpointError(
        f"Unknown Hiera trunk: width {width}, stages {stages}; keep its config.json next to the weights."
    )


def _sam2_config(state, shape, count, hints: dict) -> SAM2Config:
    """SAM 2's configuration: the Hiera trunk (see :func:`_hiera_config`) and every width from the shapes;
    the image size and the decoder's head count (which no shape fixes) from the saved configuration."""
    hiera = _hiera_config(state, shape, hints.get("hiera"))
    fixed = {k: v for k, v in hints.items() if k != "hiera"}
    fixed["hidden_dim"] = shape("sam2.no_mem_embed")[-1]
    fixed["memory_dim"] = shape("sam2.maskmem_tpos_enc")[-1]
    fixed["num_maskmem"] = shape("sam2.maskmem_tpos_enc")[0]
    fixed["memory_attention_layers"] = count(r"sam2\.memory_attention\.layers\.(\d+)\.")
    fixed["memory_attention_ffn_dim"] = shape("sam2.memory_attention.layers.0.linear1.weight")[0]
    fixed["decoder_mlp_dim"] = shape("sam2.sam_mask_decoder.transformer.layers.0.mlp.layers.0.weight")[0]
    fixed["iou_head_hidden_dim"] = shape("sam2.sam_mask_decoder.iou_prediction_head.layers.0.weight")[0]
    return SAM2Config(hiera=hiera, **fixed)


class _SchedulesOnTheCPU(TorchFunctionMode):
    """Inside a meta-device build, ``torch.linspace`` makes real CPU tensors: Hiera reads its stochastic-depth
    rates back with ``.item()`` while it builds, which a meta tensor cannot answer."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func is torch.linspace and kwargs.get("device") is None:
            kwargs["device"] = "cpu"
        return func(*args, **kwargs)


def build_for_checkpoint(config: MPGSAM2Config) -> MPGSAM2:
    """MPG-SAM 2 of ``config`` with no memory behind its weights (the meta device), for
    :func:`assign_state_dict` to fill with a checkpoint's tensors."""
    with torch.device("meta"), _SchedulesOnTheCPU():
        return build_model(config)


def assign_state_dict(model: MPGSAM2, state: dict[str, torch.Tensor], dtype: torch.dtype) -> MPGSAM2:
    """Make ``state``'s tensors (our names) the weights of ``model`` built by :func:`build_for_checkpoint`.

    Tensors already of ``dtype`` become the weights as they are (memory-mapped ones stay mapped), so loading
    holds one copy of the weights at most. The tables that sam2 computes when it builds (RoPE frequencies,
    not weights) are computed again off the meta device.
    """
    check_state_dict(model, state, strict=True)
    state = {name: tensor if tensor.dtype == dtype else tensor.to(dtype) for name, tensor in state.items()}
    model.load_state_dict(state, strict=True, assign=True)
    for module in model.modules():
        table = getattr(module, "freqs_cis", None)
        if isinstance(table, torch.Tensor) and table.is_meta:
            side = math.isqrt(table.shape[0])
            module.freqs_cis = module.compute_cis(end_x=side, end_y=side)
    return model


def load_model(
    source: str | os.PathLike = "ytvos",
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> MPGSAM2:
    """MPG-SAM 2 with its configuration read from a checkpoint, loaded strictly.

    Args:
        source: a released variant (``"ytvos"``, ``"mevis"``, ``"tiny"``), a hub id
            (``"ReeF2025/MPG-SAM2:ytvos"``), a local Hugging Face-format folder, a training run's folder, or
            a single weights file.
        device: defaults to the best available (cuda, mps, cpu).
        dtype: weights' dtype (fp32 by default; use autocast for mixed precision instead).
    """
    path = resolve_source(source)
    weights = weights_file(path)
    logger.info("Loading MPG-SAM 2 weights from %s", weights)
    state = read_weights(weights)
    config = config_from_state_dict(state, read_config_hints(path))
    model = assign_state_dict(build_for_checkpoint(config), from_official(state), dtype or torch.float32)
    return model.to(device=pick_device(device)).eval()
