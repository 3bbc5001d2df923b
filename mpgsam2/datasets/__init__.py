"""Datasets: benchmark folders read one way for inference, evaluation and training, and training data.

* :mod:`.layouts` - Ref-YouTube-VOS, MeViS and Ref-DAVIS17 folders (:class:`BenchmarkSplit`);
  :mod:`.submission` - predictions in each benchmark's submission layout;
* :mod:`.videos` (video clips) and :mod:`.refcoco` (COCO-style images) - training items (:class:`RawClip`);
* :mod:`.sampling` - the official anchor / local / global frame sampling; :mod:`.augment` - flips (swapping
  "left" and "right" in the expression) and colour distortion; :mod:`.transforms` - the model's inputs
  (:class:`TrainingClip`);
* :mod:`.object_categories` - single frames with the category of the object under each patch (from
  Ref-YouTube-VOS's ``meta.json``), for the categories pre-training stage;
* :mod:`.registry` - datasets by name from a training configuration (:class:`DatasetSpec`);
* :mod:`.synthetic` - tiny datasets in these layouts for tests and smoke runs;
* :mod:`.toy` - a generated dataset of moving shapes with unambiguous expressions, in the Ref-YouTube-VOS
  layout, on which a small model learns from scratch on a CPU (``configs/toy.json``).
"""

from __future__ import annotations

from .augment import ClipAugmentation, horizontal_flip, photometric_distort, swap_left_right
from .layouts import VIDEO_FORMATS, BenchmarkSplit, VideoExpressions
from .refcoco import REFCOCO_NAMES, RefCOCO
from .registry import (
    DATASET_FORMATS,
    DatasetSpec,
    TrainingSet,
    build_dataset,
    build_eval_set,
    build_training_set,
)
from .samples import RawClip, TrainingClip
from .sampling import anchor_frames, sample_clip_frames
from .submission import write_davis_annotators, write_expression_masks
from .synthetic import write_synthetic_refcoco, write_synthetic_videos
from .toy import ToyConfig, generate_toy_clip, write_toy_dataset
from .transforms import ClipTransform, collate_clips
from .videos import MeViS, RefDAVIS17, ReferringVideoDataset, RefYouTubeVOS

__all__ = [
    "DATASET_FORMATS",
    "REFCOCO_NAMES",
    "VIDEO_FORMATS",
    "BenchmarkSplit",
    "ClipAugmentation",
    "ClipTransform",
    "DatasetSpec",
    "MeViS",
    "RawClip",
    "RefCOCO",
    "RefDAVIS17",
    "RefYouTubeVOS",
    "ReferringVideoDataset",
    "ToyConfig",
    "TrainingClip",
    "TrainingSet",
    "VideoExpressions",
    "anchor_frames",
    "build_dataset",
    "build_eval_set",
    "build_training_set",
    "collate_clips",
    "generate_toy_clip",
    "horizontal_flip",
    "photometric_distort",
    "sample_clip_frames",
    "swap_left_right",
    "write_davis_annotators",
    "write_expression_masks",
    "write_synthetic_refcoco",
    "write_synthetic_videos",
    "write_toy_dataset",
]
