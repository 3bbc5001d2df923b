"""Datasets by name, built from the ``data`` section of a training configuration."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from torch.utils.data import ConcatDataset, Dataset

from .augment import ClipAugmentation
from .layouts import VIDEO_FORMATS
from .refcoco import REFCOCO_NAMES, RefCOCO
from .samples import RawClip
from .synthetic import write_synthetic_refcoco, write_synthetic_videos
from .toy import prepare_toy_split
from .toy.writer import no_wait
from .videos import VIDEO_DATASETS, ReferringVideoDataset, no_lookalike_frames

#: What a training or evaluation dataset can be: a benchmark's video folders, or COCO-style RefCOCO.
DATASET_FORMATS = (*VIDEO_FORMATS, "refcoco")


@dataclass(frozen=True)
class DatasetSpec:
    """One training or evaluation dataset.

    ``format``: ``ytvos``, ``mevis``, ``davis`` (video folders) or ``refcoco`` (COCO-style RefCOCO/+/g).
    ``synthetic``: write a tiny synthetic dataset of that format into ``root`` first (smoke tests).
    ``toy``: write generated toy clips (:mod:`mpgsam2.datasets.toy`, ``ytvos`` layout) into ``root`` first,
    unless that split is there: ``num_videos``, ``seed``, ``jpeg_quality`` and fields of
    :class:`mpgsam2.datasets.toy.ToyConfig`, e.g. ``{"num_videos": 2000, "seed": 0, "num_frames": 10}``.
    ``repeat``: how many times the dataset is listed when several are concatenated (sampling weight).
    ``lookalike_repeat``: how many times its view anchored on the frames where a target is hidden while a
    look-alike is in view (:meth:`ReferringVideoDataset.anchored_on_lookalikes`) is listed beside it, so that
    the main loop's windows hold such frames more often than the data's own share of them (the grounding
    stages read the data without it and weigh those frames by their own ``lookalike_share``).
    """

    format: str
    root: str
    split: str = "train"
    num_frames: int = 5
    names: tuple[str, ...] = REFCOCO_NAMES
    lowercase: bool | None = None  # default: True for videos, False for RefCOCO (as the official code)
    max_items: int | None = None  # videos (video formats) or expressions per file (RefCOCO)
    repeat: int = 1
    lookalike_repeat: int = 0
    synthetic: bool = False
    toy: dict | None = None
    # Evaluation only: frames per independent clip (MeViS: 24); None = whole videos.
    clip_length: int | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.format not in DATASET_FORMATS:
            raise ValueError(f"Unknown dataset format {self.format!r}; choose one of {DATASET_FORMATS}.")
        if self.num_frames < 1 or self.repeat < 1:
            raise ValueError("num_frames and repeat must be at least 1.")
        if self.lookalike_repeat < 0 or (self.lookalike_repeat and self.format == "refcoco"):
            raise ValueError("lookalike_repeat must be at least 0, and 0 for RefCOCO (it has no videos).")
        if self.toy is not None and (self.format != "ytvos" or self.synthetic):
            raise ValueError("Toy datasets are written in the ytvos layout, and not as synthetic ones too.")

    @classmethod
    def from_dict(cls, data: dict) -> DatasetSpec:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"Unknown dataset option(s) {unknown}; allowed: {sorted(known)}.")
        values = dict(data)
        if "names" in values:
            values["names"] = tuple(values["names"])
        return cls(**values)


def prepare_synthetic(spec: DatasetSpec) -> None:
    """Write the synthetic dataset a spec asks for, unless it is already there."""
    root = Path(spec.root)
    if spec.format == "refcoco":
        if not all((root / n / f"instances_{n}_{spec.split}.json").is_file() for n in spec.names):
            write_synthetic_refcoco(root, names=tuple(spec.names), split=spec.split)
    elif not (root / spec.split / "JPEGImages").is_dir():
        write_synthetic_videos(root, layout=spec.format, split=spec.split)


def prepare_generated(
    spec: DatasetSpec, rank: int = 0, world_size: int = 1, barrier: Callable[[], None] = no_wait
) -> None:
    """Write the synthetic or toy data a spec asks for, unless it is already there.

    In a distributed run every process calls this at once with its ``rank`` and a ``barrier`` that returns
    when all have reached it: the processes share the writing of toy clips, the synthetic data is written by
    rank 0 alone, and none returns before the data is complete.
    """
    if spec.synthetic:
        if rank == 0:
            prepare_synthetic(spec)
        if world_size > 1:
            barrier()
    if spec.toy is not None:
        prepare_toy_split(spec.root, spec.split, spec.toy, rank, world_size, barrier)


def build_dataset(
    spec: DatasetSpec,
    transform: Callable[[RawClip], object] | None = None,
    augment: bool = True,
    seed: int = 0,
) -> Dataset:
    """The dataset of one spec, with the official augmentation when ``augment`` is set."""
    prepare_generated(spec)
    if spec.format == "refcoco":
        return RefCOCO(
            spec.root,
            names=spec.names,
            split=spec.split,
            augment=ClipAugmentation(photometric=False) if augment else None,
            transform=transform,
            lowercase=False if spec.lowercase is None else spec.lowercase,
            seed=seed,
            max_items=spec.max_items,
            **spec.extra,
        )
    return VIDEO_DATASETS[spec.format](
        spec.root,
        split=spec.split,
        num_frames=spec.num_frames,
        augment=ClipAugmentation() if augment else None,
        transform=transform,
        lowercase=True if spec.lowercase is None else spec.lowercase,
        seed=seed,
        max_videos=spec.max_items,
        **spec.extra,
    )


class TrainingSet(ConcatDataset):
    """Several datasets concatenated (each ``repeat`` times), with one :meth:`set_epoch` for all."""

    def __init__(self, datasets: list[Dataset]):
        super().__init__(datasets)

    def set_epoch(self, epoch: int) -> None:
        for dataset in {id(d): d for d in self.datasets}.values():
            if hasattr(dataset, "set_epoch"):
                dataset.set_epoch(epoch)

    def anchored_on_lookalikes(self) -> TrainingSet | None:
        """The items of its video datasets anchored on the frames where the target is hidden with a look-alike
        in view (:meth:`ReferringVideoDataset.anchored_on_lookalikes`), or None when no dataset records one.
        Views already listed (``lookalike_repeat``) are not anchored again: each dataset weighs its ``repeat``."""
        views = [
            d.anchored_on_lookalikes()
            if isinstance(d, ReferringVideoDataset) and not d.is_anchored_view
            else None
            for d in self.datasets
        ]
        views = [view for view in views if view is not None]
        return TrainingSet(views) if views else None


def build_training_set(
    specs: list[DatasetSpec], transform: Callable[[RawClip], object] | None, augment: bool, seed: int
) -> TrainingSet:
    """The concatenation of every training dataset."""
    if not specs:
        raise ValueError("The configuration lists no training dataset (data.train).")
    datasets = []
    for spec in specs:
        dataset = build_dataset(spec, transform, augment, seed)
        datasets += [dataset] * spec.repeat
        if spec.lookalike_repeat:
            anchored = dataset.anchored_on_lookalikes()
            if anchored is None:
                raise no_lookalike_frames("lookalike_repeat", f"a split ({spec.root})")
            datasets += [anchored] * spec.lookalike_repeat
    return TrainingSet(datasets)


def build_eval_set(spec: DatasetSpec) -> ReferringVideoDataset:
    """A video dataset read for evaluation (every frame of every video, no augmentation)."""
    if spec.format == "refcoco":
        raise ValueError("Evaluation reads video datasets (ytvos, mevis, davis), not RefCOCO.")
    prepare_generated(spec)
    return VIDEO_DATASETS[spec.format](
        spec.root, split=spec.split, num_frames=1, lowercase=False, max_videos=spec.max_items
    )


__all__ = [
    "DATASET_FORMATS",
    "DatasetSpec",
    "TrainingSet",
    "build_dataset",
    "build_eval_set",
    "build_training_set",
    "prepare_generated",
    "prepare_synthetic",
]
