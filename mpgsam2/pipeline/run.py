"""A video file and expressions in, every output on disk: the run shared by the command line, the app and
Python users.

decode (:func:`~mpgsam2.pipeline.clips.load_clip`) -> the model's loop (:func:`frame_results`, one compact
:class:`~mpgsam2.inference.results.FrameResult` per frame) -> :class:`~mpgsam2.pipeline.collector.ResultCollector`
(frame views as frames finish) -> :func:`~mpgsam2.pipeline.outputs.write_outputs`.

:func:`iter_segment_video` reports each finished frame as it goes and can stop early: the outputs then cover
the frames finished so far. :func:`segment_video` is the same run for callers that only want the outputs.
"""

from __future__ import annotations

import gc
import logging
import os
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..expressions import clean_expression
from ..inference.clicks import Click, check_clicks
from ..inference.results import FrameResult
from ..tokenizer import EncodedExpression
from ..video_io import Clip
from .clips import SegmentOptions, load_clip
from .collector import FrameDone, ResultCollector
from .outputs import SegmentOutputs, write_outputs

logger = logging.getLogger(__name__)

ProgressFn = Callable[[int, int], None]
StopFn = Callable[[], bool]


class RunInterrupted(RuntimeError):
    """The model's loop failed part-way; ``outputs`` (when not None) are complete outputs for the frames
    finished before the failure (``outputs.stopped`` is True)."""

    def __init__(self, message: str, outputs: SegmentOutputs | None = None):
        super().__init__(message)
        self.outputs = outputs

    def __reduce__(self):  # picklable across processes (ZeroGPU workers), outputs included
        return (type(self), (str(self), self.outputs))


class RunOutOfMemory(RunInterrupted):
    """The device ran out of memory; its cache was freed and the message says what to reduce."""


#: How running out of device memory reads when the allocator fails inside a library: cuBLAS and cuDNN create
#: their workspaces lazily, and report the failed allocation as their own error.
_OUT_OF_MEMORY_MESSAGES = ("out of memory", "cublas_status_alloc_failed", "cudnn_status_alloc_failed")


def is_out_of_memory(error: BaseException) -> bool:
    """True for CUDA's ``OutOfMemoryError``, the plain out-of-memory errors of other devices (MPS), and the
    allocation failures that surface as cuBLAS or cuDNN errors."""
    import torch

    if isinstance(error, torch.cuda.OutOfMemoryError):
        return True
    message = str(error).lower()
    return isinstance(error, RuntimeError) and any(text in message for text in _OUT_OF_MEMORY_MESSAGES)


def free_device_memory() -> None:
    """Give the memory cached by torch back to the device after a failed run."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    mps = getattr(torch, "mps", None)
    if mps is not None and torch.backends.mps.is_available():
        mps.empty_cache()


def expression_notes(encoded: Sequence[EncodedExpression], max_tokens: int) -> list[str]:
    """What the tokenizer had to do to each expression: cut one longer than BEiT-3's text positions, or find
    no known word in it (the model then sees only the image)."""
    notes = []
    for number, item in enumerate(encoded, 1):
        if item.truncated:
            notes.append(
                f"Expression {number} is longer than the {max_tokens} tokens the model reads; only its "
                "beginning was used. Shorten it."
            )
        if item.unknown_only:
            notes.append(
                f"Expression {number} has no word the model knows; it segmented from the image alone. "
                "Rephrase it in plain words."
            )
    return notes


def frame_results(
    predictor,
    frames: np.ndarray,
    expressions: Sequence[EncodedExpression] | Sequence[str],
    clip_length: int | None = None,
    should_stop: StopFn | None = None,
    clicks: Mapping[int, Sequence[Click]] | None = None,
    save_to: str | os.PathLike | None = None,
    resume_from: str | os.PathLike | None = None,
) -> Iterator[FrameResult]:
    """The model's loop over a clip: one :class:`FrameResult` (masks packed, no logits) per frame, in order,
    then, for each expression with clicks (by index), its re-tracked frames from the earliest click on.

    ``should_stop`` is polled after each frame; when it returns True the loop ends there (the device is
    released at once, without waiting for the rest of the clip).

    Args:
        save_to: when the loop finishes every frame, write its session there
            (:func:`~mpgsam2.inference.snapshots.save_session`), so that a later call can correct it.
        resume_from: a session saved by an earlier call over the same ``frames`` and expressions: only
            ``clicks`` (new ones; the saved ones stay in force) are applied, re-tracking each clicked
            expression from its earliest new click; no frame is tracked otherwise.
    """
    from ..inference.snapshots import load_session, save_session

    keep = clicks or save_to is not None or resume_from is not None
    if keep and clip_length is not None:
        raise ValueError("Points correct a whole clip's track: run without clip_length (--clip-length).")
    if resume_from is not None:
        session = load_session(resume_from, frames, predictor.device)
        loops = [predictor.refine(session, k, c) for k, c in (clicks or {}).items()]
    elif keep:
        session = predictor.init_session(frames, expressions, keep_memories=True)
        loops = [
            predictor.propagate(session),
            *(predictor.refine(session, k, c) for k, c in (clicks or {}).items()),
        ]
    else:
        loops = [predictor.iter_segment(frames, expressions, clip_length=clip_length)]
    total = sum(len(frames) - min(c.frame_index for c in v) for v in (clicks or {}).values() if v)
    total += 0 if resume_from is not None else len(frames)
    done = 0
    try:
        for loop in loops:
            for result in loop:
                yield result
                done += 1
                if done < total and should_stop is not None and should_stop():
                    logger.info("stopped after %d of %d frames", done, total)
                    return
        if save_to is not None:
            save_session(session, save_to)
    finally:
        for loop in loops:
            loop.close()


def segment_video(
    predictor,
    video: str | os.PathLike,
    expressions: str | Sequence[str],
    out_dir: str | os.PathLike,
    options: SegmentOptions | None = None,
    progress: ProgressFn | None = None,
    clip: Clip | None = None,
    should_stop: StopFn | None = None,
    clicks: Mapping[str, Sequence[Click]] | None = None,
) -> SegmentOutputs:
    """Run MPG-SAM 2 on a video file and write every output into ``out_dir``.

    Args:
        predictor: a :class:`mpgsam2.VideoPredictor`.
        video: the source file (its audio is copied onto the overlay video).
        expressions: referring expressions (:func:`mpgsam2.expressions.clean_expressions`).
        progress: called as ``progress(frames_done, total_frames)``.
        clip: frames already decoded with :func:`load_clip` (skips decoding again).
        should_stop: polled after each frame; when it returns True the run stops and writes the outputs of
            the frames finished so far (see :func:`iter_segment_video`).
        clicks: expression -> points that correct its target (each expression is re-tracked from its
            earliest clicked frame; see :meth:`mpgsam2.VideoPredictor.refine`).
    """
    outputs = None
    events = iter_segment_video(predictor, video, expressions, out_dir, options, clip, should_stop, clicks)
    for event in events:
        if isinstance(event, SegmentOutputs):
            outputs = event
        elif progress is not None:
            progress(event.done, event.total)
    assert outputs is not None  # iter_segment_video always ends with the outputs, or raises
    return outputs


def iter_segment_video(
    predictor,
    video: str | os.PathLike,
    expressions: str | Sequence[str],
    out_dir: str | os.PathLike,
    options: SegmentOptions | None = None,
    clip: Clip | None = None,
    should_stop: StopFn | None = None,
    clicks: Mapping[str, Sequence[Click]] | None = None,
) -> Iterator[FrameDone | SegmentOutputs]:
    """Run MPG-SAM 2 like :func:`segment_video`, yielding a :class:`FrameDone` per frame, then the outputs.

    The model's loop comes first (one frame view per frame, written before its ``FrameDone``); the overlay
    video and the exports are written after it, so a run that stops early (``should_stop()`` returned True
    after some frame) still ends with complete, consistent outputs for the frames it finished,
    ``SegmentOutputs.stopped`` set. The last item is always the :class:`SegmentOutputs`. Closing the generator
    early writes nothing more.

    Raises:
        RunInterrupted: the model failed part-way (``RunOutOfMemory`` for the device's memory); its
            ``outputs`` cover the frames done, if any.
    """
    started = time.monotonic()
    options = options or SegmentOptions()
    encoded = predictor.encode(expressions)
    clip = clip if clip is not None else load_clip(video, options)
    notes = expression_notes(encoded, predictor.tokenizer.max_tokens)
    texts = [item.text for item in encoded]
    by_index = clicks_by_expression(texts, clicks or {}, clip)
    collector = ResultCollector(clip, texts, Path(out_dir), options.view_height)
    collector.clicks = {k: list(v) for k, v in by_index.items()}
    failure = None
    try:
        frames = frame_results(predictor, clip.frames, encoded, options.clip_length, should_stop, by_index)
        for frame in frames:
            yield collector.add(frame)
    except Exception as error:  # the model failed part-way: keep what is done, then say what happened
        # As text: a log record holding the error would hold its traceback, and the run's tensors with it.
        logger.error("the model's loop failed:\n%s", traceback.format_exc())
        failure = LoopFailure(is_out_of_memory(error), f"{type(error).__name__}: {error}")
    if failure is not None:
        # Raised out here, unchained: the error's traceback holds the session's tensors (through the frames of
        # the model's loop), and the device's memory can only be freed once it is gone.
        raise run_interrupted(failure, collector, notes, video, options, started)
    outputs = write_outputs(collector.result(notes), out_dir, video, options.opacity)
    yield replace(outputs, seconds=time.monotonic() - started)


def clicks_by_expression(
    texts: Sequence[str], clicks: Mapping[str, Sequence[Click]], clip: Clip
) -> dict[int, list[Click]]:
    """Clicks keyed by expression text (cleaned like the expressions, case ignored) -> by expression index,
    each checked to be on a frame of the clip and inside it."""
    index = {text.casefold(): k for k, text in enumerate(texts)}
    by_index: dict[int, list[Click]] = {}
    for text, points in clicks.items():
        k = index.get(clean_expression(text).casefold())
        if k is None:
            names = ", ".join(f'"{t}"' for t in texts)
            raise ValueError(f'Points are given for "{text}", which is not one of the expressions ({names}).')
        by_index.setdefault(k, []).extend(check_clicks(points, clip.num_frames, clip.height, clip.width))
    return by_index


@dataclass(frozen=True)
class LoopFailure:
    """What a failure of the model's loop was, without the error itself: its traceback holds the session's
    tensors, and it cannot cross a process boundary (a ZeroGPU worker) with its details."""

    out_of_memory: bool
    error: str  # "<type>: <message>"


def run_interrupted(
    failure: LoopFailure,
    collector: ResultCollector,
    notes: list[str],
    video: str | os.PathLike | None,
    options: SegmentOptions,
    started: float,
) -> RunInterrupted:
    """The error to raise for a run that failed part-way, with complete outputs for the frames done."""
    out_of_memory = failure.out_of_memory
    if out_of_memory:
        free_device_memory()
    done, total = collector.done, collector.clip.num_frames
    outputs = None
    if done:
        note = f"The run failed after {done} of {total} frames; the results cover those."
        outputs = write_outputs(collector.result([*notes, note]), collector.folder, video, options.opacity)
        outputs = replace(outputs, seconds=time.monotonic() - started)
    kept = f" The outputs cover the first {done} frames." if done else ""
    if out_of_memory:
        clip = collector.clip
        return RunOutOfMemory(
            f"Out of device memory after {done} of {total} frames ({len(collector.expressions)} expression(s) "
            f"at {clip.width}x{clip.height}). Lower the maximum number of frames, the frame rate, the "
            f"resolution (max_side) or the number of expressions.{kept}",
            outputs,
        )
    return RunInterrupted(f"The run failed after {done} of {total} frames ({failure.error}).{kept}", outputs)
