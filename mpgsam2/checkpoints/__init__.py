"""MPG-SAM 2 weights: the official checkpoints' names, their files, where they come from, and loading.

* :mod:`.official_names` - the one table between the official names and ours;
* :mod:`.files` - reading weights (safetensors, weights-only torch files, shards) and writing the layout
  that :func:`load_model` reads;
* :mod:`.hub` - sources: a file, a folder, a training run, a released variant, a hub repository;
* :mod:`.loading` - strict loading, the configuration read from a checkpoint, :func:`load_model`.
"""

from __future__ import annotations

from .errors import CheckpointError
from .files import read_config_hints, read_weights, save_pretrained, weights_file
from .hub import DEFAULT_REPO, TOY_CHECKPOINT, TOY_MODEL, VARIANTS, resolve_source
from .loading import config_from_state_dict, load_model, load_official_state_dict, load_state_dict_strict
from .official_names import OFFICIAL_TO_OURS, from_official, official_state_dict, to_official

__all__ = [
    "DEFAULT_REPO",
    "OFFICIAL_TO_OURS",
    "TOY_CHECKPOINT",
    "TOY_MODEL",
    "VARIANTS",
    "CheckpointError",
    "config_from_state_dict",
    "from_official",
    "load_model",
    "load_official_state_dict",
    "load_state_dict_strict",
    "official_state_dict",
    "read_config_hints",
    "read_weights",
    "resolve_source",
    "save_pretrained",
    "to_official",
    "weights_file",
]
