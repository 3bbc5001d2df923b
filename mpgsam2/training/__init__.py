"""Training and evaluation of MPG-SAM 2: the official recipe on one GPU, several (``torchrun``), or a CPU.

``python -m mpgsam2 train CONFIG`` (see :func:`add_train_parser`) reads a JSON configuration
(:class:`TrainConfig`, examples in ``configs/``) and runs :func:`train`. The pieces, usable on their own:

* :func:`video_forward` - the official training forward of one clip: BEiT-3 and the mask prior generator over
  all frames, then SAM 2's tracking loop frame by frame with gradients through the whole loop (memories
  stored in bfloat16, as in the official code), the Hiera image encoder frozen; logits at SAM 2's square
  resolution (low-resolution logits bilinearly upsampled, as the official ``pred_masks``).
* :func:`image_forward` - the official single-image path of RefCOCO pre-training (no memory, the single-mask
  output token, no object-score gating, no historical fusion, no "no point" prompt tokens).
* :class:`TrainingForward` - an ``nn.Module`` computing the official losses of a batch of clips
  (:mod:`.losses`), so that ``DistributedDataParallel`` can wrap it.
* :func:`prepare_for_training` - frozen image encoder, train mode, the official dropout (0.1 in the fusion
  layers, the prior generator's joint attention layer and SAM 2's memory attention), optional gradient
  checkpointing.
* :func:`build_optimizer` - AdamW, weight decay 5e-4, the two official learning-rate groups;
  :func:`learning_rate_factor` - the (not official) warm-up and cosine decay of from-scratch training.
* :func:`pretrain_categories` - a first stage before the main loop (not official, for training from scratch):
  BEiT-3 alone learns the category of the object under each patch (:class:`CategoriesSpec`); its head may be
  kept training beside the later stages, on frames of its own (:class:`KeptCategories`) or on the frames each
  stage already encodes (:class:`StageFrameCategories`).
* :func:`pretrain_grounding` - a stage before the main loop (not official, for training from scratch): BEiT-3
  and the mask prior generator alone on the prior loss, many clips a step (:class:`GroundingSpec`); run
  twice when ``clip_grounding`` asks for a second pass on clips of several frames.
* :func:`evaluate_model` - segments an annotated split and writes J, F and J&F per video and overall.
* :func:`read_log` - a run's curves: the records of ``log.jsonl`` (:data:`MAIN_LOG`) or of a stage's log;
  :func:`resumed_curve` keeps those of the last attempt where a resumed run logged steps twice.

Several processes use ``torch.distributed`` with ``DistributedDataParallel`` (NCCL on GPUs, gloo on CPUs);
``torchrun`` provides the environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``...).
"""

from __future__ import annotations

from .categories import (
    CategoriesForward,
    CategoriesSpec,
    build_categories_set,
    categories_batches,
    pretrain_categories,
)
from .cli import add_train_parser, main
from .distributed import DistributedContext, init_distributed, wrap_distributed
from .evaluate import evaluate_model
from .forward import (
    ClipOutput,
    TrainingForward,
    clip_forward,
    decode_all_masks,
    encode_frames_trainable,
    forward_backward,
    image_forward,
    video_forward,
)
from .grounding import GroundingForward, GroundingSpec, pretrain_grounding
from .kept_heads import KeptCategories, KeptHead, StageFrameCategories, label_stage_frames
from .loop import train
from .model_init import build_training_model
from .optim import (
    FAST_LR_PREFIXES,
    build_optimizer,
    is_fast_parameter,
    learning_rate_factor,
    parameter_groups,
    set_learning_rates,
)
from .prepare import enable_gradient_checkpointing, freeze_image_encoder, prepare_for_training, set_dropout
from .resume import last_checkpoint, save_checkpoint
from .run_config import ModelSpec, OptimSpec, ScheduleSpec, TrainConfig, apply_overrides, load_config
from .stage_log import MAIN_LOG, read_log, resumed_curve

__all__ = [
    "CategoriesForward",
    "CategoriesSpec",
    "KeptCategories",
    "KeptHead",
    "StageFrameCategories",
    "build_categories_set",
    "categories_batches",
    "FAST_LR_PREFIXES",
    "ClipOutput",
    "DistributedContext",
    "GroundingForward",
    "GroundingSpec",
    "ModelSpec",
    "OptimSpec",
    "ScheduleSpec",
    "TrainConfig",
    "TrainingForward",
    "add_train_parser",
    "apply_overrides",
    "build_optimizer",
    "build_training_model",
    "clip_forward",
    "decode_all_masks",
    "enable_gradient_checkpointing",
    "encode_frames_trainable",
    "evaluate_model",
    "forward_backward",
    "freeze_image_encoder",
    "image_forward",
    "init_distributed",
    "is_fast_parameter",
    "last_checkpoint",
    "learning_rate_factor",
    "load_config",
    "main",
    "MAIN_LOG",
    "read_log",
    "resumed_curve",
    "parameter_groups",
    "prepare_for_training",
    "label_stage_frames",
    "pretrain_categories",
    "pretrain_grounding",
    "save_checkpoint",
    "set_dropout",
    "set_learning_rates",
    "train",
    "video_forward",
    "wrap_distributed",
]
