"""Trained models and the checkpoints of a run: saving, finding, loading and resuming."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from ..checkpoint import (
    CheckpointError,
    config_from_state_dict,
    read_weights,
    resolve_source,
    save_pretrained,
)
from ..config import MPGSAM2Config
from ..devices import pick_device
from ..model import MPGSAM2
from .config import TrainConfig
from .distributed import DistributedContext

logger = logging.getLogger(__name__)

TOKENIZER_FILE = "sentencepiece.bpe.model"
STATE_FILE = "training_state.pt"
LAST_CHECKPOINT_FILE = "last_checkpoint.txt"


# ------------------------------------------------------------------------------------------------------------
# Trained models: loading and saving


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
    save_pretrained(model, folder)
    if tokenizer_file is not None:
        shutil.copyfile(tokenizer_file, folder / TOKENIZER_FILE)
    return folder


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
