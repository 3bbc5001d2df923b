"""A propagated session in a file: what a later process needs to correct its expressions with clicks.

A refinement re-tracks one expression from its earliest clicked frame; everything before that frame is
reused: the clip's global stage (the batched :class:`~mpgsam2.modeling.mask_prior.TrackingContext`) and
every frame's memory (the session's archive). On a ZeroGPU Space the run and each correction are separate
GPU calls in separate forked workers, so the run's worker writes its session here and the correction's
worker reads it back. The file is safetensors (no pickle): the tensors on the host, and the rest (the
expressions, the clicks so far, the bank's horizons, its conditioning frames) as JSON metadata.

At S = 1024 a frame's memory is 0.5 MB per expression (64 x 64 x 64 bfloat16) and its share of the global
stage about 0.2 MB, so a 150-frame run with two expressions writes about 220 MB.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ..modeling.mask_prior import TrackingContext
from ..tokenizer import EncodedExpression
from .clicks import Click
from .session import VideoSession, store

FORMAT = "mpgsam2-session/1"
_METADATA_KEY = "mpgsam2"


class SnapshotError(ValueError):
    """A snapshot that cannot serve this clip: another format, or another number of frames."""


def save_session(session: VideoSession, path: str | os.PathLike) -> None:
    """Write a propagated session (started with ``keep_memories=True``) to ``path`` (safetensors).

    Every frame must have been tracked: a refinement needs the memories of all the frames before its click.
    """
    if session.archive is None:
        raise ValueError("Only a session started with init_session(keep_memories=True) can be saved.")
    missing = [t for t in range(session.num_frames) if t not in session.archive]
    if missing:
        raise ValueError(f"Track every frame before saving the session: frame {missing[0]} is not done.")
    tensors: dict[str, torch.Tensor] = {}
    for field in dataclasses.fields(TrackingContext):
        value = getattr(session.tracking, field.name)
        if value is not None:
            tensors[f"tracking.{field.name}"] = value
    for k, item in enumerate(session.expressions):
        tensors[f"expression.{k}.input_ids"] = item.input_ids
        tensors[f"expression.{k}.padding"] = item.padding
    # Every frame's memory has the same positional code (see VideoSession.remember): stored once.
    for i, code in enumerate(session.archive[0]["maskmem_pos_enc"]):
        tensors[f"memory_position.{i}"] = code
    for t, memory in session.archive.items():
        tensors[f"memory.{t}.features"] = memory["maskmem_features"]
        tensors[f"memory.{t}.pointer"] = memory["obj_ptr"]
    metadata = {
        "format": FORMAT,
        "num_frames": session.num_frames,
        "frame_offset": session.frame_offset,
        "memory_frames": session.memory_frames,
        "pointer_frames": session.pointer_frames,
        "conditioning_frames": sorted(session.memory_bank["cond_frame_outputs"]),
        "positions": len(session.archive[0]["maskmem_pos_enc"]),
        "expressions": [
            {"text": e.text, "truncated": e.truncated, "known_tokens": e.known_tokens}
            for e in session.expressions
        ],
        "clicks": {str(k): [c.to_dict() for c in clicks] for k, clicks in session.clicks.items()},
    }
    host = {name: value.detach().to("cpu").contiguous() for name, value in tensors.items()}
    partial = f"{os.fspath(path)}.partial"
    save_file(host, partial, metadata={_METADATA_KEY: json.dumps(metadata)})
    os.replace(partial, path)  # a reader never sees half a file


def load_session(
    path: str | os.PathLike, frames: np.ndarray | Sequence[np.ndarray], device: torch.device | str = "cpu"
) -> VideoSession:
    """The session saved at ``path``, on ``device``, over ``frames`` (T, H, W, 3) uint8: the clip it was
    propagated on (the frames are not in the file). Ready for :meth:`VideoPredictor.refine`."""
    from safetensors import safe_open

    with safe_open(os.fspath(path), framework="pt") as handle:
        metadata = json.loads((handle.metadata() or {}).get(_METADATA_KEY, "{}"))
    if metadata.get("format") != FORMAT:
        raise SnapshotError(f"{path} is not a saved MPG-SAM 2 session ({FORMAT}).")
    frames = np.asarray(frames)
    if len(frames) != metadata["num_frames"]:
        raise SnapshotError(
            f"The saved session covers {metadata['num_frames']} frames; these frames are {len(frames)}."
        )
    tensors = load_file(os.fspath(path), device=str(device))
    tracking = TrackingContext(
        **{field.name: tensors.get(f"tracking.{field.name}") for field in dataclasses.fields(TrackingContext)}
    )
    expressions = [
        EncodedExpression(
            text=item["text"],
            input_ids=tensors[f"expression.{k}.input_ids"].cpu(),
            padding=tensors[f"expression.{k}.padding"].cpu(),
            truncated=item["truncated"],
            known_tokens=item["known_tokens"],
        )
        for k, item in enumerate(metadata["expressions"])
    ]
    position = [tensors[f"memory_position.{i}"] for i in range(metadata["positions"])]
    archive = {
        t: {
            "maskmem_features": tensors[f"memory.{t}.features"],
            "maskmem_pos_enc": position,
            "obj_ptr": tensors[f"memory.{t}.pointer"],
        }
        for t in range(metadata["num_frames"])
    }
    session = VideoSession(
        frames=frames,
        expressions=expressions,
        contexts=[],  # the global stage is in ``tracking``; the per-expression contexts are not needed
        tracking=tracking,
        frame_offset=metadata["frame_offset"],
        memory_frames=metadata["memory_frames"],
        pointer_frames=metadata["pointer_frames"],
        archive=archive,
        clicks={int(k): [Click.from_dict(c) for c in clicks] for k, clicks in metadata["clicks"].items()},
    )
    # The bank as propagation left it: refine reads which frames condition the track.
    for t in metadata["conditioning_frames"]:
        store(session.memory_bank, t, archive[t], True, session.memory_frames, session.pointer_frames)
    return session
