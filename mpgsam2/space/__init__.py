"""What the Gradio Space needs that is not user interface: input checks, the work estimate, the ZeroGPU
duration, per-session folders, the model store and the plain-text result summaries.

``app.py`` only wires these into Gradio. Nothing here imports gradio, so all of it is tested without a
browser or a server (``tests/test_space.py``). Modules: :mod:`.limits` (limits and names),
:mod:`.inputs` (checks), :mod:`.points` (points that correct a target), :mod:`.estimates` (time and ZeroGPU duration), :mod:`.run_folders` (per-session
folders), :mod:`.model_store` (the model store), :mod:`.summaries` (result texts); everything is re-exported
here.

The flow of one run:

1. :func:`plan_job` turns the raw form values (a video path, expressions one per line, trim, fps, frame cap,
   opacity) into a checked :class:`Job`, or raises :class:`InputError` naming every field to change. It
   probes the video (cheap: no decoding) and estimates the frames to process, so impossible or too-large
   requests are refused before any GPU time is spent.
2. :func:`estimate_seconds` predicts the run time on this device from a :class:`CostModel`, refined by
   :class:`TimingLog` after each real run; :func:`gpu_duration` turns the CUDA estimate into the seconds that
   ``@spaces.GPU(duration=...)`` reserves on ZeroGPU.
3. :class:`RunFolders` gives each browser session (or API client) its own temporary folder, a fresh
   sub-folder per run and a stop flag, and removes them when the session ends or goes idle.
4. :class:`ModelStore` loads each model once per process and remembers why one could not be loaded.
5. :class:`Runner` runs a job: the video decoded in the app's process, the model's loop on the device
   (:func:`device_loop`, a forked worker on ZeroGPU), the frame views and outputs written as frames arrive;
   every failure becomes results for the frames done plus a sentence, or one :class:`RunError`.
"""

from __future__ import annotations

from ..video_io import VideoReadError
from . import estimates, inputs, limits, model_store, points, run_folders, runner, summaries
from .estimates import (
    COST_MODELS,
    CostModel,
    Job,
    TimingLog,
    cost_model,
    describe_estimate,
    estimate_seconds,
    format_seconds,
    gpu_duration,
    gpu_seconds_needed,
    max_frames_within,
    model_seconds,
)
from .inputs import (
    InputError,
    estimate_frames,
    estimate_line,
    parse_expressions,
    plan_job,
    probe,
    segment_options,
    without_paths,
)
from .limits import (
    COLOR_NAMES,
    DEFAULT_MAX_FRAMES,
    FIELDS,
    GPU_SAFETY_FACTOR,
    GPU_STARTUP_SECONDS,
    MAX_EXPRESSION_CHARS,
    MAX_EXPRESSIONS,
    MAX_FRAMES,
    MAX_GPU_SECONDS,
    MEMORY_BUDGET_BYTES,
    MIN_GPU_SECONDS,
    MODEL_PRESETS,
    MODEL_VARIANTS,
    TEST_MODEL,
    TOY_MODEL,
    color_name,
    examples_cache_name,
    model_choices,
    on_spaces,
    on_zero_gpu,
    preset_for,
)
from .model_store import ModelStore, ModelUnavailable, model_notice
from .points import PointError, parse_points, point_from_view
from .run_folders import RunFolders
from .runner import Finished, LoopFailure, RunError, Runner, as_correction, device_loop
from .summaries import download_files, result_json, summary_text

__all__ = [
    "COLOR_NAMES",
    "COST_MODELS",
    "DEFAULT_MAX_FRAMES",
    "FIELDS",
    "GPU_SAFETY_FACTOR",
    "GPU_STARTUP_SECONDS",
    "MAX_EXPRESSIONS",
    "MAX_EXPRESSION_CHARS",
    "MAX_FRAMES",
    "MAX_GPU_SECONDS",
    "MEMORY_BUDGET_BYTES",
    "MIN_GPU_SECONDS",
    "MODEL_PRESETS",
    "MODEL_VARIANTS",
    "TEST_MODEL",
    "TOY_MODEL",
    "CostModel",
    "Finished",
    "as_correction",
    "LoopFailure",
    "ModelUnavailable",
    "InputError",
    "Job",
    "ModelStore",
    "PointError",
    "RunError",
    "RunFolders",
    "Runner",
    "TimingLog",
    "VideoReadError",
    "color_name",
    "cost_model",
    "describe_estimate",
    "device_loop",
    "download_files",
    "estimate_frames",
    "estimate_line",
    "estimate_seconds",
    "estimates",
    "examples_cache_name",
    "format_seconds",
    "gpu_duration",
    "gpu_seconds_needed",
    "inputs",
    "limits",
    "max_frames_within",
    "model_choices",
    "model_notice",
    "model_seconds",
    "model_store",
    "on_spaces",
    "on_zero_gpu",
    "parse_expressions",
    "parse_points",
    "point_from_view",
    "points",
    "plan_job",
    "preset_for",
    "probe",
    "result_json",
    "segment_options",
    "run_folders",
    "runner",
    "summaries",
    "summary_text",
    "without_paths",
]
