"""Correcting an expression with clicks: re-tracking it from the earliest clicked frame.

The clicked frames are decoded with their points in the sparse prompt and become conditioning memories,
which every later frame attends to, as SAM 2 does with clicked frames. Frames before the earliest click keep
their results; the clip's global stage, the other expressions and the memories of the frames before the
click are reused, so a refinement costs about the frames it re-tracks.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Iterator, Sequence

import torch

from ..modeling.mask_prior import TrackingContext
from .clicks import Click, check_clicks, point_prompt
from .results import FrameResult, PendingFrame
from .session import VideoSession, empty_memory_bank, store


def expression_context(tracking: TrackingContext, expression: int) -> TrackingContext:
    """The batched context of ``expression`` alone (K = 1)."""
    rows = slice(expression, expression + 1)
    return dataclasses.replace(
        tracking,
        priors=tracking.priors[rows],
        mask_embeddings=tracking.mask_embeddings[rows],
        merged_embeddings=tracking.merged_embeddings[rows],
        sparse_prompts=tracking.sparse_prompts[rows],
        text_features=tracking.text_features[rows],
        text_padding=None if tracking.text_padding is None else tracking.text_padding[rows],
    )


def _row(memory: dict, expression: int) -> dict:
    """One expression's part of a memory of K."""
    rows = slice(expression, expression + 1)
    entry = {"obj_ptr": memory["obj_ptr"][rows]}
    if "maskmem_features" in memory:
        entry["maskmem_features"] = memory["maskmem_features"][rows]
        entry["maskmem_pos_enc"] = [p[rows] for p in memory["maskmem_pos_enc"]]
    return entry


@torch.inference_mode()
def refine(
    predictor, session: VideoSession, expression: int, clicks: Sequence[Click], logits: bool = False
) -> Iterator[FrameResult]:
    """Add ``clicks`` to expression ``expression`` of a propagated session and re-track it from the earliest
    of them to the end of the clip.

    Every click of the expression so far (earlier refinements' too) stays in force. The session's archive of
    memories (``init_session(..., keep_memories=True)``) gives the memories before the clicked frame, and
    takes the re-tracked ones, so that later refinements start from the corrected track.

    Args:
        predictor: the :class:`~mpgsam2.inference.predictor.VideoPredictor` that propagated the session.
        clicks: points on frames of the session's clip, in its frames' pixels.
        logits: also return the logits.
    Yields:
        The expression's results (K = 1, ``expressions == (expression,)``) for the re-tracked frames, in order.
    """
    if session.archive is None:
        raise ValueError(
            "Re-tracking needs the memories of the run: start it with init_session(keep_memories=True)."
        )
    if not 0 <= expression < len(session.expressions):
        raise ValueError(f"Expression {expression} is not in this session's {len(session.expressions)}.")
    height, width = session.size
    clicks = check_clicks(clicks, session.num_frames, height, width)
    if not clicks:
        return
    start = min(c.frame_index for c in clicks)
    if any(t not in session.archive for t in range(start)):
        raise ValueError(f"Track the frames before frame {start} first (propagate the session).")
    session.clicks.setdefault(expression, []).extend(clicks)
    by_frame: dict[int, list[Click]] = defaultdict(list)
    for click in session.clicks[expression]:
        by_frame[click.frame_index].append(click)
    initial = min(session.memory_bank["cond_frame_outputs"], default=0)
    conditioning = {initial, *by_frame}
    bank = empty_memory_bank()
    for t in sorted(session.archive):
        if t < start:
            store(bank, t, _row(session.archive[t], expression), t in conditioning, session.memory_frames,
                  session.pointer_frames)  # fmt: skip
    tracking = expression_context(session.tracking, expression)
    image_size = predictor.config.sam2.image_size
    pending = None
    for t in range(start, session.num_frames):
        points = None
        if t in by_frame:
            points = point_prompt(by_frame[t], height, width, image_size, predictor.device)
        queued = _track(predictor, session, tracking, bank, t, points, t in conditioning, expression, logits)
        if pending is not None:
            yield pending.result()
        pending = queued
    if pending is not None:
        yield pending.result()


def _track(predictor, session, tracking, bank, t, points, conditioning, expression, logits) -> PendingFrame:
    """One frame of the re-tracked expression: decoded, stored in its bank and in the session's archive."""
    with predictor.precision_scope():
        features = predictor.encode_frame(predictor.sam_input(session.frames[t]))
        output = predictor.model.track_frame(features, tracking, bank, t, predictor.memory_dtype, points)
    store(bank, t, output.memory, conditioning, session.memory_frames, session.pointer_frames)
    archived = session.archive.get(t)
    if archived is not None:
        for name in ("maskmem_features", "obj_ptr"):
            archived[name][expression].copy_(output.memory[name][0])
    return predictor.frame_result(session, t, output, tracking.priors[:, t], logits, (expression,))
