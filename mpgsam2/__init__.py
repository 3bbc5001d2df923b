"""MPG-SAM 2 (ICCV 2025) referring video object segmentation: model, video pipeline and demo.

How a video becomes masks, and where each step lives::

    video file --video_io.read_video--> frames (T, H, W, 3) uint8         pipeline.clips.load_clip
    expressions --expressions.clean_expressions, tokenizer--> token ids   inference.VideoPredictor.encode
    frames + ids --modeling.beit3 + modeling.mask_prior--> per frame:      VideoPredictor.init_session
        prior mask, mask embeddings, prompts (the clip-level "global" stage, once per expression)
    each frame --modeling.sam2_adapter (SAM 2 + modeling.aggregator)-->    VideoPredictor.propagate
        masks, object scores, memories (in inference.session.VideoSession)
    per-frame results --pipeline.collector--> RunResult                     pipeline.run.iter_segment_video
    RunResult --render, export--> overlay video, frame views, timeline,    pipeline.outputs.write_outputs
        palette PNGs, COCO RLE, summary

Weights: ``checkpoints`` (the official names, files, the hub, :func:`load_model`). Benchmarks and training:
``datasets``, ``metrics``, ``training``. The Gradio Space's logic: ``space`` (``app.py`` wires it).

Heavy modules (torch, sam2) load on first use, so that ``mpgsam2.video_io`` and friends import quickly.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "MPGSAM2": "modeling.model",
    "build_model": "modeling.model",
    "MPGSAM2Config": "modeling.config",
    "get_config": "modeling.config",
    "load_model": "checkpoints",
    "CheckpointError": "checkpoints",
    "save_pretrained": "checkpoints",
    "load_tokenizer": "tokenizer",
    "VideoPredictor": "inference.predictor",
    "FrameResult": "inference.results",
    "ExpressionResult": "inference.results",
    "VideoSession": "inference.session",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        module = importlib.import_module(f".{_EXPORTS[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module 'mpgsam2' has no attribute {name!r}")
