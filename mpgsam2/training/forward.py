"""The training forward: one clip through SAM 2's tracking loop (videos) or the single-image path (RefCOCO),
and the losses of a batch (:class:`TrainingForward`, the module that ``DistributedDataParallel`` wraps)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..datasets import TrainingClip
from ..devices import autocast, parse_dtype
from ..inference.session import empty_memory_bank
from ..modeling.model import MPGSAM2
from ..modeling.sam2_adapter import FrameFeatures, decode_masks
from .losses import OFFICIAL_WEIGHTS, LossWeights, clip_losses, count_visible_frames


@dataclass(frozen=True)
class ClipOutput:
    """The official training outputs of one clip (T frames, S = SAM 2's input size)."""

    logits: torch.Tensor  # (T, 1, S, S) mask logits (the official pred_masks)
    sentence_scores: torch.Tensor  # (T,) the official sen_feat scalar per frame
    priors: torch.Tensor  # (T, g, g) prior-mask probabilities
    prior_logits: torch.Tensor  # (T, g, g) their logits (for the prior loss of from-scratch training)
    object_scores: torch.Tensor  # (T,) object-score logits


def encode_frames_trainable(model: MPGSAM2, images: torch.Tensor) -> list[FrameFeatures]:
    """SAM 2's image features of T frames: ``conv_s0``/``conv_s1`` always trainable, the encoder when it is
    (frozen in the official recipe, see :func:`mpgsam2.training.prepare.prepare_for_training`).

    Args:
        images: (T, 3, S, S) normalised SAM 2 inputs.
    Returns:
        One :class:`FrameFeatures` (batch 1) per frame.
    """
    sam = model.sam2
    # A frozen encoder runs without a graph (no activations kept); a trained one needs it.
    trained = any(p.requires_grad for p in sam.image_encoder.parameters())
    with torch.set_grad_enabled(trained and torch.is_grad_enabled()):
        backbone = sam.image_encoder(images)
    levels = list(backbone["backbone_fpn"])
    levels[0] = sam.sam_mask_decoder.conv_s0(levels[0])
    levels[1] = sam.sam_mask_decoder.conv_s1(levels[1])
    _, feats, pos, sizes = sam._prepare_backbone_features({**backbone, "backbone_fpn": levels})
    frames = []
    for t in range(images.shape[0]):
        frame_feats = [x[:, t : t + 1] for x in feats]
        frame_pos = [x[:, t : t + 1] for x in pos]
        high_res = [
            x.permute(1, 2, 0).reshape(1, x.size(2), *s) for x, s in zip(frame_feats[:-1], sizes[:-1])
        ]
        frames.append(FrameFeatures(frame_feats, frame_pos, sizes, high_res))
    return frames


def _square_logits(model: MPGSAM2, low_res: torch.Tensor) -> torch.Tensor:
    size = model.config.sam2.image_size
    return F.interpolate(low_res.float(), size=(size, size), mode="bilinear", align_corners=False)


def video_forward(model: MPGSAM2, clip: TrainingClip, checkpoint_frames: bool = False) -> ClipOutput:
    """The official training forward of one clip through SAM 2's tracking loop.

    Frame 0 is the conditioning frame; every frame gets its dense (prior) and sparse (class token) prompts;
    the memory of each frame is encoded and stored (bfloat16) with its gradient, so the loss of a later
    frame reaches the earlier frames' predictions.

    Args:
        clip: on the model's device; ``sam_images`` (T, 3, S, S), ``beit_images`` (T, 3, 224, 224).
        checkpoint_frames: recompute each frame's tracking step in the backward pass (saves memory).
    """
    context, _ = model.encode_clip(clip.beit_images, clip.input_ids, clip.text_padding)
    tracking = model.tracking_context([context])
    bank = empty_memory_bank()
    low_res, object_scores = [], []
    for t, features in enumerate(encode_frames_trainable(model, clip.sam_images)):
        if checkpoint_frames and torch.is_grad_enabled():
            # A snapshot of the bank: the recomputation must see the same (past) memories.
            snapshot = {part: dict(entries) for part, entries in bank.items()}
            output = checkpoint(model.track_frame, features, tracking, snapshot, t, use_reentrant=False)
        else:
            output = model.track_frame(features, tracking, bank, t)
        bank["cond_frame_outputs" if t == 0 else "non_cond_frame_outputs"][t] = output.memory
        low_res.append(output.low_res_logits)
        object_scores.append(output.decoder.object_score_logits.reshape(1))
    return ClipOutput(
        logits=_square_logits(model, torch.cat(low_res)),
        sentence_scores=model.mask_prior.sentence_scores(context.text_features),
        priors=context.priors,
        prior_logits=context.prior_logits,
        object_scores=torch.cat(object_scores),
    )


def decode_all_masks(
    decoder: nn.Module,
    image_embedding: torch.Tensor,
    image_pe: torch.Tensor,
    sparse: torch.Tensor,
    dense: torch.Tensor,
    high_res: list[torch.Tensor],
    fuse_mask_tokens: Callable[[torch.Tensor], torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """SAM 2's mask decoder with all four mask tokens, the single-mask token 0 included.

    The same computation as :func:`mpgsam2.modeling.sam2_adapter.decode_masks` (which keeps only the multimask
    tokens 1-3 that tracking uses); the official pre-training path needs token 0.

    Args:
        image_embedding: (1, C, h, w) after pixel-level fusion; image_pe: (1, C, h, w).
        sparse: (1, N, C); dense: (1, C, h, w); high_res: SAM 2's two high-resolution maps.
        fuse_mask_tokens: (1, 4, C) -> (1, 4, C), the object-level fusions.
    Returns:
        masks (1, 4, 4h, 4w), IoU predictions (1, 4), mask tokens (1, 4, C), object-score logits (1, 1).
    """
    decoded = decode_masks(
        decoder,
        image_embedding,
        image_pe,
        sparse,
        dense,
        high_res,
        fuse_mask_tokens,
        keep_single_mask_token=True,
    )
    return decoded.multimask_logits, decoded.iou, decoded.mask_tokens, decoded.object_score_logits


def image_forward(model: MPGSAM2, clip: TrainingClip) -> ClipOutput:
    """The official single-image training path (RefCOCO pre-training, one frame).

    As the official ``EvfSamModel.forward`` with a batch of several images: the image embedding plus
    ``no_mem_embed`` (no memory attention), prompts = the class-token prompt alone (no "no point" tokens)
    and the prior, pixel-level and object-level global fusion (no historical fusion), the decoder's
    single-mask token 0, no object-score gating.
    """
    if clip.num_frames != 1:
        raise ValueError(f"The image path takes one frame; {clip.source} has {clip.num_frames}.")
    context, _ = model.encode_clip(clip.beit_images, clip.input_ids, clip.text_padding)
    merged = model.merge_mask_embeddings(context)
    (features,) = encode_frames_trainable(model, clip.sam_images)
    sam, aggregator = model.sam2, model.aggregator
    height, width = features.feat_sizes[-1]
    top = features.vision_feats[-1] + sam.no_mem_embed  # (HW, 1, C)
    pixel = top.permute(1, 2, 0).reshape(1, -1, height, width)
    prompt_encoder = sam.sam_prompt_encoder
    prior_prompt = None
    if model.config.mask_prior.dense_prompt:
        prior_prompt = F.interpolate(
            context.priors[0][None, None].float(),
            size=prompt_encoder.mask_input_size,
            mode="bilinear",
            align_corners=False,
            antialias=True,
        )
    sparse, dense = prompt_encoder(points=None, boxes=None, masks=prior_prompt)
    sparse = torch.cat([sparse, context.sparse_prompts[0][None, None].to(sparse.dtype)], dim=1)
    image_pe = prompt_encoder.get_dense_pe()
    fused = aggregator.fuse_pixels(pixel, image_pe, merged[None], context.text_features[:1])
    all_embeddings = context.mask_embeddings.flatten(0, 1)[None]
    masks, _, _, object_score = decode_all_masks(
        sam.sam_mask_decoder,
        fused,
        image_pe,
        sparse,
        dense,
        features.high_res,
        lambda tokens: aggregator.fuse_mask_tokens(tokens, all_embeddings, None),
    )
    return ClipOutput(
        logits=_square_logits(model, masks[:, :1]),
        sentence_scores=model.mask_prior.sentence_scores(context.text_features),
        priors=context.priors,
        prior_logits=context.prior_logits,
        object_scores=object_score.reshape(1),
    )


def clip_forward(model: MPGSAM2, clip: TrainingClip, checkpoint_frames: bool = False) -> ClipOutput:
    """:func:`video_forward` for video clips, :func:`image_forward` for RefCOCO images."""
    if clip.kind == "image":
        return image_forward(model, clip)
    return video_forward(model, clip, checkpoint_frames)


class TrainingForward(nn.Module):
    """Losses of a batch of clips; the module that ``DistributedDataParallel`` wraps.

    Args:
        model: the network (prepared with :func:`prepare_for_training`).
        weights: the loss weights (official 2 / 5 / 2, and the from-scratch terms off).
        precision: ``None``/``"fp32"``, or ``"bf16"``/``"fp16"`` autocast for the forward (losses in fp32).
        checkpoint_frames: recompute each tracked frame in the backward pass.
    """

    def __init__(
        self,
        model: MPGSAM2,
        weights: LossWeights = OFFICIAL_WEIGHTS,
        precision: str | torch.dtype | None = None,
        checkpoint_frames: bool = False,
    ):
        super().__init__()
        self.model = model
        self.weights = weights
        self.precision = parse_dtype(precision)
        self.checkpoint_frames = checkpoint_frames

    def forward(self, clips: Sequence[TrainingClip], num_boxes: float) -> dict[str, torch.Tensor]:
        """clips: on the model's device. Returns the losses (see :func:`mpgsam2.training.losses.clip_losses`)."""
        with autocast(self.model.device, self.precision):
            outputs = [clip_forward(self.model, clip, self.checkpoint_frames) for clip in clips]
        return clip_losses(
            [o.logits[:, 0] for o in outputs],
            [c.masks for c in clips],
            [o.sentence_scores for o in outputs],
            num_boxes,
            self.weights,
            object_scores=[o.object_scores for o in outputs],
            visible=[c.visible for c in clips],
            prior_logits=[o.prior_logits for o in outputs],
        )


def forward_backward(
    module: nn.Module,
    clips: Sequence[TrainingClip],
    device: torch.device | str,
    scaler: torch.amp.GradScaler | None = None,
) -> dict[str, torch.Tensor]:
    """One forward and backward pass of a batch (gradients accumulate in the parameters' ``.grad``).

    ``module`` is a :class:`TrainingForward`, or ``DistributedDataParallel`` around one: then ``num_boxes``
    is averaged over the processes and the gradients are averaged by DDP, which together equal one process
    running the whole global batch. With ``scaler`` (fp16), the loss is scaled before the backward pass, so
    that small gradients do not underflow. Returns the detached losses of this process's batch.
    """
    clips = [c.to(device) for c in clips]
    num_boxes = count_visible_frames([c.visible for c in clips])
    losses = module(clips, num_boxes)
    if not torch.isfinite(losses["loss"]):
        sources = ", ".join(c.source for c in clips)
        raise FloatingPointError(f"Non-finite loss {losses['loss'].item()} on {sources}; stopping.")
    (scaler.scale(losses["loss"]) if scaler is not None else losses["loss"]).backward()
    return {name: value.detach() for name, value in losses.items()}
