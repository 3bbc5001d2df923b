"""Training data: benchmark readers, the official clip sampling and augmentation, model inputs.

* :class:`RefYouTubeVOS`, :class:`MeViS`, :class:`RefDAVIS17` (video folders) and :class:`RefCOCO`
  (COCO-style image pre-training data) give :class:`RawClip` items;
* :func:`sample_clip_frames` is the official anchor / local / global frame sampling;
* :class:`ClipAugmentation` flips (swapping "left" and "right" in the expression) and distorts colours;
* :class:`ClipTransform` makes the model's inputs (:class:`TrainingClip`);
* :func:`write_synthetic_videos` / :func:`write_synthetic_refcoco` write tiny datasets in these layouts.
"""

from __future__ import annotations

from .augment import ClipAugmentation, horizontal_flip, photometric_distort, swap_left_right
from .inputs import ClipTransform, collate_clips
from .refcoco import REFCOCO_NAMES, RefCOCO
from .registry import (
    FORMATS,
    DatasetSpec,
    TrainingSet,
    build_dataset,
    build_eval_set,
    build_training_set,
)
from .sampling import anchor_frames, sample_clip_frames
from .synthetic import write_synthetic_refcoco, write_synthetic_videos
from .types import RawClip, TrainingClip
from .videos import EvalVideo, MeViS, RefDAVIS17, ReferringVideoDataset, RefYouTubeVOS

__all__ = [
    "FORMATS",
    "REFCOCO_NAMES",
    "ClipAugmentation",
    "ClipTransform",
    "DatasetSpec",
    "EvalVideo",
    "MeViS",
    "RawClip",
    "RefCOCO",
    "RefDAVIS17",
    "RefYouTubeVOS",
    "ReferringVideoDataset",
    "TrainingClip",
    "TrainingSet",
    "anchor_frames",
    "build_dataset",
    "build_eval_set",
    "build_training_set",
    "collate_clips",
    "horizontal_flip",
    "photometric_distort",
    "sample_clip_frames",
    "swap_left_right",
    "write_synthetic_refcoco",
    "write_synthetic_videos",
]
