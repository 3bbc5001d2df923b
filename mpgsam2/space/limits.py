"""Limits, names and environment switches of the Space."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping

from .. import render
from ..checkpoints.hub import TOY_MODEL  # the app's model when no weights can be loaded

#: Released checkpoints of the hub repository ``ReeF2025/MPG-SAM2``.
MODEL_VARIANTS: tuple[str, ...] = ("ytvos", "mevis", "tiny")
#: The tiny random preset: runs everything end to end, but its masks mean nothing.
TEST_MODEL = "test"
#: Preset (architecture) of each model name, for the cost model before a model is loaded.
MODEL_PRESETS: dict[str, str] = {
    "ytvos": "large",
    "mevis": "large",
    "tiny": "base",
    TEST_MODEL: "test",
    TOY_MODEL: "toy",
}

MAX_EXPRESSIONS = 10  # each expression adds a BEiT-3 pass per frame and a tracking step per frame
MAX_EXPRESSION_CHARS = 200
MAX_FRAMES = 600  # the frame cap's upper bound
DEFAULT_MAX_FRAMES = 150
#: Decoded frames plus one boolean mask per expression and frame stay in memory during a run.
MEMORY_BUDGET_BYTES = 6 * 1024**3
#: The longest part of a video one run processes, in seconds (a 10-minute upload must be trimmed first).
MAX_CLIP_SECONDS = float(os.environ.get("MPGSAM2_MAX_CLIP_SECONDS", "120"))
#: Frames whose longer side exceeds this are downscaled while decoding (8K clips).
MAX_SIDE = int(os.environ.get("MPGSAM2_MAX_SIDE", "1920"))

#: ZeroGPU reservations, in seconds: at least this much, and never more (longer runs are refused up front).
#: ZeroGPU refuses a reservation longer than it allows the visitor (about 300 s logged in, less for
#: anonymous visitors, whose daily quota is a few minutes in all): 120 s fits both, and shorter reservations
#: get a better place in ZeroGPU's queue.
MIN_GPU_SECONDS = 20
MAX_GPU_SECONDS = int(os.environ.get("MPGSAM2_MAX_GPU_SECONDS", "120"))
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
    "points",
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


def offered_variants(env: Mapping[str, str] = os.environ) -> tuple[str, ...]:
    """The released variants the app offers: ``MPGSAM2_MODELS`` (comma-separated), by default all three. On
    ZeroGPU each one offered is loaded at start-up and moved to every GPU worker it starts."""
    names = [name.strip() for name in env.get("MPGSAM2_MODELS", ",".join(MODEL_VARIANTS)).split(",")]
    return tuple(name for name in names if name in MODEL_VARIANTS)


def model_choices(default: str, offered: tuple[str, ...] | None = None) -> list[str]:
    """The models the app offers, ``default`` first: it and the offered released variants (so the untrained
    test model, or a custom checkpoint, is offered only when the app was started with it)."""
    offered = offered_variants() if offered is None else offered
    return [default, *(name for name in offered if name != default)]


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
