"""The official code's reference data in ``tests/data/official`` (see its README): manifests, case A."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from mpgsam2.modeling.random_init import random_state_dict

OFFICIAL_DIR = Path(__file__).resolve().parent / "data" / "official"
LARGE_MANIFEST = OFFICIAL_DIR / "state_dict_large.tsv"
BASE_MANIFEST = OFFICIAL_DIR / "state_dict_base.tsv"
TOKENIZER_MODEL = OFFICIAL_DIR / "tiny.spm"


def read_manifest(path: Path = LARGE_MANIFEST) -> dict[str, tuple[int, ...]]:
    """Rows ``name<TAB>[d0, d1, ...]<TAB>dtype`` -> {name: shape}, in the file's (checkpoint) order."""
    rows = {}
    for line in path.read_text().splitlines():
        if line.strip():
            name, shape, _dtype = line.split("\t")
            rows[name] = tuple(int(d) for d in shape.strip("[]() ").split(",") if d.strip())
    return rows


def official_random_weights(path: Path = LARGE_MANIFEST, seed: int = 0) -> dict[str, torch.Tensor]:
    """The weights the official code ran with for the parity cases (official names)."""
    return random_state_dict(read_manifest(path).items(), seed)


def load_case(name: str = "case_a") -> dict[str, np.ndarray]:
    with np.load(OFFICIAL_DIR / f"{name}.npz") as data:
        return dict(data)
