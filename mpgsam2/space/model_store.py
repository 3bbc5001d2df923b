"""The model store: each model loaded once per process, and why one could not be loaded."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .limits import MODEL_VARIANTS

logger = logging.getLogger(__name__)


class ModelUnavailable(RuntimeError):
    """A model that is not loaded and cannot be loaded now; the message says why."""


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
        lazy: load a model on its first use. Off on ZeroGPU, where models must be loaded at start-up in the
            main thread (its torch patching holds there only): a model that did not load then stays
            unavailable, with its start-up error.
    """

    def __init__(
        self,
        loader: Callable[..., Any],
        checkpoints_dir: str | os.PathLike | None = None,
        env: Mapping[str, str] | None = None,
        device: str | None = None,
        lazy: bool = True,
    ) -> None:
        self.loader = loader
        self.checkpoints_dir = Path(checkpoints_dir) if checkpoints_dir is not None else None
        self.env = os.environ if env is None else env
        self.device = device
        self.lazy = lazy
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
        """The loaded model; loads it on first use when ``lazy``. Raises the loader's error (e.g.
        ``CheckpointError``), or :class:`ModelUnavailable` for a model not loaded at start-up."""
        with self._lock:
            if name in self._models:
                return self._models[name]
            if not self.lazy:
                raise ModelUnavailable(self._errors.get(name) or f"The {name!r} model was not loaded here.")
            return self._load(name)

    def load(self, name: str) -> Any:
        """Load ``name`` now (at start-up), whether lazy or not."""
        with self._lock:
            if name in self._models:
                return self._models[name]
            return self._load(name)

    def _load(self, name: str) -> Any:
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
            self.load(name)
        except Exception as error:  # a missing download, a broken file: reported, never fatal at start-up
            logger.warning("model %s is not available: %s", name, error)
            return str(error)
        return None

    def loaded(self, name: str) -> bool:
        return name in self._models

    def error(self, name: str) -> str | None:
        return self._errors.get(name)


def model_notice(
    model: str,
    untrained: bool,
    error: str | None,
    toy: bool = False,
    fell_back_from: str | None = None,
    fallback_reason: str | None = None,
) -> str:
    """Markdown for the banner above the form: loud for the untrained model, what the toy model is, advice
    for missing weights.

    Args:
        model: the model the app runs with.
        untrained: it has random weights (``test``).
        error: why it could not be loaded (None when it was).
        toy: it is the toy model, trained on generated shapes.
        fell_back_from: the model asked for, which could not be loaded, when the app runs the toy model in
            its place; fallback_reason: why it could not be loaded.
    """
    get_weights = (
        "download them with `huggingface-cli download ReeF2025/MPG-SAM2` (or put a variant folder under "
        "`checkpoints/`, or point `MPGSAM2_WEIGHTS` at a folder holding `ytvos/`, `mevis/`, `tiny/`) and restart"
    )
    if error is not None:
        return (
            f"### The `{model}` model could not be loaded\n\n{error}\n\n"
            f"The app works once the weights are there: {get_weights}. "
            "`python app.py --model toy` runs the interface with the small toy model meanwhile."
        )
    if untrained:
        return (
            "### ⚠️ UNTRAINED TEST MODEL: random weights, the masks mean nothing\n\n"
            "This app was started with `--model test`, which exercises every part of the interface without "
            "the real weights. Start it with `--model ytvos` (the default) for real results."
        )
    if toy:
        reason = ""
        if fell_back_from is not None:
            reason = f"The `{fell_back_from}` model could not be loaded, so the app runs the toy model"
            reason += f": {fallback_reason}\n\n" if fallback_reason else ".\n\n"
        return (
            "### Toy model: it knows coloured shapes, not real videos\n\n"
            f"{reason}The toy model is MPG-SAM 2 at a small size (3.6 M parameters), trained on this project's "
            'generated clips of moving shapes. Try the "Toy shapes" example: expressions such as '
            '"the green circle" or "the yellow circle that goes behind the big shape". On real videos its masks mean little. '
            f"For the released models, {get_weights}."
        )
    return ""
