"""MPG-SAM 2 (ICCV 2025) referring video object segmentation: model, video pipeline and demo.

Heavy modules (torch, sam2) load on first use, so that ``mpgsam2.video_io`` and friends import quickly.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "MPGSAM2": "model",
    "build_model": "model",
    "MPGSAM2Config": "config",
    "get_config": "config",
    "load_model": "checkpoint",
    "CheckpointError": "checkpoint",
    "save_pretrained": "checkpoint",
    "load_tokenizer": "tokenizer",
    "VideoPredictor": "predictor",
    "FrameResult": "predictor",
    "ExpressionResult": "predictor",
    "VideoSession": "session",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        module = importlib.import_module(f".{_EXPORTS[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module 'mpgsam2' has no attribute {name!r}")
