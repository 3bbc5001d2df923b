"""What the Gradio Space needs that is not user interface: input checks, the work estimate, the ZeroGPU
duration, per-session folders, the model store and the plain-text result summaries.

``app.py`` only wires these into Gradio. Nothing here imports gradio, so all of it is tested without a
browser or a server (``tests/test_space.py``).

The flow of one run:

1. :func:`plan_job` turns the raw form values (a video path, expressions one per line, trim, fps, frame cap,
   opacity) into a checked :class:`Job`, or raises :class:`InputError` naming every field to change. It
   probes the video (cheap: no decoding) and estimates the frames to process, so impossible or too-large
   requests are refused before any GPU time is spent.
2. :func:`estimate_seconds` predicts the run time on this device from a :class:`CostModel`, refined by
   :class:`TimingLog` after each real run; :func:`gpu_duration` turns the CUDA estimate into the seconds that
   ``@spaces.GPU(duration=...)`` reserves on ZeroGPU.
3. :class:`SessionFolders` gives each browser session (or API client) its own temporary folder, a fresh
   sub-folder per run and a stop flag, and removes them when the session ends or goes idle.
4. :class:`ModelStore` loads each model once per process and remembers why one could not be loaded.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from . import render
from .pipeline import SegmentOptions, SegmentOutputs
from .video_io import VideoInfo, VideoReadError, probe_video

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------------------------
# Limits and names

#: Released checkpoints of the hub repository ``ReeF2025/MPG-SAM2``.
MODEL_VARIANTS: tuple[str, ...] = ("ytvos", "mevis", "tiny")
#: The tiny random preset: runs everything end to end, but its masks mean nothing.
TEST_MODEL = "test"
#: Preset (architecture) of each model name, for the cost model before a model is loaded.
MODEL_PRESETS: dict[str, str] = {"ytvos": "large", "mevis": "large", "tiny": "base", TEST_MODEL: "test"}

MAX_EXPRESSIONS = 10  # each expression adds a BEiT-3 pass per frame and a tracking step per frame
MAX_EXPRESSION_CHARS = 200
MAX_FRAMES = 600  # the frame cap's upper bound
DEFAULT_MAX_FRAMES = 150
#: Decoded frames plus one boolean mask per expression and frame stay in memory during a run.
MEMORY_BUDGET_BYTES = 6 * 1024**3

#: ZeroGPU reservations, in seconds: at least this much, and never more (longer runs are refused up front).
MIN_GPU_SECONDS = 30
MAX_GPU_SECONDS = int(os.environ.get("MPGSAM2_MAX_GPU_SECONDS", "300"))
#: The reservation covers the CUDA estimate times this margin, plus a fixed start-up allowance.
GPU_SAFETY_FACTOR = 1.5
GPU_STARTUP_SECONDS = 10.0

#: Names of the overlay colours of ``render.PALETTE``, in order, for text that cannot show a colour.
COLOR_NAMES: tuple[str, ...] = (
    "blue",
    "orange",
    "green",
    "crimson",
    "orchid",
    "gold",
    "turquoise",
    "pink",
    "brown",
    "olive",
)

#: Form fields, in the order of the app's inputs; :class:`InputError` keys its messages by these names.
FIELDS: tuple[str, ...] = (
    "video",
    "expressions",
    "model",
    "start_s",
    "end_s",
    "fps",
    "max_frames",
    "opacity",
)


def on_zero_gpu(env: Mapping[str, str] = os.environ) -> bool:
    """True on a Hugging Face ZeroGPU Space (where ``@spaces.GPU`` really reserves a GPU)."""
    return env.get("SPACES_ZERO_GPU", "").lower() in ("1", "t", "true")


def on_spaces(env: Mapping[str, str] = os.environ) -> bool:
    """True on any Hugging Face Space."""
    return bool(env.get("SPACE_ID"))


def preset_for(model: str) -> str:
    """Architecture preset of a model name; custom checkpoints are assumed to be the large model."""
    return MODEL_PRESETS.get(model, "large")


def model_choices(default: str) -> list[str]:
    """The models the app offers, ``default`` first: it and the released variants (so the untrained test
    model, or a custom checkpoint, is offered only when the app was started with it)."""
    return [default, *(name for name in MODEL_VARIANTS if name != default)]


def examples_cache_name(model: str) -> str:
    """A folder name for the cached example results of ``model`` (they differ from model to model)."""
    if model in MODEL_VARIANTS:
        return f"cached_examples_{model}"
    return "cached_examples_" + hashlib.sha256(model.encode("utf-8")).hexdigest()[:16]


def color_name(index: int, total: int) -> str:
    """Plain-text name of expression ``index``'s overlay colour (see ``render.color_for``)."""
    if total <= len(COLOR_NAMES):
        return COLOR_NAMES[index % len(COLOR_NAMES)]
    return "#{:02x}{:02x}{:02x}".format(*render.color_for(index, total))


# ---------------------------------------------------------------------------------------------------------------
# Input checks


class InputError(ValueError):
    """Form values that cannot run; ``problems`` maps each field to change to a message saying how.

    Messages never repeat the user's expressions: they are shown where text could be read as markup.
    """

    def __init__(self, problems: Mapping[str, str]):
        self.problems = dict(problems)
        super().__init__(" ".join(self.problems.values()))


def without_paths(message: str, path: str | os.PathLike | None) -> str:
    """``message`` with the upload's path and file name replaced by neutral words.

    Upload names are chosen by users; error messages are shown where text may be read as markup, so they
    must not carry the name back.
    """
    if path is None:
        return message
    p = Path(path)
    for text, neutral in ((str(p.resolve()), "the uploaded file"), (str(p), "the uploaded file")):
        message = message.replace(text, neutral)
    if p.name:
        message = message.replace(f"'{p.name}'", "the uploaded file").replace(p.name, "the uploaded file")
    return message[:1].upper() + message[1:]


def parse_expressions(text: str | Sequence[str] | None) -> list[str]:
    """Expressions from a text box (one per line) or a list: stripped, blank lines dropped.

    Raises:
        InputError: none given, more than :data:`MAX_EXPRESSIONS`, one too long, or one repeated.
    """
    if text is None:
        lines: Sequence[str] = []
    elif isinstance(text, str):
        lines = text.splitlines()
    else:
        lines = [str(item) for item in text]
    # Control characters (tabs, stray carriage returns) become spaces, runs of spaces one space.
    cleaned = [" ".join("".join(ch if ch.isprintable() else " " for ch in line).split()) for line in lines]
    expressions = [line for line in cleaned if line]
    if not expressions:
        raise InputError({"expressions": "Type at least one expression, e.g. 'the dog on the left'."})
    if len(expressions) > MAX_EXPRESSIONS:
        raise InputError(
            {
                "expressions": f"{len(expressions)} expressions given; at most {MAX_EXPRESSIONS} run at once. "
                "Remove some lines."
            }
        )
    for number, expression in enumerate(expressions, 1):
        if len(expression) > MAX_EXPRESSION_CHARS:
            raise InputError(
                {
                    "expressions": f"Expression {number} is {len(expression)} characters long; shorten it to "
                    f"at most {MAX_EXPRESSION_CHARS}."
                }
            )
    seen: dict[str, int] = {}
    for number, expression in enumerate(expressions, 1):
        if expression.lower() in seen:
            raise InputError(
                {
                    "expressions": f"Expression {number} repeats expression {seen[expression.lower()]}; "
                    "remove the repeated line."
                }
            )
        seen[expression.lower()] = number
    return expressions


def _number(value: Any, name: str, label: str, problems: dict[str, str]) -> float | None:
    """A finite float, None for empty values; records a problem for anything else."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        problems[name] = f"The {label} must be a number."
        return None
    if not math.isfinite(number):
        problems[name] = f"The {label} must be a finite number."
        return None
    return number


def segment_options(
    start_s: Any = None,
    end_s: Any = None,
    fps: Any = None,
    max_frames: Any = DEFAULT_MAX_FRAMES,
    opacity: Any = 0.5,
) -> SegmentOptions:
    """:class:`SegmentOptions` from form values, where 0 or empty means "not set" for every field but opacity:
    start 0 = the beginning, end 0 = the end of the video, fps 0 = the source rate, frame cap 0 = the largest
    allowed (:data:`MAX_FRAMES`).

    Raises:
        InputError: for every value out of range, with the field to change.
    """
    problems: dict[str, str] = {}
    start = _number(start_s, "start_s", "trim start", problems)
    end = _number(end_s, "end_s", "trim end", problems)
    rate = _number(fps, "fps", "frame rate", problems)
    cap = _number(max_frames, "max_frames", "maximum number of frames", problems)
    alpha = _number(opacity, "opacity", "mask opacity", problems)
    if start is not None and start < 0:
        problems["start_s"] = "The trim start must be 0 s or later."
    if end is not None and end < 0:
        problems["end_s"] = "The trim end must be 0 (the end of the video) or a positive time."
    if start and end and end <= start:
        problems["end_s"] = f"The trim end ({end:g} s) must be after the trim start ({start:g} s)."
    if rate is not None and rate < 0:
        problems["fps"] = "The frame rate must be positive, or 0 for the video's own rate."
    if cap is not None and (cap < 0 or cap != int(cap)):
        problems["max_frames"] = (
            f"The maximum number of frames must be a whole number from 1 to {MAX_FRAMES}."
        )
    elif cap is not None and cap > MAX_FRAMES:
        problems["max_frames"] = (
            f"At most {MAX_FRAMES} frames run at once; lower the maximum number of frames."
        )
    if alpha is None:
        alpha = 0.5
    elif not 0.0 <= alpha <= 1.0:
        problems["opacity"] = "The mask opacity must be between 0 and 1."
    if problems:
        raise InputError(problems)
    return SegmentOptions(
        start_s=start or None,
        end_s=end or None,
        fps=rate or None,
        max_frames=int(cap) if cap else MAX_FRAMES,
        opacity=float(alpha),
    )


@functools.lru_cache(maxsize=64)
def _probe_cached(path: str, size: int, mtime_ns: int) -> VideoInfo:
    return probe_video(path)


def probe(path: str | os.PathLike) -> VideoInfo:
    """``probe_video`` with a small cache keyed by path, size and modification time (the estimate re-reads
    the same upload on every form change)."""
    p = Path(path)
    if not p.exists():
        raise VideoReadError(f"Could not find '{p.name}'. Upload the video again.")
    stat = p.stat()
    return _probe_cached(str(p), stat.st_size, stat.st_mtime_ns)


def estimate_frames(info: VideoInfo, options: SegmentOptions) -> int:
    """How many frames ``read_video`` will keep for ``options``, from the nominal timestamps ``i / fps``.

    Exact for constant-frame-rate files starting at 0 s (the usual case); a close estimate otherwise.

    Raises:
        InputError: the trim window holds no frame (start at or after the end of the video).
    """
    stamps = np.arange(info.num_frames, dtype=np.float64) / info.fps
    keep = np.ones(info.num_frames, dtype=bool)
    eps = 1e-6
    if options.start_s is not None:
        keep &= stamps >= options.start_s - eps
    if options.end_s is not None:
        keep &= stamps < options.end_s - eps
    kept = stamps[keep]
    if kept.size == 0:
        raise InputError(
            {
                "start_s": f"The trim window holds no frame: the video is {info.duration_s:.2f} s long. "
                f"Choose a start before {info.duration_s:.2f} s."
            }
        )
    if options.fps is not None and options.fps < info.fps:
        # The first frame of each 1/fps bucket, counted from the first kept frame (as read_video does).
        buckets = np.floor((kept - kept[0]) * options.fps + 1e-4)
        count = int(np.unique(buckets).size)
    else:
        count = int(kept.size)
    if options.max_frames is not None:
        count = min(count, options.max_frames)
    return count


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

    @property
    def preset(self) -> str:
        return preset_for(self.model)

    @property
    def work(self) -> int:
        """Frames x expressions: the unit the model's cost grows with."""
        return self.frames * len(self.expressions)

    @property
    def memory_bytes(self) -> int:
        """Frames and masks held during the run: 3 bytes per pixel per frame, 1 per expression."""
        return self.frames * self.width * self.height * (3 + len(self.expressions))


def plan_job(
    video: str | os.PathLike | None,
    expressions: str | Sequence[str] | None,
    model: str,
    start_s: Any = None,
    end_s: Any = None,
    fps: Any = None,
    max_frames: Any = DEFAULT_MAX_FRAMES,
    opacity: Any = 0.5,
    *,
    models: Sequence[str] | None = None,
    max_gpu_seconds: float | None = None,
    timings: TimingLog | None = None,
) -> Job:
    """Check every form value and describe the run, or raise :class:`InputError` listing what to change.

    Args:
        video: path of the uploaded video (or a frame zip / image, as ``read_video`` accepts).
        expressions: one per line, or a list.
        model: a model name offered by the app.
        models: the model names the app offers (any name when None).
        max_gpu_seconds: on ZeroGPU, refuse runs whose GPU reservation would exceed this.
        timings: measured speeds that refine the GPU estimate.
    """
    problems: dict[str, str] = {}
    texts: list[str] = []
    try:
        texts = parse_expressions(expressions)
    except InputError as error:
        problems.update(error.problems)
    if models is not None and model not in models:
        problems["model"] = f"Choose one of the models offered: {', '.join(models)}."
    options: SegmentOptions | None = None
    try:
        options = segment_options(start_s, end_s, fps, max_frames, opacity)
    except InputError as error:
        problems.update(error.problems)
    info: VideoInfo | None = None
    if video is None or not str(video).strip():
        problems["video"] = "Upload a video (mp4, webm, mov, mkv, avi or gif) first."
    else:
        try:
            info = probe(video)
        except VideoReadError as error:
            problems["video"] = without_paths(str(error), video)
    if problems or info is None or options is None:
        raise InputError(problems or {"video": "Upload a video first."})

    frames = estimate_frames(info, options)  # raises InputError for an empty trim window
    job = Job(
        video=str(video),
        expressions=tuple(texts),
        model=model,
        options=options,
        frames=frames,
        width=info.width,
        height=info.height,
        source_fps=info.fps,
        has_audio=info.has_audio,
    )
    if job.memory_bytes > MEMORY_BUDGET_BYTES:
        gib = job.memory_bytes / 1024**3
        raise InputError(
            {
                "max_frames": f"{frames} frames of {info.width}x{info.height} with {len(texts)} expression(s) "
                f"need about {gib:.1f} GiB of memory (at most {MEMORY_BUDGET_BYTES / 1024**3:.0f}); lower "
                "the maximum number of frames or the frame rate, or trim the video."
            }
        )
    if max_gpu_seconds is not None:
        needed = gpu_seconds_needed(job, timings)
        if needed > max_gpu_seconds:
            fitting = max_frames_within(job, max_gpu_seconds, timings)
            raise InputError(
                {
                    "max_frames": f"{frames} frames x {len(texts)} expression(s) would need about "
                    f"{needed:.0f} s of GPU time, more than the {max_gpu_seconds:.0f} s a run may take here. "
                    f"Lower the maximum number of frames to {fitting} or less, lower the frame rate, trim "
                    "the video or use fewer expressions."
                }
            )
    return job


# ---------------------------------------------------------------------------------------------------------------
# Time estimates


@dataclass(frozen=True)
class CostModel:
    """Seconds of one run: a fixed part, a part per frame (SAM 2's image encoder, shared by all expressions),
    a part per frame and expression (BEiT-3, the mask prior, tracking) and the drawing and exporting, which
    grows with the frame's pixels times (expressions + 1)."""

    setup_s: float
    per_frame_s: float
    per_frame_expression_s: float
    per_frame_megapixel_s: float

    def seconds(self, frames: int, expressions: int, width: int, height: int) -> float:
        megapixels = width * height / 1e6
        per_frame = (
            self.per_frame_s
            + self.per_frame_expression_s * expressions
            + self.per_frame_megapixel_s * megapixels * (expressions + 1)
        )
        return self.setup_s + frames * per_frame


#: Starting points per (device kind, preset), refined by :class:`TimingLog` once runs are measured.
#: cpu/test: measured on a shared 2-core machine with one thread (360p and 720p clips, 1-3 expressions).
#: cpu/large and cpu/base: on that machine Hiera-L at 1024x1024 takes about 13 s a frame, and BEiT-3-large
#: with the mask prior about 2.7 s a frame per expression (benchmarks/results/, 300 frames, 2 threads);
#: tracking adds about a second. cuda and mps: rough figures for a datacenter GPU (fp32) and an Apple GPU,
#: not measured yet.
COST_MODELS: dict[tuple[str, str], CostModel] = {
    ("cpu", "test"): CostModel(1.0, 0.10, 0.25, 0.20),
    ("cpu", "base"): CostModel(8.0, 14.0, 2.0, 0.20),
    ("cpu", "large"): CostModel(10.0, 14.0, 4.0, 0.20),
    ("cuda", "test"): CostModel(1.0, 0.02, 0.02, 0.05),
    ("cuda", "base"): CostModel(3.0, 0.08, 0.035, 0.05),
    ("cuda", "large"): CostModel(3.0, 0.08, 0.05, 0.05),
    ("mps", "test"): CostModel(1.0, 0.05, 0.08, 0.15),
    ("mps", "base"): CostModel(5.0, 0.5, 0.15, 0.15),
    ("mps", "large"): CostModel(5.0, 0.5, 0.25, 0.15),
}


def cost_model(device_kind: str, preset: str) -> CostModel:
    """The :data:`COST_MODELS` entry; unknown presets count as large, unknown devices as the CPU."""
    device = device_kind if device_kind in ("cpu", "cuda", "mps") else "cpu"
    return COST_MODELS.get((device, preset), COST_MODELS[(device, "large")])


class TimingLog:
    """Measured speed per (device kind, preset), as a factor on the :class:`CostModel` estimate.

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

    def record(self, device_kind: str, job: Job, frames: int, seconds: float) -> None:
        """Record that ``frames`` frames of ``job`` took ``seconds`` on ``device_kind``."""
        if frames < 1 or seconds <= 0:
            return
        base = cost_model(device_kind, job.preset).seconds(
            frames, len(job.expressions), job.width, job.height
        )
        ratio = min(100.0, max(0.01, seconds / base))
        key = (device_kind, job.preset)
        with self._lock:
            old = self._factors.get(key)
            self._factors[key] = ratio if old is None else math.sqrt(old * ratio)
            self._runs[key] = self._runs.get(key, 0) + 1


def estimate_seconds(job: Job, device_kind: str, timings: TimingLog | None = None) -> float:
    """Expected seconds for ``job`` on ``device_kind`` ("cuda", "mps" or "cpu")."""
    base = cost_model(device_kind, job.preset).seconds(
        job.frames, len(job.expressions), job.width, job.height
    )
    return base * (timings.factor(device_kind, job.preset) if timings is not None else 1.0)


def gpu_seconds_needed(job: Job, timings: TimingLog | None = None) -> float:
    """The GPU reservation ``job`` deserves, before clamping to the allowed range."""
    return GPU_SAFETY_FACTOR * estimate_seconds(job, "cuda", timings) + GPU_STARTUP_SECONDS


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


def estimate_line(
    video: str | os.PathLike | None,
    expressions: str | Sequence[str] | None,
    model: str,
    start_s: Any = None,
    end_s: Any = None,
    fps: Any = None,
    max_frames: Any = DEFAULT_MAX_FRAMES,
    *,
    device_kind: str,
    device_label: str,
    timings: TimingLog | None = None,
    models: Sequence[str] | None = None,
    max_gpu_seconds: float | None = None,
) -> str:
    """The estimate shown before a run (plain text): the work, the expected time, the GPU reservation on
    ZeroGPU, or what to change first."""
    if video is None or not str(video).strip():
        return "Upload a video to see how much work it is."
    try:
        texts = parse_expressions(expressions)
    except InputError:
        texts = []
    try:
        job = plan_job(
            video,
            texts or ["(no expression yet)"],
            model,
            start_s,
            end_s,
            fps,
            max_frames,
            models=models,
            max_gpu_seconds=max_gpu_seconds,
            timings=timings,
        )
    except InputError as error:
        return "To change before running: " + " ".join(error.problems.values())
    if not texts:
        return f"{job.frames} frames selected at {job.width}x{job.height}; type at least one expression."
    line = describe_estimate(job, device_kind, device_label, timings)
    if max_gpu_seconds is not None:
        line += f" ZeroGPU reserves {gpu_duration(job, timings, max_gpu_seconds)} s for it."
    return line


def format_seconds(seconds: float) -> str:
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s"


# ---------------------------------------------------------------------------------------------------------------
# Per-session folders


_SESSION_DIR = re.compile(r"[0-9a-f]{32}")


def _session_key(session_hash: str | None) -> str:
    """A folder name for a session: a digest, since the session hash is chosen by the client."""
    return hashlib.sha256((session_hash or "no-session").encode("utf-8")).hexdigest()[:32]


class SessionFolders:
    """One temporary folder per session, a fresh sub-folder per run, a stop flag, and their removal.

    Layout: ``root/<digest of the session hash>/run-<random hex>/``. :meth:`run` hands out a run folder for
    the duration of a run and prunes the session's finished runs beyond ``keep_runs`` (the app has handed
    their files to Gradio, which serves its own copies). :meth:`remove` deletes a session's folder when the
    session ends, or as soon as its last running job finishes: Gradio reports a session as ended whenever
    its heartbeat connection drops, which a client may do in the middle of a run. :meth:`sweep` deletes the
    folders of sessions idle for ``max_idle_s``, and :meth:`close` everything.
    """

    STOP_FILE = "STOP"

    def __init__(
        self, root: str | os.PathLike | None = None, max_idle_s: float = 2 * 3600, keep_runs: int = 2
    ):
        if root is None:
            self.root = Path(tempfile.mkdtemp(prefix="mpgsam2-sessions-"))
            self._owns_root = True
        else:
            self.root = Path(root)
            self.root.mkdir(parents=True, exist_ok=True)
            self._owns_root = False
        self.max_idle_s = max_idle_s
        self.keep_runs = max(1, keep_runs)
        self._lock = threading.Lock()
        self._active: dict[str, set[Path]] = {}  # session key -> its running jobs' folders
        self._ended: set[str] = set()  # sessions to remove when their last running job ends

    def folder(self, session_hash: str | None) -> Path:
        """The session's folder (it may not exist yet)."""
        return self.root / _session_key(session_hash)

    @contextmanager
    def run(self, session_hash: str | None) -> Iterator[Path]:
        """A new, empty run folder for the duration of a run.

        Entering clears the session's stop flag and prunes its oldest finished runs; leaving removes the
        session's folder if the session ended meanwhile.
        """
        key = _session_key(session_hash)
        with self._lock:
            self._ended.discard(key)
            folder = self.folder(session_hash)
            folder.mkdir(parents=True, exist_ok=True)
            os.utime(folder)
            self.stop_flag(session_hash).unlink(missing_ok=True)
            active = self._active.setdefault(key, set())
            finished = [p for p in folder.glob("run-*") if p.is_dir() and p not in active]
            finished.sort(key=lambda p: p.stat().st_mtime)
            for old in finished[: max(0, len(finished) - self.keep_runs + 1)]:
                shutil.rmtree(old, ignore_errors=True)
            run_dir = folder / f"run-{uuid.uuid4().hex}"
            run_dir.mkdir()
            active.add(run_dir)
        try:
            yield run_dir
        finally:
            with self._lock:
                active.discard(run_dir)
                if not active:
                    del self._active[key]
                    if key in self._ended:
                        self._ended.discard(key)
                        shutil.rmtree(folder, ignore_errors=True)
                        logger.info("removed the files of an ended session")

    def running(self, session_hash: str | None) -> int:
        """How many runs of the session are in progress."""
        with self._lock:
            return len(self._active.get(_session_key(session_hash), ()))

    def stop_flag(self, session_hash: str | None) -> Path:
        """The file whose existence asks the session's current run to stop (visible across processes)."""
        return self.folder(session_hash) / self.STOP_FILE

    def request_stop(self, session_hash: str | None) -> bool:
        """Ask the session's running jobs to stop after their current frame; False if none is running."""
        with self._lock:
            if not self._active.get(_session_key(session_hash)):
                return False
            self.stop_flag(session_hash).touch()
            return True

    def remove(self, session_hash: str | None) -> bool:
        """The session ended: delete its folder now, or when its last running job ends (returns False)."""
        key = _session_key(session_hash)
        with self._lock:
            if self._active.get(key):
                self._ended.add(key)
                return False
            folder = self.folder(session_hash)
            if folder.exists():
                shutil.rmtree(folder, ignore_errors=True)
                logger.info("removed the files of an ended session")
            return True

    def sweep(self, now: float | None = None) -> list[Path]:
        """Delete the folders of sessions idle (no run started, none running) for more than ``max_idle_s``."""
        now = time.time() if now is None else now
        removed = []
        with self._lock:
            for folder in self.sessions():
                if folder.name in self._active or now - folder.stat().st_mtime <= self.max_idle_s:
                    continue
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder)
        return removed

    def sessions(self) -> list[Path]:
        """The session folders (other folders under the root are left alone)."""
        if not self.root.exists():
            return []
        return sorted(p for p in self.root.iterdir() if p.is_dir() and _SESSION_DIR.fullmatch(p.name))

    def close(self) -> None:
        """Remove every session's files (and the root, if this object made it)."""
        if self._owns_root:
            shutil.rmtree(self.root, ignore_errors=True)
        else:
            for folder in self.sessions():
                shutil.rmtree(folder, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------------------
# Models


class ModelStore:
    """Loads each model once per process and keeps it; remembers the last error per model.

    Where a variant's weights come from, first match wins: ``$MPGSAM2_WEIGHTS/<variant>`` (a folder laid out
    like the hub repository), ``checkpoints/<variant>`` in the repository, then the hub (its local cache,
    or a download). Other names (a hub id, a folder, a weights file, ``"test"``) go to the loader unchanged.

    Args:
        loader: called as ``loader(source, device=device)``; ``VideoPredictor.from_pretrained`` in the app.
        checkpoints_dir: the repository's ``checkpoints/`` folder.
        env: where ``MPGSAM2_WEIGHTS`` is read.
        device: passed to the loader (None: the best available).
    """

    def __init__(
        self,
        loader: Callable[..., Any],
        checkpoints_dir: str | os.PathLike | None = None,
        env: Mapping[str, str] | None = None,
        device: str | None = None,
    ) -> None:
        self.loader = loader
        self.checkpoints_dir = Path(checkpoints_dir) if checkpoints_dir is not None else None
        self.env = os.environ if env is None else env
        self.device = device
        self._models: dict[str, Any] = {}
        self._errors: dict[str, str] = {}
        self._lock = threading.Lock()

    def source_for(self, name: str) -> str:
        if name in MODEL_VARIANTS:
            candidates = []
            if self.env.get("MPGSAM2_WEIGHTS"):
                candidates.append(Path(self.env["MPGSAM2_WEIGHTS"]).expanduser() / name)
            if self.checkpoints_dir is not None:
                candidates.append(self.checkpoints_dir / name)
            for folder in candidates:
                if folder.is_dir() and any(folder.iterdir()):
                    return str(folder)
        return name

    def get(self, name: str) -> Any:
        """The loaded model; loads it on first use. Raises the loader's error (e.g. ``CheckpointError``)."""
        with self._lock:
            if name in self._models:
                return self._models[name]
            try:
                model = self.loader(self.source_for(name), device=self.device)
            except Exception as error:
                self._errors[name] = str(error)
                raise
            self._errors.pop(name, None)
            self._models[name] = model
            logger.info("model %s loaded", name)
            return model

    def try_load(self, name: str) -> str | None:
        """Load ``name`` if possible; the error message when it cannot be loaded (the app starts anyway)."""
        try:
            self.get(name)
        except Exception as error:  # a missing download, a broken file: reported, never fatal at start-up
            logger.warning("model %s is not available: %s", name, error)
            return str(error)
        return None

    def loaded(self, name: str) -> bool:
        return name in self._models

    def error(self, name: str) -> str | None:
        return self._errors.get(name)


def model_notice(model: str, untrained: bool, error: str | None) -> str:
    """Markdown for the banner above the form: loud for the untrained model, advice for missing weights."""
    if error is not None:
        return (
            f"### The `{model}` model could not be loaded\n\n{error}\n\n"
            "The app works once the weights are there: download them with "
            "`huggingface-cli download ReeF2025/MPG-SAM2` (or put a variant folder under `checkpoints/`, or "
            "point `MPGSAM2_WEIGHTS` at a folder holding `ytvos/`, `mevis/`, `tiny/`) and restart. "
            "`python app.py --model test` runs the whole interface with an untrained model meanwhile."
        )
    if untrained:
        return (
            "### ⚠️ UNTRAINED TEST MODEL: random weights, the masks mean nothing\n\n"
            "This app was started with `--model test`, which exercises every part of the interface without "
            "the real weights. Start it with `--model ytvos` (the default) for real results."
        )
    return ""


# ---------------------------------------------------------------------------------------------------------------
# Result text and JSON (plain text: expressions are never interpreted as markup)


def _spans_text(spans: Sequence[Sequence[float]]) -> str:
    return ", ".join(f"{a:.2f}-{b:.2f} s" for a, b in spans)


def summary_text(outputs: SegmentOutputs, seconds: float | None = None, untrained: bool = False) -> str:
    """A plain-text report of a run: what was processed, then one paragraph per expression, including a
    clear "no match in any frame" line for expressions that found nothing."""
    count = len(outputs.expressions)
    head = f"{outputs.num_frames} frames x {count} expression{'s' if count != 1 else ''}"
    if seconds is not None:
        head += f" in {format_seconds(seconds)}"
    lines = [head + f" ({outputs.width}x{outputs.height}, {outputs.fps:.2f} fps)."]
    if outputs.stopped:
        lines.append(
            f"Stopped early: the results cover the first {outputs.num_frames} of {outputs.frames_requested} "
            "frames."
        )
    if untrained:
        lines.append("UNTRAINED TEST MODEL: random weights, these masks mean nothing.")
    for k, item in enumerate(outputs.summaries):
        name = color_name(k, count)
        if item.no_match:
            lines.append(f'[{name}] No match for "{item.expression}" in any frame.')
            continue
        assert item.first_visible_s is not None and item.last_visible_s is not None
        text = (
            f'[{name}] "{item.expression}": in {item.frames_with_mask} of {outputs.num_frames} frames, '
            f"from {item.first_visible_s:.2f} s to {item.last_visible_s:.2f} s, "
            f"{item.mean_area_percent:.1f}% of the frame on average"
        )
        if item.absent_spans_s:
            text += f"; not visible {_spans_text(item.absent_spans_s)}"
        lines.append(text + ".")
    return "\n".join(lines)


def result_json(
    outputs: SegmentOutputs, job: Job, seconds: float, device_label: str, untrained: bool
) -> dict[str, Any]:
    """What the ``/segment`` API returns next to the files."""
    return {
        "model": job.model,
        "untrained": untrained,
        "device": device_label,
        "seconds": round(seconds, 2),
        "video": {
            "frames": outputs.num_frames,
            "frames_requested": outputs.frames_requested,
            "stopped": outputs.stopped,
            "fps": outputs.fps,
            "width": outputs.width,
            "height": outputs.height,
        },
        "expressions": [
            {
                "expression": item.expression,
                "color": list(item.color),
                "color_name": color_name(k, len(outputs.summaries)),
                "frames_with_mask": item.frames_with_mask,
                "frames_with_object": item.frames_with_object,
                "first_visible_s": item.first_visible_s,
                "last_visible_s": item.last_visible_s,
                "mean_area_percent": round(item.mean_area_percent, 3),
                "absent_spans_s": [list(span) for span in item.absent_spans_s],
                "no_match": item.no_match,
            }
            for k, item in enumerate(outputs.summaries)
        ],
        "messages": outputs.no_match_messages(),
    }


def download_files(outputs: SegmentOutputs) -> list[str]:
    """The files offered for download, the bundle first."""
    return [
        str(outputs.bundle_zip),
        str(outputs.overlay_video),
        str(outputs.palette_zip),
        str(outputs.rle_json),
    ]
