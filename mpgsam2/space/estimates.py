"""The work of a run (:class:`Job`), its expected time on this device and the ZeroGPU reservation.

:func:`estimate_seconds` predicts the run time from a :class:`CostModel`, refined by :class:`TimingLog`
after each real run; :func:`gpu_duration` turns the CUDA estimate into the seconds that
``@spaces.GPU(duration=...)`` reserves on ZeroGPU.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, replace

from ..inference.clicks import Click
from ..pipeline.clips import SegmentOptions
from .limits import (
    GPU_SAFETY_FACTOR,
    GPU_STARTUP_SECONDS,
    MAX_GPU_SECONDS,
    MIN_GPU_SECONDS,
    preset_for,
)


@dataclass(frozen=True)
class Job:
    """A checked request: what one run will process."""

    video: str
    expressions: tuple[str, ...]
    model: str
    options: SegmentOptions
    frames: int  # estimated frames to process
    width: int
    height: int
    source_fps: float
    has_audio: bool
    # Points that correct expressions: (expression index, click); the run re-tracks each clicked expression.
    clicks: tuple[tuple[int, Click], ...] = ()
    # A correction of an earlier run of the same clip: its folder (its saved session and results), whose
    # track already has the first ``resumed_clicks`` clicks; only the others are applied, and only the frames
    # they re-track are tracked.
    resume_from: str | None = None
    resumed_clicks: int = 0
    # A preview of a correction: re-track only up to this frame (the one just clicked).
    until_frame: int | None = None

    @property
    def preset(self) -> str:
        return preset_for(self.model)

    @property
    def work(self) -> int:
        """Frames x expressions: the unit the model's cost grows with."""
        return self.frames * len(self.expressions)

    @property
    def pending_clicks(self) -> tuple[tuple[int, Click], ...]:
        """The clicks this job applies (all of them, unless it corrects an earlier run)."""
        return self.clicks[self.resumed_clicks :] if self.resume_from else self.clicks

    @property
    def tracked_frames(self) -> int:
        """Frames tracked with every expression: none when correcting an earlier run."""
        return 0 if self.resume_from else self.frames

    @property
    def retracked_frames(self) -> int:
        """Frames tracked again for the clicked expressions: each from its earliest clicked frame on."""
        earliest: dict[int, int] = {}
        for k, click in self.pending_clicks:
            earliest[k] = min(earliest.get(k, click.frame_index), click.frame_index)
        end = self.frames if self.until_frame is None else min(self.frames, self.until_frame + 1)
        return sum(max(0, end - first) for first in earliest.values())

    @property
    def memory_bytes(self) -> int:
        """Frames and masks held during the run: 3 bytes per pixel per frame, 1 per expression."""
        return self.frames * self.width * self.height * (3 + len(self.expressions))


@dataclass(frozen=True)
class CostModel:
    """Seconds of one run. The model's loop (on the GPU, on ZeroGPU): a fixed part, a part per frame (SAM 2's
    image encoder, shared by all expressions) and a part per frame and expression (BEiT-3, the mask prior,
    tracking). The outputs (in the app's process): drawing and exporting, which grows with the frame's pixels
    times (expressions + 1)."""

    setup_s: float
    per_frame_s: float
    per_frame_expression_s: float
    per_frame_megapixel_s: float

    def model_seconds(self, frames: int, expressions: int) -> float:
        return self.setup_s + frames * (self.per_frame_s + self.per_frame_expression_s * expressions)

    def output_seconds(self, frames: int, expressions: int, width: int, height: int) -> float:
        return frames * self.per_frame_megapixel_s * width * height / 1e6 * (expressions + 1)

    def seconds(self, frames: int, expressions: int, width: int, height: int) -> float:
        return self.model_seconds(frames, expressions) + self.output_seconds(
            frames, expressions, width, height
        )


#: Starting points per (device kind, preset), refined by :class:`TimingLog` once runs are measured.
#: cpu/test: measured on a shared 2-core machine with one thread (360p and 720p clips, 1-3 expressions).
#: cpu/large and cpu/base: on that machine Hiera-L at 1024x1024 takes about 13 s a frame, and BEiT-3-large
#: with the mask prior about 2.7 s a frame per expression (benchmarks/results/, 300 frames, 2 threads);
#: tracking adds about a second. cuda and mps: rough figures for a datacenter GPU (fp32) and an Apple GPU,
#: not measured yet.
COST_MODELS: dict[tuple[str, str], CostModel] = {
    ("cpu", "test"): CostModel(1.0, 0.10, 0.25, 0.20),
    ("cpu", "toy"): CostModel(1.0, 0.03, 0.03, 0.20),
    ("cpu", "base"): CostModel(8.0, 14.0, 2.0, 0.20),
    ("cpu", "large"): CostModel(10.0, 14.0, 4.0, 0.20),
    ("cuda", "test"): CostModel(1.0, 0.02, 0.02, 0.05),
    ("cuda", "toy"): CostModel(1.0, 0.01, 0.01, 0.05),
    ("cuda", "base"): CostModel(3.0, 0.08, 0.035, 0.05),
    ("cuda", "large"): CostModel(3.0, 0.08, 0.05, 0.05),
    ("mps", "test"): CostModel(1.0, 0.05, 0.08, 0.15),
    ("mps", "toy"): CostModel(1.0, 0.02, 0.02, 0.15),
    ("mps", "base"): CostModel(5.0, 0.5, 0.15, 0.15),
    ("mps", "large"): CostModel(5.0, 0.5, 0.25, 0.15),
}


def loop_seconds(model: CostModel, job: Job, results: int) -> float:
    """``model``'s seconds for the first ``results`` frame results of ``job``'s loop: its frames with every
    expression, then the re-tracked frames, one expression each."""
    main = min(results, job.tracked_frames)
    retracked = max(0, results - job.tracked_frames)
    return model.model_seconds(main, len(job.expressions)) + retracked * (
        model.per_frame_s + model.per_frame_expression_s
    )


def cost_model(device_kind: str, preset: str) -> CostModel:
    """The :data:`COST_MODELS` entry; unknown presets count as large, unknown devices as the CPU."""
    device = device_kind if device_kind in ("cpu", "cuda", "mps") else "cpu"
    return COST_MODELS.get((device, preset), COST_MODELS[(device, "large")])


class TimingLog:
    """Measured speed of the model's loop per (device kind, preset), as a factor on the :class:`CostModel`.

    Each finished run moves the factor halfway (geometrically) towards measured / estimated, so the estimate
    follows this machine (and its load) after one or two runs. Thread-safe; kept per process.
    """

    def __init__(self) -> None:
        self._factors: dict[tuple[str, str], float] = {}
        self._runs: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()

    def factor(self, device_kind: str, preset: str) -> float:
        with self._lock:
            return self._factors.get((device_kind, preset), 1.0)

    def runs(self, device_kind: str, preset: str) -> int:
        with self._lock:
            return self._runs.get((device_kind, preset), 0)

    def record(self, device_kind: str, job: Job, results: int, seconds: float) -> None:
        """Record that the model's loop took ``seconds`` for its first ``results`` frame results of ``job``
        on ``device_kind``."""
        if results < 1 or seconds <= 0:
            return
        base = loop_seconds(cost_model(device_kind, job.preset), job, results)
        ratio = min(100.0, max(0.01, seconds / base))
        key = (device_kind, job.preset)
        with self._lock:
            old = self._factors.get(key)
            self._factors[key] = ratio if old is None else math.sqrt(old * ratio)
            self._runs[key] = self._runs.get(key, 0) + 1


def model_seconds(job: Job, device_kind: str, timings: TimingLog | None = None) -> float:
    """Expected seconds of ``job``'s model loop on ``device_kind`` ("cuda", "mps" or "cpu")."""
    base = loop_seconds(cost_model(device_kind, job.preset), job, job.tracked_frames + job.retracked_frames)
    return base * (timings.factor(device_kind, job.preset) if timings is not None else 1.0)


def estimate_seconds(job: Job, device_kind: str, timings: TimingLog | None = None) -> float:
    """Expected seconds of the whole run of ``job`` on ``device_kind``: the model's loop and the outputs."""
    outputs = cost_model(device_kind, job.preset).output_seconds(
        job.frames, len(job.expressions), job.width, job.height
    )
    return model_seconds(job, device_kind, timings) + outputs


def gpu_seconds_needed(job: Job, timings: TimingLog | None = None) -> float:
    """The GPU reservation ``job`` deserves, before clamping to the allowed range: its model loop only (the
    video is decoded before the GPU call, and the outputs are written outside it)."""
    return GPU_SAFETY_FACTOR * model_seconds(job, "cuda", timings) + GPU_STARTUP_SECONDS


def gpu_duration(job: Job, timings: TimingLog | None = None, max_seconds: float = MAX_GPU_SECONDS) -> int:
    """Seconds to reserve with ``@spaces.GPU(duration=...)``: grows with frames x expressions, within
    [:data:`MIN_GPU_SECONDS`, ``max_seconds``] (:func:`plan_job` refuses runs that would need more)."""
    return int(min(max_seconds, max(MIN_GPU_SECONDS, math.ceil(gpu_seconds_needed(job, timings)))))


def max_frames_within(job: Job, max_gpu_seconds: float, timings: TimingLog | None = None) -> int:
    """The largest frame count whose GPU reservation fits ``max_gpu_seconds`` (at least 1)."""
    low, high = 1, max(1, job.frames)
    while low < high:
        middle = (low + high + 1) // 2
        trial = replace(job, frames=middle)
        if gpu_seconds_needed(trial, timings) <= max_gpu_seconds:
            low = middle
        else:
            high = middle - 1
    return low


def describe_estimate(job: Job, device_kind: str, device_label: str, timings: TimingLog | None = None) -> str:
    """One line for the form: frames x expressions and the expected time on this device."""
    seconds = estimate_seconds(job, device_kind, timings)
    measured = timings is not None and timings.runs(device_kind, job.preset) > 0
    basis = "from the runs measured here" if measured else "a first guess until a run is measured"
    count = len(job.expressions)
    return (
        f"{job.frames} frames x {count} expression{'s' if count != 1 else ''} = {job.work} frame-expressions "
        f"at {job.width}x{job.height}; about {format_seconds(seconds)} on {device_label} ({basis})."
    )


def format_seconds(seconds: float) -> str:
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s"
