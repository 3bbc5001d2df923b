"""Training and evaluation of MPG-SAM 2: the official recipe on one GPU, several (``torchrun``), or a CPU.

``python -m mpgsam2 train CONFIG`` (see :func:`add_train_parser`) reads a JSON configuration
(:class:`TrainConfig`, examples in ``configs/``) and runs :func:`train`. The pieces, usable on their own:

* :func:`video_forward` - the official training forward of one clip: BEiT-3 and the mask prior generator over
  all frames, then SAM 2's tracking loop frame by frame with gradients through the whole loop (memories
  stored in bfloat16, as in the official code), the Hiera image encoder frozen; logits at SAM 2's square
  resolution (low-resolution logits bilinearly upsampled, as the official ``pred_masks``).
* :func:`image_forward` - the official single-image path of RefCOCO pre-training (no memory, the single-mask
  output token, no object-score gating, no historical fusion, no "no point" prompt tokens).
* :class:`TrainingForward` - an ``nn.Module`` computing the official losses of a batch of clips
  (:mod:`mpgsam2.losses`), so that ``DistributedDataParallel`` can wrap it.
* :func:`prepare_for_training` - frozen image encoder, train mode, the official dropout (0.1 in the fusion
  layers, the prior generator's joint attention layer and SAM 2's memory attention), optional gradient
  checkpointing.
* :func:`build_optimizer` - AdamW, weight decay 5e-4, the two official learning-rate groups.
* :func:`evaluate_model` - segments an annotated split and writes J, F and J&F per video and overall.

Several processes use ``torch.distributed`` with ``DistributedDataParallel`` (NCCL on GPUs, gloo on CPUs);
``torchrun`` provides the environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``...).
"""

from __future__ import annotations

import argparse
import copy
import csv
import dataclasses
import json
import logging
import math
import os
import random
import re
import shutil
import sys
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint
from torch.utils.data import DataLoader, DistributedSampler

from .checkpoint import (
    CheckpointError,
    config_from_state_dict,
    from_official,
    load_state_dict_strict,
    read_weights,
    resolve_source,
    save_pretrained,
)
from .config import PRESETS, MPGSAM2Config, get_config
from .data import ClipTransform, DatasetSpec, TrainingClip, build_eval_set, build_training_set, collate_clips
from .devices import autocast, parse_dtype, pick_device
from .losses import OFFICIAL_WEIGHTS, LossWeights, clip_losses, count_visible_frames
from .model import MPGSAM2, build_model
from .sam2_adapter import FrameFeatures
from .tokenizer import SPM_NAMES, ExpressionTokenizer, load_tokenizer

logger = logging.getLogger(__name__)

TEST_TOKENIZER = Path(__file__).parent / "assets" / "test_tokenizer.model"
TOKENIZER_FILE = "sentencepiece.bpe.model"
STATE_FILE = "training_state.pt"
LAST_CHECKPOINT_FILE = "last_checkpoint.txt"

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
#: The only frozen part of the official training: SAM 2's Hiera trunk and FPN neck.
FROZEN_PREFIX = "sam2.image_encoder."
OFFICIAL_DROPOUT = 0.1


# ------------------------------------------------------------------------------------------------------------
# Preparing a model for training


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
    model: MPGSAM2, dropout: float = OFFICIAL_DROPOUT, gradient_checkpointing: bool = False
) -> MPGSAM2:
    """Official training state: image encoder frozen (and in eval mode), the rest in train mode, dropout."""
    freeze_image_encoder(model)
    model.train()
    model.sam2.image_encoder.eval()
    set_dropout(model, dropout)
    if gradient_checkpointing:
        enable_gradient_checkpointing(model)
    return model


# ------------------------------------------------------------------------------------------------------------
# The training forward


@dataclass(frozen=True)
class ClipOutput:
    """The official training outputs of one clip (T frames, S = SAM 2's input size)."""

    logits: torch.Tensor  # (T, 1, S, S) mask logits (the official pred_masks)
    sentence_scores: torch.Tensor  # (T,) the official sen_feat scalar per frame
    priors: torch.Tensor  # (T, g, g) prior-mask probabilities
    object_scores: torch.Tensor  # (T,) object-score logits


def encode_frames_trainable(model: MPGSAM2, images: torch.Tensor) -> list[FrameFeatures]:
    """SAM 2's image features of T frames with the encoder frozen but ``conv_s0``/``conv_s1`` trainable.

    Args:
        images: (T, 3, S, S) normalised SAM 2 inputs.
    Returns:
        One :class:`FrameFeatures` (batch 1) per frame.
    """
    sam = model.sam2
    with torch.no_grad():
        backbone = sam.image_encoder(images)
    levels = list(backbone["backbone_fpn"])
    levels[0] = sam.sam_mask_decoder.conv_s0(levels[0])
    levels[1] = sam.sam_mask_decoder.conv_s1(levels[1])
    _, feats, pos, sizes = sam._prepare_backbone_features({**backbone, "backbone_fpn": levels})
    frames = []
    for t in range(images.shape[0]):
        frame_feats = [x[:, t : t + 1] for x in feats]
        frame_pos = [x[:, t : t + 1] for x in pos]
        high_res = [
            x.permute(1, 2, 0).reshape(1, x.size(2), *s) for x, s in zip(frame_feats[:-1], sizes[:-1])
        ]
        frames.append(FrameFeatures(frame_feats, frame_pos, sizes, high_res))
    return frames


def _square_logits(model: MPGSAM2, low_res: torch.Tensor) -> torch.Tensor:
    size = model.config.sam2.image_size
    return F.interpolate(low_res.float(), size=(size, size), mode="bilinear", align_corners=False)


def video_forward(model: MPGSAM2, clip: TrainingClip, checkpoint_frames: bool = False) -> ClipOutput:
    """The official training forward of one clip through SAM 2's tracking loop.

    Frame 0 is the conditioning frame; every frame gets its dense (prior) and sparse (class token) prompts;
    the memory of each frame is encoded and stored (bfloat16) with its gradient, so the loss of a later
    frame reaches the earlier frames' predictions.

    Args:
        clip: on the model's device; ``sam_images`` (T, 3, S, S), ``beit_images`` (T, 3, 224, 224).
        checkpoint_frames: recompute each frame's tracking step in the backward pass (saves memory).
    """
    context, _ = model.encode_clip(clip.beit_images, clip.input_ids, clip.text_padding)
    merged = model.merge_mask_embeddings(context)
    output_dict: dict = {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}
    low_res, object_scores = [], []
    for t, features in enumerate(encode_frames_trainable(model, clip.sam_images)):
        if checkpoint_frames and torch.is_grad_enabled():
            # A snapshot of the bank: the recomputation must see the same (past) memories.
            snapshot = {part: dict(entries) for part, entries in output_dict.items()}
            output = checkpoint(
                model.track_frame, features, context, merged, snapshot, t, use_reentrant=False
            )
        else:
            output = model.track_frame(features, context, merged, output_dict, t)
        output_dict["cond_frame_outputs" if t == 0 else "non_cond_frame_outputs"][t] = output.memory
        low_res.append(output.low_res_logits)
        object_scores.append(output.decoder.object_score_logits.reshape(1))
    return ClipOutput(
        logits=_square_logits(model, torch.cat(low_res)),
        sentence_scores=model.mask_prior.sentence_scores(context.text_features),
        priors=context.priors,
        object_scores=torch.cat(object_scores),
    )


def decode_all_masks(
    decoder: nn.Module,
    image_embedding: torch.Tensor,
    image_pe: torch.Tensor,
    sparse: torch.Tensor,
    dense: torch.Tensor,
    high_res: list[torch.Tensor],
    fuse_mask_tokens: Callable[[torch.Tensor], torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """SAM 2's mask decoder with all four mask tokens, the single-mask token 0 included.

    The same computation as :func:`mpgsam2.sam2_adapter.decode_masks` (which keeps only the multimask
    tokens 1-3 that tracking uses); the official pre-training path needs token 0.

    Args:
        image_embedding: (1, C, h, w) after pixel-level fusion; image_pe: (1, C, h, w).
        sparse: (1, N, C); dense: (1, C, h, w); high_res: SAM 2's two high-resolution maps.
        fuse_mask_tokens: (1, 4, C) -> (1, 4, C), the object-level fusions.
    Returns:
        masks (1, 4, 4h, 4w), IoU predictions (1, 4), mask tokens (1, 4, C), object-score logits (1, 1).
    """
    mask_tokens = fuse_mask_tokens(decoder.mask_tokens.weight.unsqueeze(0))
    head_tokens = torch.cat([decoder.obj_score_token.weight, decoder.iou_token.weight]).unsqueeze(0)
    tokens = torch.cat([head_tokens, mask_tokens, sparse.to(mask_tokens.dtype)], dim=1)
    src = image_embedding + dense
    batch, channels, height, width = src.shape
    hidden, src = decoder.transformer(src, image_pe, tokens)
    iou_token, tokens_out = hidden[:, 1], hidden[:, 2 : 2 + decoder.num_mask_tokens]
    src = src.transpose(1, 2).reshape(batch, channels, height, width)
    upscale1, norm1, act1, upscale2, act2 = decoder.output_upscaling
    feat_s0, feat_s1 = high_res
    upscaled = act2(upscale2(act1(norm1(upscale1(src) + feat_s1))) + feat_s0)
    hyper = torch.stack([mlp(tokens_out[:, i]) for i, mlp in enumerate(decoder.output_hypernetworks_mlps)], 1)
    _, up_channels, up_h, up_w = upscaled.shape
    masks = (hyper @ upscaled.reshape(batch, up_channels, up_h * up_w)).reshape(batch, -1, up_h, up_w)
    return (
        masks,
        decoder.iou_prediction_head(iou_token),
        tokens_out,
        decoder.pred_obj_score_head(hidden[:, 0]),
    )


def image_forward(model: MPGSAM2, clip: TrainingClip) -> ClipOutput:
    """The official single-image training path (RefCOCO pre-training, one frame).

    As the official ``EvfSamModel.forward`` with a batch of several images: the image embedding plus
    ``no_mem_embed`` (no memory attention), prompts = the class-token prompt alone (no "no point" tokens)
    and the prior, pixel-level and object-level global fusion (no historical fusion), the decoder's
    single-mask token 0, no object-score gating.
    """
    if clip.num_frames != 1:
        raise ValueError(f"The image path takes one frame; {clip.source} has {clip.num_frames}.")
    context, _ = model.encode_clip(clip.beit_images, clip.input_ids, clip.text_padding)
    merged = model.merge_mask_embeddings(context)
    (features,) = encode_frames_trainable(model, clip.sam_images)
    sam, aggregator = model.sam2, model.aggregator
    height, width = features.feat_sizes[-1]
    top = features.vision_feats[-1] + sam.no_mem_embed  # (HW, 1, C)
    pixel = top.permute(1, 2, 0).reshape(1, -1, height, width)
    prompt_encoder = sam.sam_prompt_encoder
    prior_prompt = None
    if model.config.mask_prior.dense_prompt:
        prior_prompt = F.interpolate(
            context.priors[0][None, None].float(),
            size=prompt_encoder.mask_input_size,
            mode="bilinear",
            align_corners=False,
            antialias=True,
        )
    sparse, dense = prompt_encoder(points=None, boxes=None, masks=prior_prompt)
    sparse = torch.cat([sparse, context.sparse_prompts[0][None, None].to(sparse.dtype)], dim=1)
    image_pe = prompt_encoder.get_dense_pe()
    fused = aggregator.fuse_pixels(pixel, image_pe, merged, context.text_features[0])
    all_embeddings = context.mask_embeddings.flatten(0, 1)
    masks, _, _, object_score = decode_all_masks(
        sam.sam_mask_decoder,
        fused,
        image_pe,
        sparse,
        dense,
        features.high_res,
        lambda tokens: aggregator.fuse_mask_tokens(tokens, all_embeddings, None),
    )
    return ClipOutput(
        logits=_square_logits(model, masks[:, :1]),
        sentence_scores=model.mask_prior.sentence_scores(context.text_features),
        priors=context.priors,
        object_scores=object_score.reshape(1),
    )


def clip_forward(model: MPGSAM2, clip: TrainingClip, checkpoint_frames: bool = False) -> ClipOutput:
    """:func:`video_forward` for video clips, :func:`image_forward` for RefCOCO images."""
    if clip.kind == "image":
        return image_forward(model, clip)
    return video_forward(model, clip, checkpoint_frames)


class TrainingForward(nn.Module):
    """Losses of a batch of clips; the module that ``DistributedDataParallel`` wraps.

    Args:
        model: the network (prepared with :func:`prepare_for_training`).
        weights: the loss weights (official 2 / 5 / 2).
        precision: ``None``/``"fp32"``, or ``"bf16"``/``"fp16"`` autocast for the forward (losses in fp32).
        checkpoint_frames: recompute each tracked frame in the backward pass.
    """

    def __init__(
        self,
        model: MPGSAM2,
        weights: LossWeights = OFFICIAL_WEIGHTS,
        precision: str | torch.dtype | None = None,
        checkpoint_frames: bool = False,
    ):
        super().__init__()
        self.model = model
        self.weights = weights
        self.precision = parse_dtype(precision)
        self.checkpoint_frames = checkpoint_frames

    def forward(self, clips: Sequence[TrainingClip], num_boxes: float) -> dict[str, torch.Tensor]:
        """clips: on the model's device. Returns the losses (see :func:`mpgsam2.losses.clip_losses`)."""
        with autocast(self.model.device, self.precision):
            outputs = [clip_forward(self.model, clip, self.checkpoint_frames) for clip in clips]
        return clip_losses(
            [o.logits[:, 0] for o in outputs],
            [c.masks for c in clips],
            [o.sentence_scores for o in outputs],
            num_boxes,
            self.weights,
        )


def forward_backward(
    module: nn.Module, clips: Sequence[TrainingClip], device: torch.device | str
) -> dict[str, torch.Tensor]:
    """One forward and backward pass of a batch (gradients accumulate in the parameters' ``.grad``).

    ``module`` is a :class:`TrainingForward`, or ``DistributedDataParallel`` around one: then ``num_boxes``
    is averaged over the processes and the gradients are averaged by DDP, which together equal one process
    running the whole global batch. Returns the detached losses of this process's batch.
    """
    clips = [c.to(device) for c in clips]
    num_boxes = count_visible_frames([c.visible for c in clips])
    losses = module(clips, num_boxes)
    if not torch.isfinite(losses["loss"]):
        sources = ", ".join(c.source for c in clips)
        raise FloatingPointError(f"Non-finite loss {losses['loss'].item()} on {sources}; stopping.")
    losses["loss"].backward()
    return {name: value.detach() for name, value in losses.items()}


# ------------------------------------------------------------------------------------------------------------
# Optimiser


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


# ------------------------------------------------------------------------------------------------------------
# Configuration


def _check_keys(section: str, data: dict, allowed: Sequence[str]) -> None:
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise ValueError(f"Unknown option(s) {unknown} in '{section}'; allowed: {sorted(allowed)}.")


@dataclass(frozen=True)
class ModelSpec:
    """Where the weights to train come from, and the ablation switches.

    ``init``: a preset (``large``, ``base``, ``test``: random weights, or SAM 2 / BEiT-3 checkpoints below)
    or a trained model (a variant ``ytvos``/``mevis``/``tiny``, a hub id, a checkpoint folder or file).
    ``aggregator`` / ``mask_prior``: fields of :class:`mpgsam2.config.AggregatorConfig` /
    :class:`mpgsam2.config.MaskPriorConfig` to change (e.g. ``{"object_local": false}``,
    ``{"num_pixel_layers": 2}``, ``{"dense_prompt": false}``); layers a checkpoint lacks start random.
    """

    init: str = "large"
    seed: int | None = None  # presets: None = PyTorch's initialisation, an int = mpgsam2.random_init
    sam2_checkpoint: str | None = None  # e.g. sam2_hiera_large.pt (SAM 2.0), for presets
    beit3_checkpoint: str | None = None  # e.g. beit3_large_patch16_224.pth, for presets
    tokenizer: str | None = None  # beit3.spm or a folder; default: the init checkpoint's
    aggregator: dict = field(default_factory=dict)
    mask_prior: dict = field(default_factory=dict)


@dataclass(frozen=True)
class OptimSpec:
    lr: float = 2e-6
    lr_fast: float = 5e-5
    weight_decay: float = 5e-4
    # The official scripts pass 0.1, but under DeepSpeed ZeRO-2 the clipping sees no gradients; 0 = off.
    clip_max_norm: float = 0.0


@dataclass(frozen=True)
class ScheduleSpec:
    epochs: int = 6
    max_steps: int | None = None  # stop after this many optimiser steps (overrides epochs when reached)
    batch_size: int = 1  # clips per process and step (official: 1 for videos, 8 for RefCOCO)
    num_workers: int = 4
    precision: str = "fp32"  # or "bf16" (autocast; fp32 master weights)
    gradient_checkpointing: bool = False
    dropout: float = OFFICIAL_DROPOUT
    augment: bool = True
    seed: int = 42
    save_every_steps: int | None = None  # also save every N steps (always at each epoch's end)
    keep_checkpoints: int = 2  # older step checkpoints are deleted (0 keeps all)
    log_every: int = 10
    device: str | None = None  # default: cuda:LOCAL_RANK, else the best available
    find_unused_parameters: bool = True  # DDP: parts unused on some steps (e.g. 1-frame clips)


@dataclass(frozen=True)
class TrainConfig:
    """Everything a run needs; :func:`load_config` reads it from JSON (or YAML when PyYAML is present)."""

    output_dir: str
    model: ModelSpec = field(default_factory=ModelSpec)
    train_data: tuple[DatasetSpec, ...] = ()
    eval_data: DatasetSpec | None = None
    optim: OptimSpec = field(default_factory=OptimSpec)
    loss: LossWeights = field(default_factory=LossWeights)
    schedule: ScheduleSpec = field(default_factory=ScheduleSpec)
    raw: dict = field(default_factory=dict, compare=False)  # the merged configuration, saved with checkpoints

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        """Parse the JSON layout (sections ``model``, ``data``, ``optim``, ``loss``, ``train``)."""
        _check_keys("top level", data, ["output_dir", "model", "data", "optim", "loss", "train", "extends"])
        if "output_dir" not in data:
            raise ValueError("The configuration needs an 'output_dir'.")
        sections = {"model": ModelSpec, "optim": OptimSpec, "loss": LossWeights, "train": ScheduleSpec}
        parsed = {}
        for key, kind in sections.items():
            values = dict(data.get(key) or {})
            _check_keys(key, values, [f.name for f in dataclasses.fields(kind)])
            parsed[key] = kind(**values)
        data_section = dict(data.get("data") or {})
        _check_keys("data", data_section, ["train", "eval"])
        output_dir = str(data["output_dir"])

        def dataset(entry: dict) -> DatasetSpec:
            # "{output_dir}" in a root places (synthetic) data inside the run.
            return DatasetSpec.from_dict(
                {**entry, "root": str(entry.get("root", "")).replace("{output_dir}", output_dir)}
            )

        train_specs = tuple(dataset(d) for d in data_section.get("train") or [])
        eval_spec = dataset(data_section["eval"]) if data_section.get("eval") else None
        schedule = parsed["train"]
        parse_dtype(schedule.precision)
        if schedule.batch_size < 1 or schedule.epochs < 0:
            raise ValueError("train.batch_size must be at least 1 and train.epochs at least 0.")
        return cls(
            output_dir=output_dir,
            model=parsed["model"],
            train_data=train_specs,
            eval_data=eval_spec,
            optim=parsed["optim"],
            loss=parsed["loss"],
            schedule=schedule,
            raw=copy.deepcopy({k: v for k, v in data.items() if k != "extends"}),
        )


def _deep_merge(base: dict, update: dict) -> dict:
    merged = dict(base)
    for key, value in update.items():
        merged[key] = (
            _deep_merge(merged[key], value)
            if isinstance(value, dict) and isinstance(merged.get(key), dict)
            else value
        )
    return merged


def _read_config_file(path: Path) -> dict:
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError as error:
            raise ValueError(
                f"{path} is YAML but PyYAML is not installed; use a JSON configuration."
            ) from error
        data = yaml.safe_load(text)
    else:
        data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold an object (a mapping of sections).")
    if "extends" in data:
        parent = (path.parent / data["extends"]).resolve()
        data = _deep_merge(_read_config_file(parent), {k: v for k, v in data.items() if k != "extends"})
    return data


def apply_overrides(data: dict, overrides: Sequence[str]) -> dict:
    """``["train.max_steps=10", "model.aggregator.object_local=false", "data.train.0.num_frames=3"]`` ->
    a changed copy of ``data`` (a number selects a list item).

    Values are parsed as JSON when they can be (numbers, booleans, null, lists, objects), else kept as text.
    """
    data = copy.deepcopy(data)
    for override in overrides:
        key, sep, text = override.partition("=")
        if not sep or not key:
            raise ValueError(f"Override {override!r} must look like section.key=value.")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        target = data
        *parents, leaf = key.split(".")
        for part in [*parents, leaf]:
            if isinstance(target, list):
                if not part.isdigit() or int(part) >= len(target):
                    raise ValueError(f"Override {override!r}: no item {part!r} in a list of {len(target)}.")
                index: int | str = int(part)
            elif isinstance(target, dict):
                index = part
            else:
                raise ValueError(f"Override {override!r}: {part!r} is below a value, not a section.")
            if part is leaf:
                target[index] = value
            else:
                if isinstance(target, dict) and not isinstance(target.get(index), dict | list):
                    target[index] = {}
                target = target[index]
    return data


def load_config(path: str | os.PathLike, overrides: Sequence[str] = ()) -> TrainConfig:
    """Read a training configuration (JSON, or YAML with PyYAML; ``"extends"`` merges a parent file)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No configuration file at {path}.")
    return TrainConfig.from_dict(apply_overrides(_read_config_file(path), overrides))


# ------------------------------------------------------------------------------------------------------------
# Models: building, loading and saving


def _with_switches(config: MPGSAM2Config, spec: ModelSpec) -> MPGSAM2Config:
    try:
        aggregator = dataclasses.replace(config.aggregator, **spec.aggregator)
        mask_prior = dataclasses.replace(config.mask_prior, **spec.mask_prior)
    except TypeError as error:
        raise ValueError(f"Unknown model switch: {error}") from None
    for name in ("num_pixel_layers", "num_object_layers"):
        if getattr(aggregator, name) < 1:
            raise ValueError(f"model.aggregator.{name} must be at least 1 (switch the fusion off instead).")
    return config.replace(aggregator=aggregator, mask_prior=mask_prior)


def _checkpoint_hints(path: Path) -> dict:
    config_file = (path if path.is_dir() else path.parent) / "config.json"
    return json.loads(config_file.read_text()).get("mpgsam2", {}) if config_file.is_file() else {}


def _config_for_checkpoint(state: dict, hints: dict) -> MPGSAM2Config:
    config = config_from_state_dict(state, hints)
    # The weights do not show whether the prior was used as a dense prompt; the saved config does.
    dense = hints.get("mask_prior", {}).get("dense_prompt", True)
    return config.replace(mask_prior=dataclasses.replace(config.mask_prior, dense_prompt=dense))


def _weights_path(path: Path) -> Path:
    if path.is_file():
        return path
    for name in ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin"):
        if (path / name).is_file():
            return path / name
    raise CheckpointError(f"No weights in {path}.")


def resolve_model_source(source: str | os.PathLike) -> Path:
    """A local model path: a training run's folder means its last checkpoint; else as :func:`mpgsam2.load_model`."""
    path = Path(source).expanduser()
    if path.is_dir() and (path / LAST_CHECKPOINT_FILE).is_file():
        last = last_checkpoint(path)
        if last is None:
            raise CheckpointError(f"{path} names a checkpoint that is missing or incomplete.")
        return last
    return resolve_source(source)


def load_trained_model(source: str | os.PathLike, device: str | torch.device | None = None) -> MPGSAM2:
    """A model saved by training (any switches), a training run's folder (its last checkpoint), or any
    source :func:`mpgsam2.load_model` accepts."""
    path = resolve_model_source(source)
    state = read_weights(_weights_path(path))
    model = MPGSAM2(_config_for_checkpoint(state, _checkpoint_hints(path)))
    model.load_official_state_dict(state)
    return model.to(pick_device(device)).eval()


def _load_submodule(module: nn.Module, path: str, strip: str, what: str) -> None:
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    state = {k[len(strip) :] if k.startswith(strip) else k: v for k, v in state.items()}
    missing, unexpected = module.load_state_dict(state, strict=False)
    logger.info("%s weights from %s: %d missing, %d unused keys", what, path, len(missing), len(unexpected))
    if missing:
        logger.warning("%s keys left at their initialisation: %s", what, ", ".join(missing[:8]))


def _find_tokenizer_file(source: str | os.PathLike) -> Path:
    path = Path(source)
    if path.is_file():
        return path
    for name in SPM_NAMES:
        if (path / name).is_file():
            return path / name
    found = sorted(path.glob("*.spm")) + sorted(path.glob("*.model"))
    if not found:
        raise FileNotFoundError(f"No sentencepiece tokenizer (beit3.spm) at {path}; set model.tokenizer.")
    return found[0]


def build_training_model(spec: ModelSpec) -> tuple[MPGSAM2, ExpressionTokenizer, Path]:
    """The model to train, its tokenizer and the tokenizer's sentencepiece file (copied into checkpoints)."""
    if spec.init in PRESETS:
        model = build_model(_with_switches(get_config(spec.init), spec), seed=spec.seed)
        if spec.sam2_checkpoint:
            _load_submodule(model.sam2, spec.sam2_checkpoint, "", "SAM 2")
        if spec.beit3_checkpoint:
            _load_submodule(model.multimodal_encoder, spec.beit3_checkpoint, "beit3.", "BEiT-3")
        if spec.tokenizer is None and spec.init != "test":
            raise ValueError("Training a preset from scratch needs model.tokenizer (BEiT-3's beit3.spm).")
        spm = _find_tokenizer_file(spec.tokenizer or TEST_TOKENIZER)
    else:
        path = resolve_model_source(spec.init)
        state = read_weights(_weights_path(path))
        config = _with_switches(_config_for_checkpoint(state, _checkpoint_hints(path)), spec)
        model = MPGSAM2(config)
        ours = from_official(state)
        expected = model.state_dict()
        load_state_dict_strict(model, {k: v for k, v in ours.items() if k in expected}, strict=False)
        missing = sorted(set(expected) - set(ours))
        logger.info("Initialised from %s (%d tensors; %d new, left random)", path, len(ours), len(missing))
        if missing:
            logger.info("New parameters: %s", ", ".join(missing[:8]) + (" ..." if len(missing) > 8 else ""))
        spm = _find_tokenizer_file(spec.tokenizer or (path if path.is_dir() else path.parent))
    return model, load_tokenizer(spm), spm


def save_model(
    model: MPGSAM2, folder: str | os.PathLike, tokenizer_file: str | os.PathLike | None = None
) -> Path:
    """Save in the Hugging Face layout that :func:`mpgsam2.load_model` reads (config.json, model.safetensors).

    The released configuration is saved under the official names; ablation variants with stacked fusion
    layers (which have no official name) under this package's names, which the loader reads too. With
    ``tokenizer_file``, the sentencepiece model is copied next to the weights (``sentencepiece.bpe.model``),
    so that the folder alone is a complete model for :class:`mpgsam2.VideoPredictor`.
    """
    folder = Path(folder)
    try:
        save_pretrained(model, folder)
    except CheckpointError:
        from safetensors.torch import save_file

        folder.mkdir(parents=True, exist_ok=True)
        config = model.config
        meta = {
            "model_type": "evf",
            "hidden_size": config.beit3.embed_dim,
            "out_dim": config.prompt_dim,
            "mm_extractor_scale": {1024: "large", 768: "base"}.get(config.beit3.embed_dim, "custom"),
            "mpgsam2": config.to_dict(),
        }
        (folder / "config.json").write_text(json.dumps(meta, indent=2))
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    if tokenizer_file is not None:
        shutil.copyfile(tokenizer_file, folder / TOKENIZER_FILE)
    return folder


# ------------------------------------------------------------------------------------------------------------
# Distributed set-up


@dataclass(frozen=True)
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str | None = None) -> DistributedContext:
    """Join the process group that ``torchrun`` describes in the environment (a no-op for one process)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device is not None:
        chosen = torch.device(device)
        if chosen.type == "cuda" and chosen.index is None:
            chosen = torch.device("cuda", local_rank)
    elif torch.cuda.is_available():
        chosen = torch.device("cuda", local_rank)
    else:
        chosen = pick_device(None)
    if chosen.type == "cuda":
        torch.cuda.set_device(chosen)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if chosen.type == "cuda" else "gloo")
    return DistributedContext(rank, world_size, local_rank, chosen)


def wrap_distributed(
    module: nn.Module, context: DistributedContext, find_unused_parameters: bool = True
) -> nn.Module:
    """``DistributedDataParallel`` around ``module`` when several processes run; ``module`` otherwise."""
    if not context.enabled:
        return module
    device_ids = [context.device.index] if context.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(
        module, device_ids=device_ids, find_unused_parameters=find_unused_parameters
    )


class ResumableSampler(DistributedSampler):
    """``DistributedSampler`` (also for one process) that can start an epoch part-way, after a resume."""

    def __init__(self, dataset, num_replicas: int, rank: int, seed: int):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self.start = 0

    def __iter__(self) -> Iterator[int]:
        return iter(list(super().__iter__())[self.start :])

    def __len__(self) -> int:
        return max(0, self.num_samples - self.start)


def _barrier(context: DistributedContext) -> None:
    if context.enabled and dist.is_initialized():
        dist.barrier()


def _mean_over_processes(values: dict[str, float], context: DistributedContext) -> dict[str, float]:
    if not context.enabled:
        return values
    names = sorted(values)
    tensor = torch.tensor([values[n] for n in names], dtype=torch.float64, device=context.device)
    dist.all_reduce(tensor)
    return {n: float(v) / context.world_size for n, v in zip(names, tensor.tolist())}


# ------------------------------------------------------------------------------------------------------------
# Checkpoints of a run


def _rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _gather_rng_states(context: DistributedContext) -> list[dict]:
    """Every process's random state (dropout draws differ per process), gathered on all of them."""
    if not context.enabled:
        return [_rng_state()]
    states: list = [None] * context.world_size
    dist.all_gather_object(states, _rng_state())
    return states


def save_checkpoint(
    folder: Path,
    model: MPGSAM2,
    optimizer: torch.optim.Optimizer,
    progress: dict,
    config: TrainConfig,
    tokenizer_file: Path,
    rng_states: list[dict] | None = None,
) -> Path:
    """Model (Hugging Face layout), tokenizer, optimizer state, progress and random states, in one folder.

    ``rng_states``: one per process (rank order); default: this process's.
    """
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    save_model(model, tmp, tokenizer_file)
    state = {"optimizer": optimizer.state_dict(), "progress": progress, "rng": rng_states or [_rng_state()]}
    torch.save(state, tmp / STATE_FILE)
    (tmp / "train_config.json").write_text(json.dumps(config.raw, indent=2))
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    (folder.parent / LAST_CHECKPOINT_FILE).write_text(folder.name + "\n")
    return folder


def last_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    """The run's most recent checkpoint folder, or None."""
    marker = Path(output_dir) / LAST_CHECKPOINT_FILE
    if marker.is_file():
        folder = Path(output_dir) / marker.read_text().strip()
        if (folder / STATE_FILE).is_file():
            return folder
    return None


def _prune_checkpoints(output_dir: Path, keep: int) -> None:
    if keep <= 0:
        return
    steps = sorted(output_dir.glob("checkpoint-*[0-9]"), key=lambda p: int(p.name.rsplit("-", 1)[1]))
    for old in steps[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def _load_progress(
    folder: Path, model: MPGSAM2, optimizer: torch.optim.Optimizer, context: DistributedContext
) -> dict:
    state = read_weights(_weights_path(folder))
    model.load_official_state_dict(state)
    saved = torch.load(folder / STATE_FILE, map_location="cpu", weights_only=False)
    optimizer.load_state_dict(saved["optimizer"])
    states = saved.get("rng") or []
    if len(states) == context.world_size:
        _set_rng_state(states[context.rank])
    else:
        logger.warning(
            "The checkpoint was written by %d process(es), this run has %d: random draws restart.",
            len(states),
            context.world_size,
        )
    return saved["progress"]


# ------------------------------------------------------------------------------------------------------------
# Evaluation


def _natural(name: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def evaluate_model(
    model: MPGSAM2,
    tokenizer: ExpressionTokenizer,
    spec: DatasetSpec,
    out_dir: str | os.PathLike,
    device: str | torch.device | None = None,
    precision: str | None = None,
    write_masks: bool = True,
) -> dict:
    """Segment every expression of an annotated split and score it: J, F and J&F per video and overall.

    Each expression is one object sequence scored over all its video's frames with the DAVIS measures
    (:func:`mpgsam2.metrics.evaluate_sequences`); a video's scores are the means over its expressions and
    the overall scores the means over all expressions (the Ref-YouTube-VOS / MeViS convention). MeViS videos
    run in independent clips of 24 frames unless ``spec.clip_length`` says otherwise, as the official
    inference. Writes ``metrics.json`` and ``metrics.csv`` (one row per video and an ``overall`` row) to
    ``out_dir`` and, with ``write_masks``, the predicted masks in the benchmark's submission layout under
    ``out_dir/predictions`` (the layout ``python -m mpgsam2 infer-dataset`` writes).
    """
    from . import datasets
    from .metrics import evaluate_sequences
    from .predictor import VideoPredictor

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dataset = build_eval_set(spec)
    predictor = VideoPredictor(model, tokenizer, device=device, precision=precision)
    clip_length = spec.clip_length or (24 if spec.format == "mevis" else None)
    videos: dict[str, dict] = {}
    all_j: list[float] = []
    all_f: list[float] = []
    start = time.time()
    for item in dataset.iter_eval_videos():
        frames = item.load_frames()
        exp_ids = sorted(item.expressions, key=_natural)
        texts = [item.expressions[e]["exp"] for e in exp_ids]
        results = predictor.segment(frames, texts, clip_length=clip_length)
        scores: dict[str, dict] = {}
        for exp_id, text, result in zip(exp_ids, texts, results):
            measured = evaluate_sequences(result.masks, item.ground_truth(exp_id))
            scores[exp_id] = {
                "expression": text,
                "J": measured["J"],
                "F": measured["F"],
                "J&F": measured["J&F"],
            }
            all_j.append(measured["J"])
            all_f.append(measured["F"])
        if write_masks:
            listing = datasets.VideoExpressions(
                item.video, item.frame_names, item.frame_dir, item.expressions
            )
            folder = out_dir / "predictions"
            probabilities = {e: 1 / (1 + np.exp(-r.logits)) for e, r in zip(exp_ids, results)}
            if spec.format == "davis":
                datasets.write_davis_annotators(folder, listing, probabilities)
            else:
                for exp_id, result in zip(exp_ids, results):
                    datasets.write_expression_masks(
                        folder, spec.format, listing, exp_id, result.masks, probabilities[exp_id]
                    )
        j = float(np.mean([s["J"] for s in scores.values()]))
        f = float(np.mean([s["F"] for s in scores.values()]))
        videos[item.video] = {"J": j, "F": f, "J&F": (j + f) / 2, "expressions": scores}
        logger.info("%s: J&F %.3f over %d expressions", item.video, (j + f) / 2, len(scores))
    mean_j = float(np.mean(all_j)) if all_j else float("nan")
    mean_f = float(np.mean(all_f)) if all_f else float("nan")
    report = {
        "dataset": {"format": spec.format, "root": spec.root, "split": spec.split},
        "J": mean_j,
        "F": mean_f,
        "J&F": (mean_j + mean_f) / 2,
        "num_videos": len(videos),
        "num_expressions": len(all_j),
        "seconds": round(time.time() - start, 1),
        "videos": videos,
    }
    (out_dir / "metrics.json").write_text(json.dumps(report, indent=2))
    with (out_dir / "metrics.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["video", "expressions", "J", "F", "J&F"])
        for video, row in videos.items():
            writer.writerow(
                [video, len(row["expressions"]), f"{row['J']:.5f}", f"{row['F']:.5f}", f"{row['J&F']:.5f}"]
            )
        writer.writerow(["overall", len(all_j), f"{mean_j:.5f}", f"{mean_f:.5f}", f"{report['J&F']:.5f}"])
    logger.info(
        "Evaluation on %s %s: J&F %.4f (J %.4f, F %.4f)",
        spec.format,
        spec.split,
        report["J&F"],
        mean_j,
        mean_f,
    )
    return report


# ------------------------------------------------------------------------------------------------------------
# The training loop


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # every CUDA device too


def train(config: TrainConfig, resume: str | None = None) -> dict:
    """Run a training configuration in this process (one of several under ``torchrun``).

    Args:
        config: see :class:`TrainConfig`.
        resume: ``"auto"`` (the run's last checkpoint, if any), a checkpoint folder, or None (start afresh).
    Returns:
        A summary: steps done, the last checkpoint, per-step losses of this process, evaluation report.
    """
    schedule = config.schedule
    context = init_distributed(schedule.device)
    if schedule.num_workers > 0:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # the loader's workers tokenise
    if not context.is_main:
        logging.getLogger("mpgsam2").setLevel(logging.WARNING)
    output_dir = Path(config.output_dir)
    if context.is_main:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "train_config.json").write_text(json.dumps(config.raw, indent=2))
    # One seed per process, so that dropout differs between processes; DDP copies rank 0's weights to all.
    _seed_everything(schedule.seed + context.rank)
    try:
        model, tokenizer, tokenizer_file = build_training_model(config.model)
        model = prepare_for_training(
            model.to(context.device), schedule.dropout, schedule.gradient_checkpointing
        )
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        logger.info(
            "Model %s: %.1f M parameters, %.1f M trained; %d process(es) on %s",
            model.config.name,
            sum(p.numel() for p in model.parameters()) / 1e6,
            trainable / 1e6,
            context.world_size,
            context.device,
        )
        optimizer = build_optimizer(model, config.optim.lr, config.optim.lr_fast, config.optim.weight_decay)
        dataset = build_training_set(
            list(config.train_data), ClipTransform(model.config, tokenizer), schedule.augment, schedule.seed
        )
        sampler = ResumableSampler(dataset, context.world_size, context.rank, schedule.seed)
        loader = DataLoader(
            dataset,
            batch_size=schedule.batch_size,
            sampler=sampler,
            num_workers=schedule.num_workers,
            collate_fn=collate_clips,
            pin_memory=context.device.type == "cuda",
            # Its own generator: creating an epoch's iterator must not draw from the global RNG, so that a
            # resumed run continues with the same dropout draws as an uninterrupted one.
            generator=torch.Generator().manual_seed(schedule.seed),
        )
        module = wrap_distributed(
            TrainingForward(model, config.loss, schedule.precision, schedule.gradient_checkpointing),
            context,
            schedule.find_unused_parameters,
        )

        progress = {"step": 0, "epoch": 0, "batch": 0}
        source = last_checkpoint(output_dir) if resume == "auto" else (Path(resume) if resume else None)
        if source is not None:
            progress = _load_progress(source, model, optimizer, context)
            logger.info("Resumed from %s at step %d (epoch %d)", source, progress["step"], progress["epoch"])
        elif resume not in (None, "auto"):
            raise FileNotFoundError(f"No checkpoint to resume at {resume}.")

        history: list[dict[str, float]] = []
        window: list[dict[str, float]] = []
        step, checkpoint_dir = progress["step"], source
        steps_per_epoch = math.ceil(len(sampler) / schedule.batch_size)
        done = schedule.max_steps is not None and step >= schedule.max_steps
        epoch = progress["epoch"]
        while epoch < schedule.epochs and not done:
            sampler.set_epoch(epoch)
            dataset.set_epoch(epoch)
            first_batch = progress["batch"] if epoch == progress["epoch"] else 0
            sampler.start = first_batch * schedule.batch_size
            tick = time.time()
            batch_index = first_batch
            for batch_index, clips in enumerate(loader, start=first_batch):
                optimizer.zero_grad(set_to_none=True)
                losses = forward_backward(module, clips, context.device)
                if config.optim.clip_max_norm > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), config.optim.clip_max_norm)
                optimizer.step()
                step += 1
                values = {name: float(value) for name, value in losses.items()}
                history.append(values)
                window.append(values)
                if step % schedule.log_every == 0 or step == 1:
                    mean = _mean_over_processes(
                        {k: float(np.mean([w[k] for w in window])) for k in window[0]}, context
                    )
                    seconds = (time.time() - tick) / len(window)
                    if context.is_main:
                        logger.info(
                            "epoch %d step %d (%d/%d): loss %.4f (mask %.4f, dice %.4f, sim %.4f), %.2f s/step",
                            epoch, step, batch_index + 1, steps_per_epoch, mean["loss"],
                            mean["loss_mask"], mean["loss_dice"], mean["loss_sim"], seconds,
                        )  # fmt: skip
                        with (output_dir / "log.jsonl").open("a") as log:
                            log.write(
                                json.dumps({"step": step, "epoch": epoch, **mean, "s_per_step": seconds})
                                + "\n"
                            )
                    window, tick = [], time.time()
                done = schedule.max_steps is not None and step >= schedule.max_steps
                periodic = schedule.save_every_steps and step % schedule.save_every_steps == 0
                if periodic or done:
                    position = {"step": step, "epoch": epoch, "batch": batch_index + 1}
                    if batch_index + 1 >= steps_per_epoch:
                        position = {"step": step, "epoch": epoch + 1, "batch": 0}
                    checkpoint_dir = _save(
                        output_dir, model, optimizer, position, config, tokenizer_file, context
                    )
                if done:
                    break
            if not done:
                epoch += 1
                checkpoint_dir = _save(
                    output_dir,
                    model,
                    optimizer,
                    {"step": step, "epoch": epoch, "batch": 0},
                    config,
                    tokenizer_file,
                    context,
                )
        summary = {
            "steps": step,
            "checkpoint": str(checkpoint_dir) if checkpoint_dir else None,
            "history": history,
        }
    finally:
        if context.enabled and dist.is_initialized():
            dist.destroy_process_group()
    if config.eval_data is not None and context.is_main and checkpoint_dir is not None:
        summary["eval"] = evaluate_model(
            model,
            tokenizer,
            config.eval_data,
            Path(checkpoint_dir) / "eval",
            context.device,
            schedule.precision,
        )
    return summary


def _save(
    output_dir: Path,
    model: MPGSAM2,
    optimizer: torch.optim.Optimizer,
    progress: dict,
    config: TrainConfig,
    tokenizer_file: Path,
    context: DistributedContext,
) -> Path:
    folder = output_dir / f"checkpoint-{progress['step']}"
    rng_states = _gather_rng_states(context)
    if context.is_main:
        save_checkpoint(folder, model, optimizer, progress, config, tokenizer_file, rng_states)
        _prune_checkpoints(output_dir, config.schedule.keep_checkpoints)
        logger.info("Saved %s", folder)
    _barrier(context)
    return folder


# ------------------------------------------------------------------------------------------------------------
# Command line


def run_train_command(args: argparse.Namespace) -> int:
    """``python -m mpgsam2 train``: train (or, with ``--eval-only``, evaluate) and write a JSON summary."""
    overrides = list(args.set or [])
    if args.output_dir:
        overrides.append(f"output_dir={args.output_dir}")
    config = load_config(args.config, overrides)
    if args.eval_only:
        if config.eval_data is None:
            raise ValueError(
                "--eval-only needs a data.eval section in the configuration (or --set data.eval=...)."
            )
        source = args.checkpoint or last_checkpoint(config.output_dir)
        if source is None:
            raise FileNotFoundError(f"No checkpoint in {config.output_dir}; pass --checkpoint.")
        source = resolve_model_source(source)
        model = load_trained_model(source, config.schedule.device)
        tokenizer = load_tokenizer(_find_tokenizer_file(config.model.tokenizer or source))
        out = Path(args.eval_dir) if args.eval_dir else Path(source) / "eval"
        report = evaluate_model(
            model, tokenizer, config.eval_data, out, config.schedule.device, config.schedule.precision
        )
        summary = {k: report[k] for k in ("J", "F", "J&F", "num_videos", "num_expressions")} | {
            "out": str(out)
        }
    else:
        result = train(config, resume=args.resume)
        if int(os.environ.get("RANK", "0")) != 0:
            return 0
        summary = {"steps": result["steps"], "checkpoint": result["checkpoint"]}
        if result["history"]:
            summary["loss_first"] = result["history"][0]["loss"]
            summary["loss_last"] = result["history"][-1]["loss"]
        if "eval" in result:
            summary["eval"] = {k: result["eval"][k] for k in ("J", "F", "J&F", "num_expressions")}
    sys.stdout.write(json.dumps(summary) + "\n")
    return 0


def _add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("config", help="a JSON configuration (see configs/)")
    parser.add_argument("--output-dir", default=None, help="override the configuration's output_dir")
    parser.add_argument(
        "--resume", default=None, help="'auto' (the run's last checkpoint) or a checkpoint folder"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a setting, e.g. --set train.max_steps=100 --set model.aggregator.object_local=false",
    )
    parser.add_argument(
        "--eval-only", action="store_true", help="evaluate a checkpoint on data.eval, no training"
    )
    parser.add_argument(
        "--checkpoint", default=None, help="with --eval-only: the model (default: the run's last)"
    )
    parser.add_argument("--eval-dir", default=None, help="with --eval-only: where to write metrics and masks")
    parser.set_defaults(run=run_train_command)
    return parser


TRAIN_HELP = "train or fine-tune from a JSON configuration (one GPU; several with torchrun; CPU smoke tests)"
TRAIN_DESCRIPTION = (
    "Train MPG-SAM 2 with the official recipe. Several GPUs or machines: "
    "torchrun --nproc_per_node=N -m mpgsam2 train CONFIG."
)


def add_train_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``train`` on the ``mpgsam2`` command line (``subparsers`` from ``add_subparsers``)."""
    parser = subparsers.add_parser("train", help=TRAIN_HELP, description=TRAIN_DESCRIPTION)
    return _add_arguments(parser)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m mpgsam2.training CONFIG ...`` (also under ``torchrun -m mpgsam2.training``)."""
    parser = _add_arguments(argparse.ArgumentParser(prog="mpgsam2 train", description=TRAIN_DESCRIPTION))
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings only")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO, format="%(levelname)s %(message)s"
    )
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError) as error:
        sys.stderr.write(f"error: {error}\n")
        return 2


__all__ = [
    "FAST_LR_PREFIXES",
    "ClipOutput",
    "DistributedContext",
    "ModelSpec",
    "OptimSpec",
    "ScheduleSpec",
    "TrainConfig",
    "TrainingForward",
    "add_train_parser",
    "apply_overrides",
    "build_optimizer",
    "build_training_model",
    "clip_forward",
    "decode_all_masks",
    "enable_gradient_checkpointing",
    "encode_frames_trainable",
    "evaluate_model",
    "forward_backward",
    "freeze_image_encoder",
    "image_forward",
    "init_distributed",
    "last_checkpoint",
    "load_config",
    "load_trained_model",
    "main",
    "resolve_model_source",
    "parameter_groups",
    "prepare_for_training",
    "save_checkpoint",
    "save_model",
    "set_dropout",
    "train",
    "video_forward",
    "wrap_distributed",
]


if __name__ == "__main__":
    sys.exit(main())
