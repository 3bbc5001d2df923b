"""Running a checked job for the app: the video decoded here, the model's loop on the device (a forked
ZeroGPU worker on a Space), the frame views and outputs written here as frames arrive.

The device part (:func:`device_loop`, the body of the app's one ``@spaces.GPU`` entry) does GPU work only
and hands back compact per-frame results. Its failures cross the process boundary as data
(:class:`LoopFailure`): an exception from a ZeroGPU worker arrives as its class name alone. What the platform
does to a run (a worker killed at the end of its duration, a quota, a queue) arrives as an exception from
the stream; :class:`Runner` turns every failure into complete outputs for the frames done plus a sentence
saying what happened and what to change, or, when no frame was done, one :class:`RunError`.
"""

from __future__ import annotations

import logging
import os
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..inference.clicks import Click
from ..inference.results import FrameResult
from ..pipeline.clips import load_clip
from ..pipeline.collector import FrameDone, ResultCollector
from ..pipeline.outputs import SegmentOutputs, write_outputs
from ..pipeline.run import LoopFailure, expression_notes, frame_results, free_device_memory, is_out_of_memory
from ..tokenizer import EncodedExpression
from ..video_io import VideoReadError
from .estimates import Job, TimingLog
from .inputs import without_paths
from .model_store import ModelStore
from .run_folders import RunFolders

logger = logging.getLogger(__name__)


class RunError(Exception):
    """A run that gave no result; the message (plain text) says what happened and what to change."""


@dataclass(frozen=True)
class Finished:
    """A run's outputs (possibly of the frames done before a stop or a failure)."""

    outputs: SegmentOutputs
    untrained: bool  # made by the untrained test model


#: The app's GPU entry: (job, frames file, encoded expressions, stop flag) -> per-frame results.
DeviceLoop = Callable[[Job, str, Sequence[EncodedExpression], str], Iterator["FrameResult | LoopFailure"]]


def device_loop(
    predictor,
    frames_file: str | os.PathLike,
    expressions: Sequence[EncodedExpression],
    clip_length: int | None,
    stop_flag: str | os.PathLike,
    clicks: Sequence[tuple[int, Click]] = (),
) -> Iterator[FrameResult | LoopFailure]:
    """The GPU part of a run: the model's loop over the frames saved in ``frames_file`` (read memory-mapped),
    one :class:`FrameResult` per frame (then the re-tracked frames of the expressions with ``clicks``),
    ending early when ``stop_flag`` exists; a failure ends it with a :class:`LoopFailure` (after freeing the
    device's cache when it ran out of memory)."""
    frames = np.load(frames_file, mmap_mode="r")
    by_expression: dict[int, list[Click]] = {}
    for k, click in clicks:
        by_expression.setdefault(k, []).append(click)
    failure = None
    try:
        yield from frame_results(
            predictor, frames, expressions, clip_length, Path(stop_flag).exists, by_expression
        )
    except Exception as error:
        failure = LoopFailure(is_out_of_memory(error), f"{type(error).__name__}: {error}")
        # As text: a log record holding the error would hold its traceback, and the run's tensors with it.
        logger.error("the model's loop failed:\n%s", traceback.format_exc())
    if failure is not None:
        # Out of the except block, so that the traceback (and the run's tensors it holds) is gone.
        if failure.out_of_memory:
            free_device_memory()
        yield failure


class Runner:
    """Runs the app's jobs (see the module's docstring).

    Args:
        models: the loaded models.
        folders: per-session run folders (the stop flag lives there).
        timings: learns the device's speed from each run's model loop.
        device_kind: "cuda", "mps" or "cpu", for the timings.
        loop: the device part, called as ``loop(job, frames_file, expressions, stop_flag)``: the app's
            ``@spaces.GPU`` entry around :func:`device_loop`.
        gpu_seconds: the seconds reserved for a job's device part (for messages), when they are limited.
    """

    def __init__(
        self,
        models: ModelStore,
        folders: RunFolders,
        timings: TimingLog,
        device_kind: str,
        loop: DeviceLoop,
        gpu_seconds: Callable[[Job], int] | None = None,
    ):
        self.models = models
        self.folders = folders
        self.timings = timings
        self.device_kind = device_kind
        self.loop = loop
        self.gpu_seconds = gpu_seconds

    def predictor(self, model: str):
        """The loaded model, or :class:`RunError` saying why it is not there."""
        try:
            return self.models.get(model)
        except Exception as error:
            raise RunError(str(error)) from None

    def run(self, job: Job, session_hash: str | None) -> Iterator[FrameDone | Finished]:
        """Run ``job`` in the session's folder: each frame as it finishes, then :class:`Finished`.

        Raises:
            RunError: no frame could be done (a bad video, no model, out of memory at once, no GPU).
        """
        run_started = time.monotonic()
        predictor = self.predictor(job.model)
        self.folders.sweep()
        with self.folders.run(session_hash) as run_dir:
            try:
                clip = load_clip(job.video, job.options)
            except VideoReadError as error:
                raise RunError(without_paths(str(error), job.video)) from None
            encoded = predictor.encode(list(job.expressions))
            notes = expression_notes(encoded, predictor.tokenizer.max_tokens)
            collector = ResultCollector(clip, [e.text for e in encoded], run_dir, job.options.view_height)
            for k, click in job.clicks:
                collector.clicks.setdefault(k, []).append(click)
            frames_file = run_dir / "frames.npy"
            np.save(frames_file, clip.frames)
            stop_flag = self.folders.stop_flag(session_hash)
            arrivals: list[float] = []
            problem = None
            try:
                with closing(self.loop(job, str(frames_file), encoded, str(stop_flag))) as events:
                    for event in events:
                        if isinstance(event, LoopFailure):
                            problem = self._loop_message(event, collector, job)
                            break
                        arrivals.append(time.monotonic())
                        yield collector.add(event)
            except Exception as error:  # the platform's answer: a worker cut off, a quota, a queue
                problem = self._platform_message(error, collector, job)
                logger.warning("run ended by %s: %s", type(error).__name__, error)
            finally:
                frames_file.unlink(missing_ok=True)
            if collector.done == 0:
                raise RunError(problem or "The run ended without results; please try again.")
            if len(arrivals) > 1:
                # The model's own pace, without the wait for a GPU or the worker's start.
                seconds = (arrivals[-1] - arrivals[0]) * len(arrivals) / (len(arrivals) - 1)
                self.timings.record(self.device_kind, job, len(arrivals), seconds)
            started = time.monotonic()
            result = collector.result([*notes, *([problem] if problem else [])])
            outputs = write_outputs(result, run_dir, job.video, job.options.opacity)
            outputs = replace(outputs, seconds=time.monotonic() - run_started)
            logger.info(
                "%d frames x %d expressions; outputs in %.1f s", outputs.num_frames, len(job.expressions),
                time.monotonic() - started,
            )  # fmt: skip
        yield Finished(outputs, bool(getattr(predictor, "untrained", False)))

    @staticmethod
    def _progress(collector: ResultCollector) -> str:
        return f"{collector.done} of {collector.clip.num_frames} frames"

    def _loop_message(self, failure: LoopFailure, collector: ResultCollector, job: Job) -> str:
        clip = collector.clip
        if failure.out_of_memory:
            what = f"The GPU ran out of memory after {self._progress(collector)}"
            advice = (
                f" ({len(job.expressions)} expression(s) at {clip.width}x{clip.height}). Lower the maximum "
                "number of frames, the frame rate or the number of expressions."
            )
        else:
            what = f"The model failed after {self._progress(collector)} ({failure.error})"
            advice = ". Try a shorter clip or fewer frames; the server log has the details."
        kept = "; the results cover those frames" if collector.done else ""
        return what + kept + advice

    def _platform_message(self, error: Exception, collector: ResultCollector, job: Job) -> str:
        """What a ZeroGPU refusal or abort means for the visitor (Gradio errors carry a title)."""
        title = str(getattr(error, "title", "") or "")
        message = str(getattr(error, "message", "") or error)
        kept = "; the results cover those frames" if collector.done else ""
        if "aborted" in message.lower():
            reserved = f" ({self.gpu_seconds(job)} s)" if self.gpu_seconds is not None else ""
            return (
                f"The run was cut off after {self._progress(collector)}: it used all the GPU time reserved for "
                f"it{reserved}{kept}. Lower the maximum number of frames or the frame rate to finish in time."
            )
        if "quota" in title.lower() or "quota" in message.lower():
            return (
                f"No GPU time is left for you on this Space for now ({message.strip()}). Log in to Hugging Face "
                "for more GPU time, process fewer frames, or try again later."
            )
        if "duration" in title.lower():
            return (
                f"This run needs more GPU time at once than ZeroGPU allows you ({message.strip()}). Lower the "
                "maximum number of frames or the frame rate, or log in to Hugging Face."
            )
        if "queue" in title.lower():
            return f"No GPU became free in time ({message.strip()}). Try again in a few minutes."
        detail = f"{title}: {message}" if title else f"{type(error).__name__}: {message}"
        return (
            f"The run stopped after {self._progress(collector)} ({detail}){kept}. Try again, or with fewer "
            "frames; the server log has the details."
        )
