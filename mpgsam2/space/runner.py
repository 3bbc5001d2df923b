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
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image

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


#: What a run that finished every frame keeps in its folder for corrections with clicks: the model's session
#: (written by the device part) and every frame's results (written here).
SESSION_FILE = "session.safetensors"
RESULTS_FILE = "results.npz"


@dataclass(frozen=True)
class Finished:
    """A run's outputs (possibly of the frames done before a stop or a failure)."""

    outputs: SegmentOutputs
    untrained: bool  # made by the untrained test model
    job: Job | None = None  # what was run

    @property
    def correctable(self) -> bool:
        """True while the run's folder keeps what a correction with more clicks starts from."""
        folder = self.outputs.folder
        return (folder / SESSION_FILE).is_file() and (folder / RESULTS_FILE).is_file()


def as_correction(job: Job, previous: Finished | None) -> Job:
    """``job`` as a correction of ``previous`` when it is the same clip, expressions, model and options with
    the same clicks and more after them: only the new clicks are applied, re-tracking only the frames they
    change. Otherwise ``job`` unchanged (a full run)."""
    if previous is None or previous.job is None or not previous.correctable:
        return job
    before = previous.job
    # The opacity only changes how the outputs are drawn, and a correction draws them all again.
    options = replace(before.options, opacity=job.options.opacity)
    same = (before.video, before.expressions, before.model, options) == (
        job.video,
        job.expressions,
        job.model,
        job.options,
    )
    count = len(before.clicks)
    if not same or len(job.clicks) <= count or job.clicks[:count] != before.clicks:
        return job
    return replace(job, resume_from=str(previous.outputs.folder), resumed_clicks=count)


#: The app's GPU entry: (job, frames file, encoded expressions, stop flag) -> per-frame results.
DeviceLoop = Callable[[Job, str, Sequence[EncodedExpression], str], Iterator["FrameResult | LoopFailure"]]


def device_loop(
    predictor,
    frames_file: str | os.PathLike,
    expressions: Sequence[EncodedExpression],
    clip_length: int | None,
    stop_flag: str | os.PathLike,
    clicks: Sequence[tuple[int, Click]] = (),
    resume_from: str | os.PathLike | None = None,
    until_frame: int | None = None,
) -> Iterator[FrameResult | LoopFailure]:
    """The GPU part of a run: the model's loop over the frames saved in ``frames_file`` (read memory-mapped),
    one :class:`FrameResult` per frame (then the re-tracked frames of the expressions with ``clicks``),
    ending early when ``stop_flag`` exists; a failure ends it with a :class:`LoopFailure` (after freeing the
    device's cache when it ran out of memory).

    A whole-clip run that finishes saves its session beside ``frames_file`` (:data:`SESSION_FILE`), so that a
    later call can correct it; with ``resume_from`` (the folder of such a run), only ``clicks`` are applied
    to that run's session, re-tracking just the frames they change (up to ``until_frame`` for a preview,
    which then saves nothing).
    """
    frames = np.load(frames_file, mmap_mode="r")
    by_expression: dict[int, list[Click]] = {}
    for k, click in clicks:
        by_expression.setdefault(k, []).append(click)
    keep = Path(frames_file).with_name(SESSION_FILE) if clip_length is None else None
    resumed = Path(resume_from) / SESSION_FILE if resume_from is not None else None
    failure = None
    try:
        results = frame_results(
            predictor, frames, expressions, clip_length, Path(stop_flag).exists, by_expression, keep, resumed
        )
        with closing(results):
            for result in results:
                yield result
                if until_frame is not None and result.frame_index >= until_frame:
                    break
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
            job = self._resume(job, collector)
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
                        done = collector.add(event)
                        if job.resume_from:  # progress through the re-tracked frames
                            done = replace(done, done=len(arrivals), total=job.retracked_frames)
                        yield done
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
            if problem is None and (run_dir / SESSION_FILE).is_file():
                collector.save(run_dir / RESULTS_FILE)
            result = collector.result([*notes, *([problem] if problem else [])])
            outputs = write_outputs(result, run_dir, job.video, job.options.opacity)
            outputs = replace(outputs, seconds=time.monotonic() - run_started)
            logger.info(
                "%d frames x %d expressions; outputs in %.1f s", outputs.num_frames, len(job.expressions),
                time.monotonic() - started,
            )  # fmt: skip
        yield Finished(outputs, bool(getattr(predictor, "untrained", False)), job)

    def preview(self, job: Job, session_hash: str | None, frame_index: int) -> np.ndarray:
        """Frame ``frame_index``'s view as the correction ``job`` makes it: its new clicks applied and only
        the frames up to that one re-tracked (on ZeroGPU, a short GPU call). Nothing is kept.

        Returns:
            (H, W, 3) uint8: [frame | prior heat map | final mask], one row per expression.
        Raises:
            RunError: ``job`` corrects no earlier run, or the preview failed (the message says why).
        """
        if not job.resume_from:
            raise RunError("Run the clip first; then click on a frame to correct a target.")
        predictor = self.predictor(job.model)
        folder = self.folders.folder(session_hash)
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="preview-", dir=folder) as scratch:
            try:
                clip = load_clip(job.video, job.options)
            except VideoReadError as error:
                raise RunError(without_paths(str(error), job.video)) from None
            encoded = predictor.encode(list(job.expressions))
            collector = ResultCollector(
                clip, [e.text for e in encoded], Path(scratch), job.options.view_height
            )
            try:
                collector.restore(Path(job.resume_from) / RESULTS_FILE)
            except (OSError, ValueError):
                raise RunError("The run to correct is gone (the page was idle); press Run again.") from None
            frames_file = Path(scratch) / "frames.npy"
            np.save(frames_file, clip.frames)
            job = replace(job, until_frame=frame_index)
            stop_flag = Path(scratch) / "no-stop"
            try:
                with closing(self.loop(job, str(frames_file), encoded, str(stop_flag))) as events:
                    for event in events:
                        if isinstance(event, LoopFailure):
                            raise RunError(self._loop_message(event, collector, job))
                        done = collector.add(event)
                        if event.frame_index >= frame_index:
                            return np.asarray(Image.open(done.frame_view).convert("RGB"))
            except RunError:
                raise
            except Exception as error:  # the platform's answer: a quota, a queue
                raise RunError(self._platform_message(error, collector, job)) from None
        raise RunError(f"Frame {frame_index} was not re-tracked; press Re-track to apply the points.")

    @staticmethod
    def _resume(job: Job, collector: ResultCollector) -> Job:
        """Start a correction from the results of the run it corrects; when that run's files are gone (an
        ended session, a pruned run), the job becomes a full run with all its clicks."""
        if not job.resume_from:
            return job
        base = Path(job.resume_from)
        try:
            collector.restore(base / RESULTS_FILE, base / "priors")
            if (base / SESSION_FILE).is_file():
                return job
        except (OSError, ValueError) as error:
            logger.warning("cannot correct the earlier run (%s); running the whole clip", error)
        collector.views.clear()  # nothing restored counts as done
        return replace(job, resume_from=None, resumed_clicks=0)

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
