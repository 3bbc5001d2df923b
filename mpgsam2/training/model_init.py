"""Building the model to train: a preset or a trained model, the ablation switches, and its tokenizer."""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

import torch
from torch import nn

from ..checkpoints import (
    config_from_state_dict,
    from_official,
    read_config_hints,
    read_weights,
    resolve_source,
)
from ..checkpoints.files import weights_file
from ..checkpoints.loading import load_state_dict_strict
from ..modeling.config import PRESETS, MPGSAM2Config, get_config
from ..modeling.model import MPGSAM2, build_model
from ..tokenizer import (
    TEST_TOKENIZER,
    TOY_TOKENIZER,
    ExpressionTokenizer,
    find_sentencepiece,
    load_tokenizer,
)
from .run_config import ModelSpec

logger = logging.getLogger(__name__)

#: Presets whose tokenizer ships with the package; the others need BEiT-3's beit3.spm (model.tokenizer).
BUNDLED_TOKENIZERS: dict[str, Path] = {"test": TEST_TOKENIZER, "toy": TOY_TOKENIZER}


def _with_switches(config: MPGSAM2Config, spec: ModelSpec) -> MPGSAM2Config:
    try:
        aggregator = dataclasses.replace(config.aggregator, **spec.aggregator)
        mask_prior = dataclasses.replace(config.mask_prior, **spec.mask_prior)
        sam2 = dataclasses.replace(config.sam2, **spec.sam2)
    except TypeError as error:
        raise ValueError(f"Unknown model switch: {error}") from None
    for name in ("num_pixel_layers", "num_object_layers"):
        if getattr(aggregator, name) < 1:
            raise ValueError(f"model.aggregator.{name} must be at least 1 (switch the fusion off instead).")
    return config.replace(aggregator=aggregator, mask_prior=mask_prior, sam2=sam2)


def _load_submodule(module: nn.Module, path: str, strip: str, what: str) -> None:
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    state = {k[len(strip) :] if k.startswith(strip) else k: v for k, v in state.items()}
    missing, unexpected = module.load_state_dict(state, strict=False)
    logger.info("%s weights from %s: %d missing, %d unused keys", what, path, len(missing), len(unexpected))
    if missing:
        logger.warning("%s keys left at their initialisation: %s", what, ", ".join(missing[:8]))


def find_tokenizer_file(source: str | os.PathLike) -> Path:
    """The sentencepiece model at ``source`` (a file, or a checkpoint folder holding one)."""
    found = find_sentencepiece(source)
    if found is None:
        raise FileNotFoundError(f"No sentencepiece tokenizer (beit3.spm) at {source}; set model.tokenizer.")
    return found


def build_training_model(spec: ModelSpec) -> tuple[MPGSAM2, ExpressionTokenizer, Path]:
    """The model to train, its tokenizer and the tokenizer's sentencepiece file (copied into checkpoints)."""
    if spec.init in PRESETS:
        model = build_model(_with_switches(get_config(spec.init), spec), seed=spec.seed)
        if spec.vision_positions == "sine_cosine":
            model.multimodal_encoder.start_positions_on_grid()
        if spec.sam2_checkpoint:
            _load_submodule(model.sam2, spec.sam2_checkpoint, "", "SAM 2")
        if spec.beit3_checkpoint:
            _load_submodule(model.multimodal_encoder, spec.beit3_checkpoint, "beit3.", "BEiT-3")
        if spec.tokenizer is None and spec.init not in BUNDLED_TOKENIZERS:
            raise ValueError("Training a preset from scratch needs model.tokenizer (BEiT-3's beit3.spm).")
        spm = find_tokenizer_file(spec.tokenizer or BUNDLED_TOKENIZERS[spec.init])
    else:
        if spec.vision_positions != "random":
            raise ValueError(
                "model.vision_positions sets how a preset's position table starts; a trained model "
                f"({spec.init}) keeps its own (leave it at 'random')."
            )
        path = resolve_source(spec.init)
        state = read_weights(weights_file(path))
        config = _with_switches(config_from_state_dict(state, read_config_hints(path)), spec)
        model = MPGSAM2(config)
        ours = from_official(state)
        expected = model.state_dict()
        load_state_dict_strict(model, {k: v for k, v in ours.items() if k in expected}, strict=False)
        missing = sorted(set(expected) - set(ours))
        logger.info("Initialised from %s (%d tensors; %d new, left random)", path, len(ours), len(missing))
        if missing:
            logger.info("New parameters: %s", ", ".join(missing[:8]) + (" ..." if len(missing) > 8 else ""))
        spm = find_tokenizer_file(spec.tokenizer or (path if path.is_dir() else path.parent))
    return model, load_tokenizer(spm), spm
