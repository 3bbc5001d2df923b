"""The configuration of a run (:class:`TrainConfig`): JSON/YAML files, ``"extends"`` and ``--set`` overrides."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..datasets import DatasetSpec
from ..devices import parse_dtype
from .categories import CategoriesSpec
from .grounding import GroundingSpec
from .losses import LossWeights
from .optim import LR_DECAYS
from .prepare import OFFICIAL_DROPOUT


def _check_keys(section: str, data: dict, allowed: Sequence[str]) -> None:
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise ValueError(f"Unknown option(s) {unknown} in '{section}'; allowed: {sorted(allowed)}.")


#: How a preset's BEiT-3 vision position table can start (``model.vision_positions``).
VISION_POSITION_STARTS = ("random", "sine_cosine")


@dataclass(frozen=True)
class ModelSpec:
    """Where the weights to train come from, and the ablation switches.

    ``init``: a preset (``large``, ``base``, ``test``, ``toy``: random weights, or SAM 2 / BEiT-3
    checkpoints below) or a trained model (a variant ``ytvos``/``mevis``/``tiny``, a hub id, a checkpoint
    folder or file).
    ``aggregator`` / ``mask_prior``: fields of :class:`mpgsam2.modeling.config.AggregatorConfig` /
    :class:`mpgsam2.modeling.config.MaskPriorConfig` to change (e.g. ``{"object_local": false}``,
    ``{"num_pixel_layers": 2}``, ``{"dense_prompt": false}``); layers a checkpoint lacks start random.
    ``sam2``: fields of :class:`mpgsam2.modeling.config.SAM2Config` to change, e.g. ``{"image_size": 256}``:
    SAM 2's input side, which no weight's shape depends on, so a trained model goes on at another size.
    """

    init: str = "large"
    seed: int | None = None  # presets: None = PyTorch's initialisation, an int = mpgsam2.modeling.random_init
    sam2_checkpoint: str | None = None  # e.g. sam2_hiera_large.pt (SAM 2.0), for presets
    beit3_checkpoint: str | None = None  # e.g. beit3_large_patch16_224.pth, for presets
    tokenizer: str | None = None  # beit3.spm or a folder; default: the init checkpoint's
    aggregator: dict = field(default_factory=dict)
    mask_prior: dict = field(default_factory=dict)
    sam2: dict = field(default_factory=dict)
    # Not official, presets only: how BEiT-3's vision position table starts. "random" (the rest of the
    # weights' rule) or "sine_cosine": 2-D codes of the patch grid (mpgsam2.modeling.beit3.sine_cosine_positions).
    vision_positions: str = "random"

    def __post_init__(self) -> None:
        if self.vision_positions not in VISION_POSITION_STARTS:
            raise ValueError(
                f"Unknown model.vision_positions {self.vision_positions!r}; "
                f"choose one of {VISION_POSITION_STARTS}."
            )


@dataclass(frozen=True)
class OptimSpec:
    """AdamW's settings and the learning-rate schedule (see :mod:`mpgsam2.training.optim`)."""

    lr: float = 2e-6
    lr_fast: float = 5e-5
    # Not official: BEiT-3's own rate (None: ``lr``), to keep what a grounding stage taught it.
    lr_encoder: float | None = None
    # Not official: the mask prior generator's own rate (None: that of its official groups), likewise.
    lr_prior: float | None = None
    weight_decay: float = 5e-4
    # The official scripts pass 0.1, but under DeepSpeed ZeRO-2 the clipping sees no gradients; 0 = off.
    clip_max_norm: float = 0.0
    # Not official (its rates are constant), for training from scratch: linear warm-up over this many steps,
    # and "cosine" decay to 0 at train.max_steps.
    warmup_steps: int = 0
    decay: str = "none"

    def __post_init__(self) -> None:
        if self.decay not in LR_DECAYS:
            raise ValueError(f"Unknown optim.decay {self.decay!r}; choose one of {LR_DECAYS}.")
        if self.warmup_steps < 0:
            raise ValueError("optim.warmup_steps must be at least 0.")


@dataclass(frozen=True)
class ScheduleSpec:
    epochs: int = 6
    max_steps: int | None = None  # stop after this many optimiser steps (overrides epochs when reached)
    batch_size: int = 1  # clips per process and step (official: 1 for videos, 8 for RefCOCO)
    num_workers: int = 4
    precision: str = "fp32"  # or "bf16" (autocast; fp32 master weights)
    gradient_checkpointing: bool = False
    # The official recipe keeps SAM 2's pre-trained image encoder frozen; false trains it (from scratch).
    freeze_image_encoder: bool = True
    dropout: float = OFFICIAL_DROPOUT
    augment: bool = True
    seed: int = 42
    save_every_steps: int | None = None  # also save every N steps (always at each epoch's end)
    keep_checkpoints: int = 2  # older step checkpoints are deleted (0 keeps all)
    log_every: int = 10
    device: str | None = None  # default: cuda:LOCAL_RANK, else the best available
    find_unused_parameters: bool = True  # DDP: parts unused on some steps (e.g. 1-frame clips)


@dataclass(frozen=True)
class TrainConfig:
    """Everything a run needs; :func:`load_config` reads it from JSON (or YAML when PyYAML is present)."""

    output_dir: str
    model: ModelSpec = field(default_factory=ModelSpec)
    train_data: tuple[DatasetSpec, ...] = ()
    eval_data: DatasetSpec | None = None
    optim: OptimSpec = field(default_factory=OptimSpec)
    loss: LossWeights = field(default_factory=LossWeights)
    schedule: ScheduleSpec = field(default_factory=ScheduleSpec)
    # Pre-training stages before the main loop, in this order (off by default).
    categories: CategoriesSpec = field(default_factory=CategoriesSpec)
    grounding: GroundingSpec = field(default_factory=GroundingSpec)
    # The same stage again on clips of several frames, after the first: the prior generator refines all
    # frames of a clip together, which single frames never teach it (see ``docs/TRAINING.md``).
    clip_grounding: GroundingSpec = field(default_factory=GroundingSpec)
    raw: dict = field(default_factory=dict, compare=False)  # the merged configuration, saved with checkpoints

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        """Parse the JSON layout (sections ``model``, ``data``, ``optim``, ``loss``, ``train``, ``categories``,
        ``grounding``, ``clip_grounding``)."""
        _check_keys(
            "top level",
            data,
            [
                "output_dir",
                "model",
                "data",
                "optim",
                "loss",
                "train",
                "categories",
                "grounding",
                "clip_grounding",
                "extends",
            ],
        )
        if "output_dir" not in data:
            raise ValueError("The configuration needs an 'output_dir'.")
        sections = {
            "model": ModelSpec,
            "optim": OptimSpec,
            "loss": LossWeights,
            "train": ScheduleSpec,
            "categories": CategoriesSpec,
            "grounding": GroundingSpec,
            "clip_grounding": GroundingSpec,
        }
        parsed = {}
        for key, kind in sections.items():
            values = dict(data.get(key) or {})
            _check_keys(key, values, [f.name for f in dataclasses.fields(kind)])
            try:
                parsed[key] = kind(**values)
            except ValueError as error:
                if kind is not GroundingSpec:
                    raise
                # One class serves two sections, so its messages name the setting and this names the section.
                raise ValueError(f"{key}.{error}") from None
        data_section = dict(data.get("data") or {})
        _check_keys("data", data_section, ["train", "eval"])
        output_dir = str(data["output_dir"])

        def dataset(entry: dict) -> DatasetSpec:
            # "{output_dir}" in a root places (synthetic) data inside the run.
            return DatasetSpec.from_dict(
                {**entry, "root": str(entry.get("root", "")).replace("{output_dir}", output_dir)}
            )

        train_specs = tuple(dataset(d) for d in data_section.get("train") or [])
        eval_spec = dataset(data_section["eval"]) if data_section.get("eval") else None
        schedule = parsed["train"]
        parse_dtype(schedule.precision)
        if schedule.batch_size < 1 or schedule.epochs < 0:
            raise ValueError("train.batch_size must be at least 1 and train.epochs at least 0.")
        if parsed["optim"].decay != "none" and schedule.max_steps is None:
            raise ValueError(
                f"optim.decay {parsed['optim'].decay!r} needs train.max_steps (where it reaches 0)."
            )
        config = cls(
            output_dir=output_dir,
            model=parsed["model"],
            train_data=train_specs,
            eval_data=eval_spec,
            optim=parsed["optim"],
            loss=parsed["loss"],
            schedule=schedule,
            categories=parsed["categories"],
            grounding=parsed["grounding"],
            clip_grounding=parsed["clip_grounding"],
            raw=copy.deepcopy({k: v for k, v in data.items() if k != "extends"}),
        )
        if config.keeps_categories and not config.categories.steps:
            raise ValueError(
                "grounding.categories, clip_grounding.categories and loss.categories keep the categories "
                "stage's loss on: they need categories.steps above 0 (or set them to 0)."
            )
        return config

    @property
    def keeps_categories(self) -> bool:
        """Whether a later stage keeps the categories stage's head, and its loss, on."""
        return bool(self.grounding.categories or self.clip_grounding.categories or self.loss.categories)


def _deep_merge(base: dict, update: dict) -> dict:
    merged = dict(base)
    for key, value in update.items():
        merged[key] = (
            _deep_merge(merged[key], value)
            if isinstance(value, dict) and isinstance(merged.get(key), dict)
            else value
        )
    return merged


def _read_config_file(path: Path) -> dict:
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError as error:
            raise ValueError(
                f"{path} is YAML but PyYAML is not installed; use a JSON configuration."
            ) from error
        data = yaml.safe_load(text)
    else:
        data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold an object (a mapping of sections).")
    if "extends" in data:
        parent = (path.parent / data["extends"]).resolve()
        data = _deep_merge(_read_config_file(parent), {k: v for k, v in data.items() if k != "extends"})
    return data


def apply_overrides(data: dict, overrides: Sequence[str]) -> dict:
    """``["train.max_steps=10", "model.aggregator.object_local=false", "data.train.0.num_frames=3"]`` ->
    a changed copy of ``data`` (a number selects a list item).

    Values are parsed as JSON when they can be (numbers, booleans, null, lists, objects), else kept as text.
    """
    data = copy.deepcopy(data)
    for override in overrides:
        key, sep, text = override.partition("=")
        if not sep or not key:
            raise ValueError(f"Override {override!r} must look like section.key=value.")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        target = data
        *parents, leaf = key.split(".")
        for part in [*parents, leaf]:
            if isinstance(target, list):
                if not part.isdigit() or int(part) >= len(target):
                    raise ValueError(f"Override {override!r}: no item {part!r} in a list of {len(target)}.")
                index: int | str = int(part)
            elif isinstance(target, dict):
                index = part
            else:
                raise ValueError(f"Override {override!r}: {part!r} is below a value, not a section.")
            if part is leaf:
                target[index] = value
            else:
                if isinstance(target, dict) and not isinstance(target.get(index), dict | list):
                    target[index] = {}
                target = target[index]
    return data


def load_config(path: str | os.PathLike, overrides: Sequence[str] = ()) -> TrainConfig:
    """Read a training configuration (JSON, or YAML with PyYAML; ``"extends"`` merges a parent file)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No configuration file at {path}.")
    return TrainConfig.from_dict(apply_overrides(_read_config_file(path), overrides))
