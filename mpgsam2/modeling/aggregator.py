"""Hierarchical global-historical aggregator (inside SAM 2's mask decoder).

Three cross-attention fusions, each a post-norm layer (attention, residual, LayerNorm, ReLU FFN, residual,
LayerNorm):

* **pixel-level global fusion**: the memory-conditioned image embedding attends to the 2x2 patch-merged mask
  embeddings of *all* frames and the current frame's text features;
* **object-level global fusion**: SAM 2's four mask tokens attend to all frames' mask embeddings;
* **object-level local (historical) fusion**: the mask tokens attend to past object pointers, each with a
  sine code of its distance in frames.

Each fusion can be switched off or stacked (the paper's ablations); the defaults are the released model.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from sam2.modeling.sam2_utils import get_1d_sine_pe
from torch import nn

from .attention import multihead_attention
from .config import AggregatorConfig


class FusionLayer(nn.Module):
    """Cross-attention of ``target`` to ``memory`` followed by an FFN, post-norm."""

    def __init__(self, dim: int, num_heads: int, ffn_dim: int):
        super().__init__()
        self.multihead_attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.linear1 = nn.Linear(dim, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)

    def forward(
        self,
        target: torch.Tensor,
        memory: torch.Tensor,
        target_pos: torch.Tensor | None = None,
        memory_pos: torch.Tensor | None = None,
        memory_padding: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """target: (B, N, C), memory: (B, M, C); positions are added to queries and keys, never values;
        ``memory_padding`` (B, M) bool marks memory entries to ignore."""
        query = target if target_pos is None else target + target_pos
        key = memory if memory_pos is None else memory + memory_pos
        attended = multihead_attention(self.multihead_attn, query, key, memory, key_padding=memory_padding)
        target = self.norm1(target + attended)
        return self.norm2(target + self.linear2(torch.relu(self.linear1(target))))


class HierarchicalAggregator(nn.Module):
    """The three fusions and the patch merge of the mask embeddings."""

    def __init__(self, config: AggregatorConfig, dim: int):
        super().__init__()
        self.config = config
        self.dim = dim

        def stack(enabled: bool, count: int) -> nn.ModuleList:
            layers = count if enabled else 0
            return nn.ModuleList(FusionLayer(dim, config.num_heads, config.ffn_dim) for _ in range(layers))

        self.patch_merge = nn.Linear(dim * config.patch_size**2, dim)
        self.pixel_global = stack(config.pixel_global, config.num_pixel_layers)
        self.object_global = stack(config.object_global, config.num_object_layers)
        self.object_local = stack(config.object_local, config.num_object_layers)

    def merge_patches(self, mask_embeddings: torch.Tensor) -> torch.Tensor:
        """Space-to-depth 2x2 merge and projection of every frame's mask embeddings.

        (T, g*g, C) -> (T * (g/2)^2, C), tokens ordered frame, row, column; merged channel c*4 + dy*2 + dx.
        """
        frames, tokens, channels = mask_embeddings.shape
        grid = int(round(tokens**0.5))
        p = self.config.patch_size
        cells = grid // p
        x = mask_embeddings.reshape(frames, grid, grid, channels).permute(0, 3, 1, 2)  # (T, C, g, g)
        x = x.reshape(frames, channels, cells, p, cells, p).permute(0, 2, 4, 1, 3, 5)
        x = x.reshape(frames * cells * cells, channels * p * p)
        return self.patch_merge(x)

    def fuse_pixels(
        self,
        image_embedding: torch.Tensor,
        image_pe: torch.Tensor,
        merged_embeddings: torch.Tensor,
        text_features: torch.Tensor,
        text_padding: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Pixel-level global fusion, for K expressions at once.

        Args:
            image_embedding: (K, C, h, w) memory-conditioned image embeddings of the current frame.
            image_pe: (1, C, h, w) SAM 2's dense positional encoding (added to the queries).
            merged_embeddings: (K, M, C) from :meth:`merge_patches` (all frames of the clip).
            text_features: (K, L, C) the current frame's projected text tokens.
            text_padding: (K, L) bool, True at padding (expressions of different lengths), or None.
        Returns:
            (K, C, h, w) the fused embeddings.
        """
        if len(self.pixel_global) == 0:
            return image_embedding
        count, channels, height, width = image_embedding.shape
        x = image_embedding.flatten(2).transpose(1, 2)
        pos = image_pe.flatten(2).transpose(1, 2)
        memory = torch.cat([merged_embeddings, text_features.to(merged_embeddings.dtype)], dim=1).to(x.dtype)
        padding = None
        if text_padding is not None:
            visible = text_padding.new_zeros(count, merged_embeddings.shape[1])
            padding = torch.cat([visible, text_padding], dim=1)
        for layer in self.pixel_global:
            x = layer(x, memory, target_pos=pos, memory_padding=padding)
        return x.transpose(1, 2).reshape(count, channels, height, width)

    def fuse_mask_tokens(
        self,
        mask_tokens: torch.Tensor,
        mask_embeddings: torch.Tensor,
        object_memory: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> torch.Tensor:
        """Object-level global, then local (historical) fusion of SAM 2's mask tokens, for K expressions.

        Args:
            mask_tokens: (1, 4, C) SAM 2's mask tokens (the same for every expression).
            mask_embeddings: (K, T * g*g, C) all frames' mask embeddings, frame-major.
            object_memory: (pointers (K, n, C), positions (n, C)) from :meth:`object_memory`, or None on the
                initial frame.
        Returns:
            (K, 4, C).
        """
        memory = mask_embeddings.to(mask_tokens.dtype)
        mask_tokens = mask_tokens.expand(memory.shape[0], -1, -1)
        for layer in self.object_global:
            mask_tokens = layer(mask_tokens, memory)
        if object_memory is not None:
            pointers, positions = object_memory
            pointers, positions = pointers.to(mask_tokens.dtype), positions.unsqueeze(0).to(mask_tokens.dtype)
            for layer in self.object_local:
                mask_tokens = layer(mask_tokens, pointers, memory_pos=positions)
        return mask_tokens

    def pointer_codes(self, num_frames: int, device: torch.device) -> torch.Tensor:
        """(T, C) the temporal code of every distance 0..T-1 in a clip of T frames: made once per clip, so
        that no frame makes a tensor on the host.

        Distances are normalised by ``min(T, 16) - 1``, so the same gap gets a different code in clips of
        different lengths (an official quirk, kept).
        """
        window = min(num_frames, self.config.max_object_pointers)
        distances = torch.arange(num_frames, device=device, dtype=torch.float32)
        return get_1d_sine_pe(distances / max(window - 1, 1), dim=self.dim)

    def object_memory(
        self,
        frame_index: int,
        num_frames: int,
        pointers: dict[int, torch.Tensor],
        conditioning_frames: Sequence[int],
        codes: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The object pointers that the historical fusion attends to, with their temporal code.

        Mirrors the official selection (SAM 2's): the pointers of the conditioning frames at their distance
        from ``frame_index`` (the official model has one, frame 0), then those of up to ``min(T, 16) - 1``
        preceding frames that are not conditioning frames, nearest first.

        Args:
            pointers: frame index -> (K, C) object pointers, for the frames in the memory bank.
            conditioning_frames: the bank's conditioning frames, in order.
            codes: :meth:`pointer_codes` of the clip (made here when not given).
        Returns:
            ((K, n, C) pointers, (n, C) positional codes), or None when the bank is empty (the initial frame).
        """
        if not pointers:
            return None
        window = min(num_frames, self.config.max_object_pointers)
        entries = [(abs(frame_index - c), pointers[c]) for c in conditioning_frames]
        for distance in range(1, window):
            previous = frame_index - distance
            if previous < 0:
                break
            if previous not in conditioning_frames and previous in pointers:
                entries.append((distance, pointers[previous]))
        stacked = torch.stack([p for _, p in entries], dim=-2)
        if codes is None:
            codes = self.pointer_codes(num_frames, stacked.device)
        # Rows picked by Python indices: views of a table on the device, no index tensor from the host.
        picked = torch.stack([codes[d] for d, _ in entries])
        return stacked, picked.to(dtype=stacked.dtype)
