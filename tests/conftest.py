"""Shared fixtures: the read-only reference data in ../shared, a tokenizer and a tiny random model."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# Two threads on a loaded 2-core machine were measured 8x slower than one; keep every test on one.
os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
REFERENCE = SHARED / "reference"
EXAMPLES = ROOT / "examples"


def pytest_configure(config):
    import torch

    torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    assert REFERENCE.is_dir(), f"the reference data must be at {REFERENCE}"
    return REFERENCE


@pytest.fixture(scope="session")
def random_weights(reference_dir):
    """The reference's deterministic random_state_dict function."""
    sys.path.insert(0, str(reference_dir))
    try:
        from random_weights import random_state_dict
    finally:
        sys.path.pop(0)
    return random_state_dict


@pytest.fixture(scope="session")
def tokenizer(reference_dir):
    from mpgsam2 import load_tokenizer

    return load_tokenizer(reference_dir / "tiny.spm")


@pytest.fixture(scope="session")
def test_model():
    from mpgsam2 import build_model

    return build_model("test", seed=0)


@pytest.fixture(scope="session")
def predictor(test_model, tokenizer):
    from mpgsam2 import VideoPredictor

    return VideoPredictor(test_model, tokenizer)


@pytest.fixture(scope="session")
def synthetic_frames():
    """(4, 96, 128, 3) uint8: a red square moving right over a grey background with noise."""
    import numpy as np

    rng = np.random.default_rng(0)
    frames = np.full((4, 96, 128, 3), 110, dtype=np.uint8)
    frames += rng.integers(0, 20, frames.shape, dtype=np.uint8)
    for t in range(4):
        frames[t, 30:60, 20 + 6 * t : 50 + 6 * t] = (220, 30, 30)
    return frames
