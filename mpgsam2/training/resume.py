"""The checkpoints of a training run: saving them, finding the last one, and resuming from it exactly.

A checkpoint folder is a complete model in the layout :func:`mpgsam2.load_model` reads (weights, config,
tokenizer) plus the optimizer's state, the run's position and every process's random state.

A run whose pre-training stages ran (``categories``, ``grounding``, ``clip_grounding``) also keeps their end,
before the main loop's first step, in :data:`STAGES_CHECKPOINT`, which is never pruned: the main loop's step
0, without an optimizer state (none exists yet), so that a run resumed from it, or a variant of the main loop
started from it with other settings, trains no stage again.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from ..checkpoints import read_weights, save_pretrained, weights_file
from ..checkpoints.hub import LAST_CHECKPOINT_FILE
from ..checkpoints.loading import load_official_state_dict
from ..modeling.model import MPGSAM2
from .distributed import DistributedContext
from .run_config import TrainConfig

logger = logging.getLogger(__name__)

STATE_FILE = "training_state.pt"
STAGES_CHECKPOINT = "checkpoint-stages"


def _rng_state() -> dict:
    """This process's random state, in types that a weights-only load reads back (no pickled objects)."""
    kind, keys, position, has_gauss, cached = np.random.get_state(legacy=True)
    state = {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def gather_rng_states(context: DistributedContext) -> list[dict]:
    """Every process's random state (dropout draws differ per process), gathered on all of them."""
    if not context.enabled:
        return [_rng_state()]
    states: list = [None] * context.world_size
    dist.all_gather_object(states, _rng_state())
    return states


def save_checkpoint(
    folder: Path,
    model: MPGSAM2,
    optimizer: torch.optim.Optimizer | None,
    progress: dict,
    config: TrainConfig,
    tokenizer_file: Path,
    rng_states: list[dict] | None = None,
    scaler: torch.amp.GradScaler | None = None,
    categories_head: nn.Module | None = None,
) -> Path:
    """Model (Hugging Face layout), tokenizer, optimizer state, progress, random states and the fp16 loss
    scale, in one folder; with the kept categories head (not part of the model) when there is one.

    ``rng_states``: one per process (rank order); default: this process's. ``optimizer``: None before the
    main loop's first step (:data:`STAGES_CHECKPOINT`), so that a run started from it builds its own.
    """
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    save_pretrained(model, tmp, tokenizer_file)
    state = {"progress": progress, "rng": rng_states or [_rng_state()]}
    if optimizer is not None:
        state["optimizer"] = optimizer.state_dict()
    if scaler is not None:
        state["scaler"] = scaler.state_dict()
    if categories_head is not None:
        state["categories_head"] = categories_head.state_dict()
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


def prune_checkpoints(output_dir: Path, keep: int) -> None:
    if keep <= 0:
        return
    steps = sorted(output_dir.glob("checkpoint-*[0-9]"), key=lambda p: int(p.name.rsplit("-", 1)[1]))
    for old in steps[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def load_progress(
    folder: Path,
    model: MPGSAM2,
    optimizer: torch.optim.Optimizer,
    context: DistributedContext,
    scaler: torch.amp.GradScaler | None = None,
    categories_head: nn.Module | None = None,
) -> dict:
    """Load a checkpoint's weights and training state into ``model``, ``optimizer`` (and ``scaler``, and the
    kept ``categories_head``); returns the run's position: ``{"step", "epoch", "samples"}`` (samples of the
    epoch's order consumed)."""
    load_official_state_dict(model, read_weights(weights_file(folder)))
    saved = torch.load(folder / STATE_FILE, map_location="cpu", weights_only=True)
    if categories_head is not None:
        if "categories_head" not in saved:
            raise ValueError(
                f"{folder} holds no categories head, and this run keeps one (loss.categories > 0): resume "
                "with the configuration the checkpoint was written with, or set loss.categories to 0."
            )
        categories_head.load_state_dict(saved["categories_head"])
    if "optimizer" in saved:  # absent at the stages' end: the run's own optimizer starts there
        optimizer.load_state_dict(saved["optimizer"])
    if scaler is not None and "scaler" in saved:
        scaler.load_state_dict(saved["scaler"])
    states = saved.get("rng") or []
    if len(states) == context.world_size:
        _set_rng_state(states[context.rank])
    else:
        logger.warning(
            "The checkpoint was written by %d process(es), this run has %d: random draws restart.",
            len(states),
            context.world_size,
        )
    progress = dict(saved["progress"])
    if "samples" not in progress:  # written before the position was counted in samples of the epoch's order
        train = json.loads((folder / "train_config.json").read_text()).get("train", {})
        progress["samples"] = progress.pop("batch", 0) * int(train.get("batch_size", 1)) * max(1, len(states))
    return progress
