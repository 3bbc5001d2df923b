"""The training loop: :func:`train` runs a configuration in this process (one of several under ``torchrun``)."""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from ..datasets import ClipTransform, build_training_set, collate_clips
from ..datasets.registry import prepare_generated
from ..devices import parse_dtype
from ..modeling.model import MPGSAM2
from .categories import (
    CategoriesForward,
    build_categories_set,
    pretrain_categories,
    stage_input_ids,
)
from .distributed import (
    DistributedContext,
    barrier,
    init_distributed,
    mean_over_processes,
    resumable_loader,
    wrap_distributed,
)
from .evaluate import evaluate_model
from .forward import TrainingForward, forward_backward
from .grounding import CLIP_GROUNDING_LOG, GROUNDING_LOG, pretrain_grounding
from .kept_heads import KeptHead, label_stage_frames
from .model_init import build_training_model
from .optim import build_optimizer, learning_rate_factor, set_learning_rates
from .prepare import prepare_for_training
from .resume import (
    STAGES_CHECKPOINT,
    gather_rng_states,
    last_checkpoint,
    load_progress,
    prune_checkpoints,
    save_checkpoint,
)
from .run_config import TrainConfig
from .stage_log import MAIN_LOG, append_record

logger = logging.getLogger(__name__)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # every CUDA device too


def train(config: TrainConfig, resume: str | None = None) -> dict:
    """Run a training configuration in this process (one of several under ``torchrun``).

    Args:
        config: see :class:`TrainConfig`.
        resume: ``"auto"`` (the run's last checkpoint, if any), a checkpoint folder, or None (start afresh).
            A run's :data:`~mpgsam2.training.resume.STAGES_CHECKPOINT` starts the main loop after its stages.
    Returns:
        A summary: steps done, the last checkpoint, per-step losses of this process, evaluation report.
    """
    schedule = config.schedule
    context = init_distributed(schedule.device)
    if schedule.num_workers > 0:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # the loader's workers tokenise
    if not context.is_main:
        logging.getLogger("mpgsam2").setLevel(logging.WARNING)
    output_dir = Path(config.output_dir)
    if context.is_main:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "train_config.json").write_text(json.dumps(config.raw, indent=2))
    # One seed per process, so that dropout differs between processes; DDP copies rank 0's weights to all.
    _seed_everything(schedule.seed + context.rank)
    try:
        model, tokenizer, tokenizer_file = build_training_model(config.model)
        model = prepare_for_training(
            model.to(context.device),
            schedule.dropout,
            schedule.gradient_checkpointing,
            freeze_encoder=schedule.freeze_image_encoder,
        )
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        logger.info(
            "Model %s: %.1f M parameters, %.1f M trained; %d process(es) on %s",
            model.config.name,
            sum(p.numel() for p in model.parameters()) / 1e6,
            trainable / 1e6,
            context.world_size,
            context.device,
        )
        # Every process writes its share of the generated data before any process reads it.
        generated = [*config.train_data, *([config.eval_data] if config.eval_data is not None else [])]
        for spec in generated:
            prepare_generated(spec, context.rank, context.world_size, partial(barrier, context))
        transform = ClipTransform(model.config, tokenizer)
        dataset = build_training_set(list(config.train_data), transform, schedule.augment, schedule.seed)
        source = last_checkpoint(output_dir) if resume == "auto" else (Path(resume) if resume else None)
        # The pre-training stages' settings shared with the main loop.
        stage_options = {
            "weight_decay": config.optim.weight_decay,
            "clip_max_norm": config.optim.clip_max_norm,
            "seed": schedule.seed,
            "log_every": schedule.log_every,
            "num_workers": schedule.num_workers,
        }
        # The categories head goes on training beside the later stages when they keep its loss on.
        kept = None
        if config.categories.steps and (source is None or config.keeps_categories):
            extremes = config.categories.extremes
            categories_set = build_categories_set(
                list(config.train_data), model, schedule.seed, bool(extremes)
            )
            num_categories = len(categories_set.datasets[0].categories)
            categories_forward = CategoriesForward(model, num_categories, extremes).to(context.device)
            if source is None:
                # A resumed run's weights already hold the stages; a fresh run starts with them.
                pretrain_categories(
                    model,
                    config.categories,
                    categories_set,
                    tokenizer,
                    context,
                    output_dir,
                    forward=categories_forward,
                    **stage_options,
                )
            if config.keeps_categories:
                kept = KeptHead(
                    categories_forward,
                    categories_set,
                    stage_input_ids(model, tokenizer, config.categories).to(context.device),
                    config.categories.kept_batch_size,
                    context,
                    # Other draws than the stage's own (the same seed would repeat its first epochs).
                    schedule.seed + 1,
                    schedule.num_workers,
                    frames=config.categories.kept_frames,
                )
        grounding_stages = ((config.grounding, GROUNDING_LOG), (config.clip_grounding, CLIP_GROUNDING_LOG))
        for stage, log_name in grounding_stages if source is None else ():
            if not stage.steps:
                continue
            grounding_set = dataset
            # The stages anchor windows on look-alike frames by their own lookalike_share, not the data's repeat.
            if stage.num_frames or any(spec.lookalike_repeat for spec in config.train_data):
                grounding_set = build_training_set(
                    [
                        replace(spec, num_frames=stage.num_frames or spec.num_frames, lookalike_repeat=0)
                        for spec in config.train_data
                    ],
                    transform,
                    schedule.augment,
                    schedule.seed,
                )
            if kept is not None and kept.frames == "stage" and stage.categories:
                label_stage_frames(grounding_set, categories_set)
            pretrain_grounding(
                model,
                stage,
                grounding_set,
                context,
                output_dir,
                kept=kept,
                log_name=log_name,
                **stage_options,
            )
        optimizer = build_optimizer(
            model,
            config.optim.lr,
            config.optim.lr_fast,
            config.optim.weight_decay,
            config.optim.lr_encoder,
            config.optim.lr_prior,
        )
        categories_head = None
        if kept is not None and config.loss.categories:
            categories_head = kept.forward.heads()
            if kept.frames == "stage":
                label_stage_frames(dataset, categories_set)
            # The head learns at the rate of the new modules.
            optimizer.add_param_group(
                {
                    "params": list(categories_head.parameters()),
                    "lr": config.optim.lr_fast,
                    "name": "categories",
                }
            )
        sampler, loader = resumable_loader(
            dataset, schedule.batch_size, context, schedule.seed, schedule.num_workers, collate_clips
        )
        forward = TrainingForward(model, config.loss, schedule.precision, schedule.gradient_checkpointing)
        if categories_head is not None:
            forward = kept.around(forward, config.loss.categories)
        module = wrap_distributed(forward, context, schedule.find_unused_parameters)
        trained = [p for group in optimizer.param_groups for p in group["params"]]

        # fp16 gradients underflow without loss scaling; bf16 and fp32 need none.
        scaler = None
        if parse_dtype(schedule.precision) == torch.float16:
            scaler = torch.amp.GradScaler(context.device.type)
        progress = {"step": 0, "epoch": 0, "samples": 0}
        if source is not None:
            progress = load_progress(source, model, optimizer, context, scaler, categories_head)
            if categories_head is not None:
                # The batches that the grounding stage and the steps done drew.
                drawn = sum(stage.steps * bool(stage.categories) for stage, _ in grounding_stages)
                kept.resume_at(drawn + progress["step"])
            logger.info("Resumed from %s at step %d (epoch %d)", source, progress["step"], progress["epoch"])
        elif resume not in (None, "auto"):
            raise FileNotFoundError(f"No checkpoint to resume at {resume}.")
        elif config.categories.steps or config.grounding.steps or config.clip_grounding.steps:
            # The stages are most of a small run's time and no later checkpoint holds them until the main
            # loop's first save: their end is kept, so that a run stopped before then, or a variant of the
            # main loop (another output_dir, --resume this folder), does not train them again.
            source = _save(
                output_dir,
                model,
                None,
                progress,
                config,
                tokenizer_file,
                context,
                scaler,
                categories_head,
                name=STAGES_CHECKPOINT,
            )

        optim = config.optim
        # The official rates are constant and never touched; a schedule sets them before every step.
        scheduled = optim.warmup_steps > 0 or optim.decay != "none"
        history: list[dict[str, float]] = []
        window: list[dict[str, float]] = []
        step, checkpoint_dir = progress["step"], source
        steps_per_epoch = math.ceil(len(sampler) / schedule.batch_size)
        # Samples of an epoch's order that one optimiser step consumes, over all processes.
        per_step = schedule.batch_size * context.world_size
        done = schedule.max_steps is not None and step >= schedule.max_steps
        epoch = progress["epoch"]
        while epoch < schedule.epochs and not done:
            sampler.set_epoch(epoch)
            dataset.set_epoch(epoch)
            consumed = progress["samples"] if epoch == progress["epoch"] else 0
            sampler.consumed = consumed
            first_batch = consumed // per_step
            tick = time.time()
            batch_index = first_batch
            for batch_index, clips in enumerate(loader, start=first_batch):
                consumed += per_step
                if scheduled:
                    factor = learning_rate_factor(step, optim.warmup_steps, optim.decay, schedule.max_steps)
                    set_learning_rates(optimizer, factor)
                optimizer.zero_grad(set_to_none=True)
                losses = forward_backward(module, clips, context.device, scaler)
                if scaler is not None:
                    scaler.unscale_(optimizer)  # clipping sees the real gradients
                if config.optim.clip_max_norm > 0:
                    torch.nn.utils.clip_grad_norm_(trained, config.optim.clip_max_norm)
                if scaler is not None:
                    scaler.step(optimizer)  # skipped when the gradients overflowed
                    scaler.update()
                else:
                    optimizer.step()
                step += 1
                values = {name: float(value) for name, value in losses.items()}
                history.append(values)
                window.append(values)
                if step % schedule.log_every == 0 or step == 1:
                    mean = mean_over_processes(
                        {k: float(np.mean([w[k] for w in window])) for k in window[0]}, context
                    )
                    seconds = (time.time() - tick) / len(window)
                    if context.is_main:
                        logger.info(
                            "epoch %d step %d (%d/%d): loss %.4f (mask %.4f, dice %.4f, sim %.4f), %.2f s/step",
                            epoch, step, batch_index + 1, steps_per_epoch, mean["loss"],
                            mean["loss_mask"], mean["loss_dice"], mean["loss_sim"], seconds,
                        )  # fmt: skip
                        append_record(
                            output_dir / MAIN_LOG,
                            {
                                "step": step,
                                "epoch": epoch,
                                **mean,
                                "lr": optimizer.param_groups[0]["lr"],
                                "s_per_step": seconds,
                            },
                        )
                    window, tick = [], time.time()
                done = schedule.max_steps is not None and step >= schedule.max_steps
                periodic = schedule.save_every_steps and step % schedule.save_every_steps == 0
                if periodic or done:
                    position = {"step": step, "epoch": epoch, "samples": consumed}
                    if consumed >= len(dataset):
                        position = {"step": step, "epoch": epoch + 1, "samples": 0}
                    checkpoint_dir = _save(
                        output_dir,
                        model,
                        optimizer,
                        position,
                        config,
                        tokenizer_file,
                        context,
                        scaler,
                        categories_head,
                    )
                if done:
                    break
            if not done:
                epoch += 1
                checkpoint_dir = _save(
                    output_dir,
                    model,
                    optimizer,
                    {"step": step, "epoch": epoch, "samples": 0},
                    config,
                    tokenizer_file,
                    context,
                    scaler,
                    categories_head,
                )
        summary = {
            "steps": step,
            "checkpoint": str(checkpoint_dir) if checkpoint_dir else None,
            "history": history,
        }
    finally:
        if context.enabled and dist.is_initialized():
            dist.destroy_process_group()
    if config.eval_data is not None and context.is_main and checkpoint_dir is not None:
        summary["eval"] = evaluate_model(
            model,
            tokenizer,
            config.eval_data,
            Path(checkpoint_dir) / "eval",
            context.device,
            schedule.precision,
        )
    return summary


def _save(
    output_dir: Path,
    model: MPGSAM2,
    optimizer: torch.optim.Optimizer | None,
    progress: dict,
    config: TrainConfig,
    tokenizer_file: Path,
    context: DistributedContext,
    scaler: torch.amp.GradScaler | None = None,
    categories_head: torch.nn.Module | None = None,
    name: str | None = None,
) -> Path:
    folder = output_dir / (name or f"checkpoint-{progress['step']}")
    rng_states = gather_rng_states(context)
    if context.is_main:
        save_checkpoint(
            folder, model, optimizer, progress, config, tokenizer_file, rng_states, scaler, categories_head
        )
        prune_checkpoints(output_dir, config.schedule.keep_checkpoints)
        logger.info("Saved %s", folder)
    barrier(context)
    return folder
