"""Fixtures for every test: one thread, the official stand-in tokenizer and a tiny random model.

Tests read only what the repository holds (``tests/data``, ``examples``, the package) and write only to
temporary folders.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

# Two threads on a loaded 2-core machine were measured 8x slower than one; keep every test on one (set
# before anything imports torch).
os.environ.setdefault("OMP_NUM_THREADS", "1")


def pytest_configure(config):
    import torch
    from hypothesis import settings

    torch.set_num_threads(1)
    # Nothing of Hypothesis's in the checkout (its example database, its cache of constants): tests write
    # only to temporary folders.
    settings.register_profile("no-database", database=None)
    settings.load_profile("no-database")
    if "HYPOTHESIS_STORAGE_DIRECTORY" not in os.environ:
        storage = tempfile.mkdtemp(prefix="mpgsam2-hypothesis-")
        os.environ["HYPOTHESIS_STORAGE_DIRECTORY"] = storage
        config.add_cleanup(lambda: shutil.rmtree(storage, ignore_errors=True))


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def tokenizer():
    """The official tokenizer set-up on the stand-in sentencepiece model of the parity data."""
    from official import TOKENIZER_MODEL

    from mpgsam2 import load_tokenizer

    return load_tokenizer(TOKENIZER_MODEL)


@pytest.fixture(scope="session")
def untrained_model():
    from mpgsam2 import build_model

    return build_model("test", seed=0)


@pytest.fixture(scope="session")
def predictor(untrained_model, tokenizer):
    from mpgsam2 import VideoPredictor

    return VideoPredictor(untrained_model, tokenizer)


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
