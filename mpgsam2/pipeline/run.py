"""A video file and expressions in, every output on disk: the run shared by the command line, the app and
Python users.

decode (:func:`~mpgsam2.pipeline.clips.load_clip`) -> the model's loop (:func:`frame_results`, one compact
:class:`~mpgsam2.pipeline.results.FrameMasks` per frame) -> :class:`~mpgsam2.pipeline.results.ResultCollector`
(frame views as frames finish) -> :func:`~mpgsam2.pipeline.outputs.write_outputs`.

:func:`iter_segment_video` reports each finished frame as it goes and can stop early: the outputs then cover
the frames finished so far. :func:`segment_video` is the same run for callers that only want the outputs.
"""

from __future__ import annotations

import gc
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..tokenizer import EncodedExpression
from ..video_io import Clip
from .clips import SegmentOptions, load_clip
from .outputs import SegmentOutputs, write_outputs
from .results import FrameDone, FrameMasks, ResultCollector

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


def is_out_of_memory(error: BaseException) -> bool:
    """True for CUDA's ``OutOfMemoryError`` and the plain out-of-memory errors of other devices (MPS)."""
    import torch

    if isinstance(error, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()


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
) -> Iterator[FrameMasks]:
    """The model's loop over a clip: one :class:`FrameMasks` per frame, in order.

    ``should_stop`` is polled after each frame; when it returns True the loop ends there (the device is
    released at once, without waiting for the rest of the clip).
    """
    results = predictor.iter_segment(frames, expressions, clip_length=clip_length)
    try:
        for done, result in enumerate(results, 1):
            yield FrameMasks.pack(result.frame_index, result.masks, result.object_scores, result.priors)
            if done < len(frames) and should_stop is not None and should_stop():
                logger.info("stopped after %d of %d frames", done, len(frames))
                return
    finally:
        close = getattr(results, "close", None)
        if close is not None:
            close()


def segment_video(
    predictor,
    video: str | os.PathLike,
    expressions: str | Sequence[str],
    out_dir: str | os.PathLike,
    options: SegmentOptions | None = None,
    progress: ProgressFn | None = None,
    clip: Clip | None = None,
    should_stop: StopFn | None = None,
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
    """
    outputs = None
    for event in iter_segment_video(predictor, video, expressions, out_dir, options, clip, should_stop):
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
    collector = ResultCollector(clip, [item.text for item in encoded], Path(out_dir), options.view_height)
    try:
        for frame in frame_results(predictor, clip.frames, encoded, options.clip_length, should_stop):
            yield collector.add(frame)
    except Exception as failure:  # the model failed part-way: keep what is done, then say what happened
        raise run_interrupted(failure, collector, notes, video, options, started) from failure
    outputs = write_outputs(collector.result(notes), out_dir, video, options.opacity)
    yield replace(outputs, seconds=time.monotonic() - started)


def run_interrupted(
    failure: BaseException,
    collector: ResultCollector,
    notes: list[str],
    video: str | os.PathLike | None,
    options: SegmentOptions,
    started: float,
) -> RunInterrupted:
    """The error to raise for a run that failed part-way, with complete outputs for the frames done."""
    out_of_memory = is_out_of_memory(failure)
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
    return RunInterrupted(
        f"The run failed after {done} of {total} frames ({type(failure).__name__}: {failure}).{kept}", outputs
    )
