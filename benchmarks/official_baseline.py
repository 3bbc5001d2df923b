"""The official MPG-SAM 2 inference algorithm, step by step, on this package's modules and weights.

This is the reference side of ``benchmarks/pipeline.py``: the same weights and inputs as our pipeline, but
the order of work, the attention paths and what is held in memory follow the official code
(``rongfu-dsb/MPG-SAM2`` at ``54291e0``: its inference script, the model's forward pass and its
attention layers). Per expression, as ``inference_ytvos.py`` and ``EvfSamModel.forward`` do it:

* every frame is preprocessed up front to SAM 2's square resolution and to 224x224 as float32 tensors, and
  all of them are held until the expression is done;
* BEiT-3 runs on all T frames as one batch;
* the mask prior generator's self-attention over the 196 T visual tokens and the class-token attention run
  through ``nn.MultiheadAttention``'s sequence-first path with ``need_weights=True`` (the official layers
  are ``batch_first=False`` and use the default), which builds the 8 x 196T x 196T score matrix, its
  softmax and the head-averaged weights;
* every SAM 2 parameter is re-cast to float32 (``param.data = param.data.float()``), once per call;
* SAM 2's image encoder runs on every frame again for every expression;
* the decoder recomputes the 2x2 patch merge of all frames' mask embeddings on every frame, and its three
  fusion layers use the same ``need_weights=True`` attention path;
* the memory bank keeps every frame's entry (memory features, pointers, low-resolution masks), and the
  masks of all frames are held at the square resolution, then resized to the frame size all at once.

Nothing here is used by the library; it exists to measure against.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from sam2.modeling.sam2_base import NO_OBJ_SCORE
from sam2.modeling.sam2_utils import get_1d_sine_pe
from torch import nn

from mpgsam2.inference.frames import preprocess
from mpgsam2.modeling.aggregator import FusionLayer
from mpgsam2.modeling.mask_prior import GlobalContext
from mpgsam2.modeling.model import MPGSAM2
from mpgsam2.modeling.sam2_adapter import decode_masks, encode_frame
from mpgsam2.profiling import StageTimer
from mpgsam2.tokenizer import EncodedExpression


def official_attention(
    attention: nn.MultiheadAttention, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor
) -> torch.Tensor:
    """Batch-first (1, N, C) in and out, computed as the official sequence-first layers do.

    ``F.multi_head_attention_forward`` with ``need_weights=True`` is the path an ``nn.MultiheadAttention``
    built with ``batch_first=False`` takes when called with its defaults: it materialises the
    (heads, N, M) float32 scores and their softmax, and returns the head-averaged (N, M) weights, which the
    official code then drops (``[0]``).
    """
    output, _weights = F.multi_head_attention_forward(
        query.transpose(0, 1),
        key.transpose(0, 1),
        value.transpose(0, 1),
        attention.embed_dim,
        attention.num_heads,
        attention.in_proj_weight,
        attention.in_proj_bias,
        attention.bias_k,
        attention.bias_v,
        attention.add_zero_attn,
        attention.dropout,
        attention.out_proj.weight,
        attention.out_proj.bias,
        training=False,
        need_weights=True,
    )
    return output.transpose(0, 1)


def official_fusion(
    layer: FusionLayer,
    target: torch.Tensor,
    memory: torch.Tensor,
    target_pos: torch.Tensor | None = None,
    memory_pos: torch.Tensor | None = None,
) -> torch.Tensor:
    """The decoder's ``VisionLanguageFusionModule`` (post-norm cross-attention + FFN) on a FusionLayer's weights."""
    query = target if target_pos is None else target + target_pos
    key = memory if memory_pos is None else memory + memory_pos
    target = layer.norm1(target + official_attention(layer.multihead_attn, query, key, memory))
    return layer.norm2(target + layer.linear2(torch.relu(layer.linear1(target))))


def attention_matrix_bytes(num_frames: int, patches: int = 196, heads: int = 8) -> int:
    """Lower bound of the prior generator's attention peak: the float32 scores and their softmax."""
    tokens = num_frames * patches
    return 2 * heads * tokens * tokens * 4


def official_global_stage(
    model: MPGSAM2, images: torch.Tensor, expression: EncodedExpression, timer: StageTimer
) -> GlobalContext:
    """BEiT-3 on all frames as one batch, then ``visual_ifi`` / ``vmtoken`` / prior / embeddings."""
    num_frames = images.shape[0]
    device = images.device
    with timer.stage("beit3"):
        ids = expression.input_ids.to(device).unsqueeze(0).expand(num_frames, -1)
        padding = expression.padding.to(device).unsqueeze(0).expand(num_frames, -1)
        encoded = model.multimodal_encoder(images, ids, padding)
    with timer.stage("prior"):
        prior = model.mask_prior
        _, patches, width = encoded.visual_tokens.shape
        grid = prior.grid_size
        # visual_ifi: one post-norm transformer layer over all 196 T tokens, no positional encoding.
        layer = prior.visual_interaction
        visual = encoded.visual_tokens.reshape(1, num_frames * patches, width)
        visual = layer.norm1(visual + official_attention(layer.self_attn, visual, visual, visual))
        visual = layer.norm2(visual + layer.linear2(torch.relu(layer.linear1(visual))))
        # vmtoken: the class tokens attend to every frame's tokens; the result multiplies the query.
        class_tokens = encoded.class_token.unsqueeze(0)
        refined = official_attention(prior.class_token_attention, class_tokens, visual, visual) * class_tokens
        modulated = visual.reshape(num_frames, grid, grid, width) * prior.channel_modulation(refined).reshape(
            num_frames, 1, 1, width
        )
        prior_logits = prior.prior_head(modulated).squeeze(-1)
        time_code = get_1d_sine_pe(
            torch.arange(num_frames, device=device, dtype=visual.dtype), prior.prompt_dim
        )
        embeddings = prior.mask_embedding(modulated).reshape(num_frames, grid * grid, prior.prompt_dim)
        return GlobalContext(
            prior_logits=prior_logits,
            priors=torch.sigmoid(prior_logits),
            mask_embeddings=embeddings + time_code[:, None, :],
            sparse_prompts=prior.sparse_prompt(encoded.class_token),
            text_features=prior.text_projection(encoded.text_tokens),
        )


def official_track_step(
    model: MPGSAM2, features, context: GlobalContext, output_dict: dict, frame_index: int, timer: StageTimer
) -> dict:
    """One frame of the official ``_run_single_frame_inference`` for one expression; returns its bank entry."""
    sam, aggregator = model.sam2, model.aggregator
    num_frames = context.num_frames
    is_initial = frame_index == 0
    pixel = sam._prepare_memory_conditioned_features(
        frame_idx=frame_index,
        is_init_cond_frame=is_initial,
        current_vision_feats=features.vision_feats[-1:],
        current_vision_pos_embeds=features.vision_pos[-1:],
        feat_sizes=features.feat_sizes[-1:],
        output_dict=output_dict,
        num_frames=num_frames,
    )
    # _inter_obj: the conditioning frame's pointer, then up to min(T, 16) - 1 previous frames'.
    pointers = {t: out["obj_ptr"][0] for part in output_dict.values() for t, out in part.items()}
    object_memory = aggregator.object_memory(frame_index, num_frames, pointers, (0,))

    device = pixel.device
    prompt_encoder = sam.sam_prompt_encoder
    no_point = (torch.zeros(1, 1, 2, device=device), -torch.ones(1, 1, dtype=torch.int32, device=device))
    prior = context.priors[frame_index][None, None]
    prior = F.interpolate(
        prior, size=prompt_encoder.mask_input_size, mode="bilinear", align_corners=False, antialias=True
    )
    sparse, dense = prompt_encoder(points=no_point, boxes=None, masks=prior)
    sparse = torch.cat([sparse, context.sparse_prompts[frame_index][None, None]], dim=1)
    image_pe = prompt_encoder.get_dense_pe()

    # MaskDecoder.forward: the patch merge of every frame's mask embeddings, recomputed on every frame.
    merged = aggregator.merge_patches(context.mask_embeddings)
    _, channels, height, width = pixel.shape
    keys = torch.cat([merged, context.text_features[frame_index]]).unsqueeze(0)
    fused = pixel.flatten(2).transpose(1, 2)
    for layer in aggregator.pixel_global:
        fused = official_fusion(layer, fused, keys, target_pos=image_pe.flatten(2).transpose(1, 2))
    fused = fused.transpose(1, 2).reshape(1, channels, height, width)
    all_embeddings = context.mask_embeddings.flatten(0, 1).unsqueeze(0)

    def fuse_mask_tokens(tokens: torch.Tensor) -> torch.Tensor:
        for layer in aggregator.object_global:
            tokens = official_fusion(layer, tokens, all_embeddings)
        if object_memory is not None:
            pointer_tokens, positions = (t.unsqueeze(0) for t in object_memory)
            for layer in aggregator.object_local:
                tokens = official_fusion(layer, tokens, pointer_tokens, memory_pos=positions)
        return tokens

    decoded = decode_masks(
        sam.sam_mask_decoder, fused, image_pe, sparse, dense, features.high_res, fuse_mask_tokens
    )
    is_object = decoded.object_score_logits > 0
    candidates = torch.where(is_object[:, :, None, None], decoded.multimask_logits, NO_OBJ_SCORE)
    best = torch.argmax(decoded.iou, dim=-1)
    low_res = candidates[torch.arange(1, device=device), best].unsqueeze(1)
    high_res = F.interpolate(
        low_res, size=(sam.image_size, sam.image_size), mode="bilinear", align_corners=False
    )
    pointer = sam.obj_ptr_proj(decoded.mask_tokens[torch.arange(1, device=device), best])
    presence = is_object.to(pointer.dtype)
    pointer = presence * pointer + (1 - presence) * sam.no_obj_ptr

    with timer.stage("encode"):
        maskmem_features, maskmem_pos_enc = sam._encode_new_memory(
            current_vision_feats=features.vision_feats,
            feat_sizes=features.feat_sizes,
            pred_masks_high_res=high_res,
            object_score_logits=decoded.object_score_logits,
            is_mask_from_pts=is_initial,
        )
    return {
        "maskmem_features": maskmem_features.to(torch.bfloat16),
        "maskmem_pos_enc": maskmem_pos_enc,
        "pred_masks": low_res,
        "obj_ptr": pointer,
        "object_score_logits": decoded.object_score_logits,
    }


@dataclass
class OfficialResult:
    """One expression over the clip, as the official scripts produce it."""

    logits: np.ndarray  # (T, H, W) float32 at the frames' resolution
    masks: np.ndarray  # (T, H, W) bool, sigmoid > 0.5


def run_official(
    model: MPGSAM2,
    frames: np.ndarray,
    expressions: Sequence[EncodedExpression],
    timer: StageTimer,
    global_only: bool = False,
) -> list[OfficialResult]:
    """The official algorithm on (T, H, W, 3) uint8 frames, one pass per expression.

    With ``global_only`` it stops after the clip-level stage (the preprocessing it needs and BEiT-3 + the
    prior generator), which is what the global-context memory measurement runs.
    """
    if model.device.type == "cuda":
        os.environ["CUDA_LAUNCH_BLOCKING"] = "1"  # the official scripts set it (it takes effect at CUDA init)
    config = model.config
    pre, size = config.preprocess, config.sam2.image_size
    height, width = frames.shape[1:3]
    device = model.device
    results = []
    with torch.no_grad():
        for expression in expressions:
            with timer.stage("decode"):
                images = torch.stack([preprocess(f, size, pre.mean, pre.std) for f in frames]).to(device)
                images_beit = torch.stack(
                    [preprocess(f, config.beit3.image_size, pre.mean, pre.std) for f in frames]
                ).to(device)
            context = official_global_stage(model, images_beit, expression, timer)
            if global_only:
                results.append(OfficialResult(np.empty(0, np.float32), np.empty(0, bool)))
                continue
            with timer.stage("memory_decoder"):
                for param in model.sam2.parameters():
                    param.data = param.data.float()
                output_dict: dict = {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}
                square_logits = []
                for t in range(len(frames)):
                    with timer.stage("hiera"):
                        features = encode_frame(model.sam2, images[t : t + 1])
                    entry = official_track_step(model, features, context, output_dict, t, timer)
                    output_dict["cond_frame_outputs" if t == 0 else "non_cond_frame_outputs"][t] = entry
                    with timer.stage("post"):
                        # The predictor's "video resolution" is the square model input.
                        square_logits.append(
                            F.interpolate(
                                entry["pred_masks"], size=(size, size), mode="bilinear", align_corners=False
                            )
                        )
            with timer.stage("post"):
                logits = F.interpolate(
                    torch.cat(square_logits), size=(height, width), mode="bilinear", align_corners=False
                )[:, 0]
                masks = torch.sigmoid(logits) > config.preprocess.mask_threshold
                results.append(OfficialResult(logits.float().cpu().numpy(), masks.cpu().numpy()))
            del images, images_beit, context, output_dict, square_logits
    return results
