"""What MPG-SAM 2 changes in SAM 2, built on Meta's ``sam2`` package (SAM 2.0 configuration).

Reused unchanged from ``sam2``: the Hiera image encoder and FPN neck, memory attention (with the memory
selection of ``SAM2Base._prepare_memory_conditioned_features``), the memory encoder, the prompt encoder and
every weight of the mask decoder. Changed here:

* every frame is prompted: a dense prompt from its prior mask and a sparse prompt from its class token
  (appended after the two "no point" tokens);
* the decoder's image embedding goes through pixel-level global fusion first, and its four mask tokens
  through object-level global and local fusion before the two-way transformer
  (:func:`decode_masks` re-implements ``MaskDecoder.predict_masks`` with that hook);
* multimask output with best-IoU selection on every frame, object-score gating, the object pointer.

The tracking state per expression is a plain ``sam2`` output dictionary held by the caller's session.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from sam2.modeling.backbones.hieradet import Hiera
from sam2.modeling.backbones.image_encoder import FpnNeck, ImageEncoder
from sam2.modeling.memory_attention import MemoryAttention, MemoryAttentionLayer
from sam2.modeling.memory_encoder import CXBlock, Fuser, MaskDownSampler, MemoryEncoder
from sam2.modeling.position_encoding import PositionEmbeddingSine
from sam2.modeling.sam.mask_decoder import MaskDecoder
from sam2.modeling.sam.transformer import RoPEAttention, TwoWayTransformer
from sam2.modeling.sam2_base import NO_OBJ_SCORE, SAM2Base

from .aggregator import HierarchicalAggregator
from .config import SAM2Config
from .mask_prior import TrackingContext

#: The mask decoder's widths that SAM2Base builds (MLP width, heads, IoU head width).
SAM2_DECODER_WIDTHS = (2048, 8, 256)


@contextlib.contextmanager
def _cuda_hidden() -> Iterator[None]:
    """While sam2 builds, CUDA looks unavailable.

    sam2 puts its RoPE tables (and warm-up position caches) on "cuda" when CUDA is available, wherever the
    weights are: a model built on the CPU (or the meta device) would hold tensors on two devices, and under
    ZeroGPU's patching in the main process those are fake CUDA tensors that break the deep copies of the
    memory-attention layers. The caller moves the finished model, and sam2's tables follow the inputs.
    """
    available = torch.cuda.is_available
    torch.cuda.is_available = lambda: False
    try:
        yield
    finally:
        torch.cuda.is_available = available


def build_sam2(config: SAM2Config) -> SAM2Base:
    """SAM 2 as ``configs/sam2/sam2_hiera_*.yaml`` builds it, with post-processing off (as the official model),
    on the current default device (the CPU, or the meta device when building for a checkpoint)."""
    with _cuda_hidden():
        return _build_sam2(config)


def _build_sam2(config: SAM2Config) -> SAM2Base:
    hiera = config.hiera
    dim, side = config.hidden_dim, config.embedding_size
    trunk = Hiera(
        embed_dim=hiera.embed_dim,
        num_heads=hiera.num_heads,
        stages=hiera.stages,
        global_att_blocks=hiera.global_att_blocks,
        window_pos_embed_bkg_spatial_size=hiera.window_pos_embed_bkg_spatial_size,
        window_spec=hiera.window_spec,
    )
    neck = FpnNeck(
        position_encoding=PositionEmbeddingSine(num_pos_feats=dim, normalize=True, temperature=10000),
        d_model=dim,
        backbone_channel_list=list(hiera.channels),
        fpn_top_down_levels=[2, 3],
        fpn_interp_model="nearest",
    )

    def rope(**extra) -> RoPEAttention:
        return RoPEAttention(
            rope_theta=10000.0,
            feat_sizes=(side, side),
            embedding_dim=dim,
            num_heads=1,
            downsample_rate=1,
            dropout=0.1,
            **extra,
        )

    memory_layer = MemoryAttentionLayer(
        activation="relu",
        cross_attention=rope(rope_k_repeat=True, kv_in_dim=config.memory_dim),
        d_model=dim,
        dim_feedforward=config.memory_attention_ffn_dim,
        dropout=0.1,
        pos_enc_at_attn=False,
        pos_enc_at_cross_attn_keys=True,
        pos_enc_at_cross_attn_queries=False,
        self_attention=rope(),
    )
    memory_encoder = MemoryEncoder(
        out_dim=config.memory_dim,
        mask_downsampler=MaskDownSampler(embed_dim=dim, kernel_size=3, stride=2, padding=1),
        fuser=Fuser(CXBlock(dim=dim, kernel_size=7, padding=3, layer_scale_init_value=1e-6), num_layers=2),
        position_encoding=PositionEmbeddingSine(num_pos_feats=config.memory_dim, normalize=True),
        in_dim=dim,
    )
    model = SAM2Base(
        image_encoder=ImageEncoder(trunk=trunk, neck=neck, scalp=1),
        memory_attention=MemoryAttention(
            d_model=dim, pos_enc_at_input=True, layer=memory_layer, num_layers=config.memory_attention_layers
        ),
        memory_encoder=memory_encoder,
        num_maskmem=config.num_maskmem,
        image_size=config.image_size,
        backbone_stride=config.backbone_stride,
        sigmoid_scale_for_mem_enc=20.0,
        sigmoid_bias_for_mem_enc=-10.0,
        use_mask_input_as_output_without_sam=True,
        directly_add_no_mem_embed=True,
        use_high_res_features_in_sam=True,
        multimask_output_in_sam=True,
        iou_prediction_use_sigmoid=True,
        use_obj_ptrs_in_encoder=True,
        add_tpos_enc_to_obj_ptrs=False,
        only_obj_ptrs_in_the_past_for_eval=True,
        pred_obj_scores=True,
        pred_obj_scores_mlp=True,
        fixed_no_obj_ptr=True,
        multimask_output_for_tracking=True,
        use_multimask_token_for_obj_ptr=True,
        multimask_min_pt_num=0,
        multimask_max_pt_num=1,
        use_mlp_for_obj_ptr_proj=True,
    )
    if (config.decoder_mlp_dim, config.decoder_num_heads, config.iou_head_hidden_dim) != SAM2_DECODER_WIDTHS:
        # SAM2Base builds its decoder with sam2's fixed widths; narrower models (the "toy" preset) get one
        # of the config's widths, with the same modules and names. The released widths keep SAM2Base's own
        # decoder, so that their build (and the random stream it draws from) is unchanged.
        model.sam_mask_decoder = MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(
                depth=2,
                embedding_dim=dim,
                mlp_dim=config.decoder_mlp_dim,
                num_heads=config.decoder_num_heads,
            ),
            transformer_dim=dim,
            iou_head_depth=3,
            iou_head_hidden_dim=config.iou_head_hidden_dim,
            use_high_res_features=True,
            iou_prediction_use_sigmoid=True,
            pred_obj_scores=True,
            pred_obj_scores_mlp=True,
            use_multimask_token_for_obj_ptr=True,
        )
    return model.eval()


@dataclass(frozen=True)
class FrameFeatures:
    """SAM 2's image features of one frame, shared by every expression (batch 1)."""

    vision_feats: list[torch.Tensor]  # per level (HW, 1, C), the top level last
    vision_pos: list[torch.Tensor]  # per level (HW, 1, C)
    feat_sizes: list[tuple[int, int]]
    high_res: list[torch.Tensor]  # levels 0 and 1 as (1, C', H, W), already projected by conv_s0/conv_s1


def encode_frame(sam: SAM2Base, image: torch.Tensor) -> FrameFeatures:
    """image: (1, 3, S, S) normalised -> the frame's features (Hiera + FPN, run once per frame)."""
    backbone_out = sam.forward_image(image)
    _, feats, pos, sizes = sam._prepare_backbone_features(backbone_out)
    high_res = [x.permute(1, 2, 0).view(x.size(1), x.size(2), *s) for x, s in zip(feats[:-1], sizes[:-1])]
    return FrameFeatures(feats, pos, sizes, high_res)


@dataclass(frozen=True)
class DecoderOutput:
    """One frame's decoder output for K expressions (M = 3 multimask candidates)."""

    multimask_logits: torch.Tensor  # (K, M, h, w) before object-score gating, h = w = 4 x embedding
    iou: torch.Tensor  # (K, M) predicted IoU (sigmoid)
    mask_tokens: torch.Tensor  # (K, M, C) output tokens of the candidates
    object_score_logits: torch.Tensor  # (K, 1)


def decode_masks(
    decoder: MaskDecoder,
    image_embedding: torch.Tensor,
    image_pe: torch.Tensor,
    sparse: torch.Tensor,
    dense: torch.Tensor,
    high_res: list[torch.Tensor],
    fuse_mask_tokens: Callable[[torch.Tensor], torch.Tensor],
    keep_single_mask_token: bool = False,
) -> DecoderOutput:
    """``MaskDecoder.predict_masks`` with the mask tokens fused before the two-way transformer.

    Args:
        image_embedding: (K, C, h, w) after pixel-level fusion; image_pe: (1, C, h, w).
        sparse: (K, N, C) prompt tokens; dense: (K, C, h, w).
        high_res: SAM 2's two high-resolution feature maps of the frame, (1, C', H', W') each.
        fuse_mask_tokens: (1, 4, C) -> (K, 4, C), the object-level fusions.
        keep_single_mask_token: also return token 0's mask (M = 4), as the official image pre-training
            path uses; tracking drops it (M = 3).
    """
    mask_tokens = fuse_mask_tokens(decoder.mask_tokens.weight.unsqueeze(0))
    batch = mask_tokens.shape[0]
    head_tokens = torch.cat([decoder.obj_score_token.weight, decoder.iou_token.weight]).unsqueeze(0)
    tokens = torch.cat([head_tokens.expand(batch, -1, -1), mask_tokens, sparse.to(mask_tokens.dtype)], dim=1)
    src = image_embedding + dense
    _, channels, height, width = src.shape
    hidden, src = decoder.transformer(src, image_pe, tokens)
    iou_token, mask_tokens_out = hidden[:, 1], hidden[:, 2 : 2 + decoder.num_mask_tokens]

    src = src.transpose(1, 2).reshape(batch, channels, height, width)
    upscale1, norm1, act1, upscale2, act2 = decoder.output_upscaling
    feat_s0, feat_s1 = high_res
    upscaled = act1(norm1(upscale1(src) + feat_s1))
    upscaled = act2(upscale2(upscaled) + feat_s0)
    hyper = torch.stack(
        [mlp(mask_tokens_out[:, i]) for i, mlp in enumerate(decoder.output_hypernetworks_mlps)], dim=1
    )
    _, up_channels, up_h, up_w = upscaled.shape
    masks = (hyper @ upscaled.reshape(batch, up_channels, up_h * up_w)).reshape(batch, -1, up_h, up_w)
    iou = decoder.iou_prediction_head(iou_token)
    object_score = decoder.pred_obj_score_head(hidden[:, 0])
    # Multimask output: token 0 (the single-mask token) is dropped, as SAM 2 does when tracking.
    first = 0 if keep_single_mask_token else 1
    return DecoderOutput(masks[:, first:], iou[:, first:], mask_tokens_out[:, first:], object_score)


@dataclass(frozen=True)
class TrackOutput:
    """One frame's result for K expressions, plus what the memory bank stores."""

    decoder: DecoderOutput
    dense_prompt: torch.Tensor | None  # (K, 1, h, w) the prior as the prompt encoder receives it
    low_res_logits: torch.Tensor  # (K, 1, h, w) the chosen masks, gated (-1024 where no object)
    memory: dict  # the entry sam2's memory selection reads: maskmem_features, maskmem_pos_enc, obj_ptr


def track_step(
    sam: SAM2Base,
    aggregator: HierarchicalAggregator,
    features: FrameFeatures,
    context: TrackingContext,
    memory_bank: dict,
    frame_index: int,
    dense_prompt: bool = True,
    memory_dtype: torch.dtype = torch.bfloat16,
    points: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> TrackOutput:
    """Segment one frame for the K expressions of ``context`` at once and encode their memory.

    The expressions share the frame's image features and advance together through memory attention, the
    aggregator and the decoder as one batch (one launch sequence for all of them); each has its own prompts,
    global context and memories, so the result of each equals tracking it alone.

    ``frame_index`` counts within the clip of ``context``; ``memory_bank`` is sam2's
    ``{"cond_frame_outputs": {...}, "non_cond_frame_outputs": {...}}`` of the K expressions (tensors with a
    batch of K), read here and written by the caller. A frame tracked with an empty bank is the initial frame
    (no memory to attend to); the conditioning frames are the bank's ``cond_frame_outputs``.

    ``points`` ((K, n, 2) coordinates in SAM 2's input, (K, n) labels: 1 positive, 0 negative) take the place
    of the official model's two "no point" tokens in the sparse prompt (see :mod:`mpgsam2.inference.clicks`).
    """
    count, num_frames = context.num_expressions, context.num_frames
    is_initial = not (memory_bank["cond_frame_outputs"] or memory_bank["non_cond_frame_outputs"])
    top = features.vision_feats[-1]  # (HW, 1, C), shared by the expressions
    pixel = sam._prepare_memory_conditioned_features(
        frame_idx=frame_index,
        is_init_cond_frame=is_initial,
        current_vision_feats=[top.expand(-1, count, -1)],
        current_vision_pos_embeds=[features.vision_pos[-1].expand(-1, count, -1)],
        feat_sizes=features.feat_sizes[-1:],
        output_dict=memory_bank,
        num_frames=num_frames,
    )
    pointers = {t: out["obj_ptr"] for part in memory_bank.values() for t, out in part.items()}
    # Only conditioning frames in the past give their pointers (SAM 2 at inference), as frame 0 does.
    conditioning = sorted(t for t in memory_bank["cond_frame_outputs"] if t <= frame_index)
    object_memory = aggregator.object_memory(
        frame_index, num_frames, pointers, conditioning, context.pointer_codes
    )

    device = pixel.device
    prompt_encoder = sam.sam_prompt_encoder
    if points is None:
        points = (
            torch.zeros(count, 1, 2, device=device),
            -torch.ones(count, 1, dtype=torch.int32, device=device),
        )
    prior_prompt = None
    if dense_prompt:
        prior = context.priors[:, frame_index, None].float()
        prior_prompt = F.interpolate(
            prior, size=prompt_encoder.mask_input_size, mode="bilinear", align_corners=False, antialias=True
        )
    sparse, dense = prompt_encoder(points=points, boxes=None, masks=prior_prompt)
    sparse = torch.cat([sparse, context.sparse_prompts[:, frame_index, None].to(sparse.dtype)], dim=1)
    image_pe = prompt_encoder.get_dense_pe()

    text = context.text_features[:, frame_index]
    fused = aggregator.fuse_pixels(pixel, image_pe, context.merged_embeddings, text, context.text_padding)
    decoded = decode_masks(
        sam.sam_mask_decoder,
        fused,
        image_pe,
        sparse,
        dense.expand(count, -1, -1, -1) if dense.shape[0] != count else dense,
        features.high_res,
        lambda tokens: aggregator.fuse_mask_tokens(tokens, context.mask_embeddings, object_memory),
    )

    is_object = decoded.object_score_logits > 0  # (K, 1)
    candidates = torch.where(is_object[:, :, None, None], decoded.multimask_logits, NO_OBJ_SCORE).float()
    best = torch.argmax(decoded.iou, dim=-1)
    rows = torch.arange(count, device=device)
    low_res = candidates[rows, best].unsqueeze(1)
    high_res = F.interpolate(
        low_res, size=(sam.image_size, sam.image_size), mode="bilinear", align_corners=False
    )
    pointer = sam.obj_ptr_proj(decoded.mask_tokens[rows, best])
    presence = is_object.to(pointer.dtype)
    pointer = presence * pointer + (1 - presence) * sam.no_obj_ptr

    maskmem_features, maskmem_pos_enc = sam._encode_new_memory(
        current_vision_feats=features.vision_feats,
        feat_sizes=features.feat_sizes,
        pred_masks_high_res=high_res,
        object_score_logits=decoded.object_score_logits,
        is_mask_from_pts=is_initial,
    )
    memory = {
        "maskmem_features": maskmem_features.to(memory_dtype),
        "maskmem_pos_enc": maskmem_pos_enc,
        "obj_ptr": pointer,
    }
    return TrackOutput(decoded, prior_prompt, low_res, memory)
