"""Mask prior generator: the clip-level ("global") stage of MPG-SAM 2.

From BEiT-3's per-frame outputs it builds, for all frames of a clip at once:

* the visual tokens of every frame refined jointly (one post-norm transformer layer over all 196 T tokens),
* the class token of each frame refined by cross-attention to those tokens and modulated by it,
* the **prior mask** of each frame on the 14x14 patch grid (SAM 2's dense prompt),
* the **mask embeddings** with a temporal code (the global context that SAM 2's decoder fuses),
* the **sparse prompt** from the original class token and the projected **text features**.

Attention runs through PyTorch's fused kernel (:mod:`mpgsam2.modeling.attention`), so the (196 T)^2 attention matrix
is never materialised and memory grows linearly with the clip length.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from sam2.modeling.sam2_utils import get_1d_sine_pe
from torch import nn

from .attention import multihead_attention, query_chunk_for
from .beit3 import BEiT3Output
from .config import BEiT3Config, MaskPriorConfig


class VisualInteraction(nn.Module):
    """One post-norm transformer encoder layer (self-attention, ReLU FFN) over all frames' tokens."""

    def __init__(self, width: int, num_heads: int, ffn_dim: int):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(width, num_heads, batch_first=True)
        self.linear1 = nn.Linear(width, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, width)
        self.norm1 = nn.LayerNorm(width)
        self.norm2 = nn.LayerNorm(width)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens: (1, N, D) -> (1, N, D). No positional encoding, as in the official model."""
        chunk = query_chunk_for(tokens.device)
        attended = multihead_attention(self.self_attn, tokens, tokens, tokens, query_chunk=chunk)
        tokens = self.norm1(tokens + attended)
        return self.norm2(tokens + self.linear2(torch.relu(self.linear1(tokens))))


@dataclass(frozen=True)
class GlobalContext:
    """What the clip-level stage hands to every frame's SAM 2 step (T frames, L text tokens)."""

    prior_logits: torch.Tensor  # (T, g, g) logits of the prior mask, g = 14
    priors: torch.Tensor  # (T, g, g) sigmoid probabilities: the dense prompt source
    mask_embeddings: torch.Tensor  # (T, g*g, C) with the temporal code added, C = SAM 2 width (256)
    sparse_prompts: torch.Tensor  # (T, C) from each frame's class token
    text_features: torch.Tensor  # (T, L, C)

    @property
    def num_frames(self) -> int:
        return self.priors.shape[0]

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> GlobalContext:
        def move(t: torch.Tensor) -> torch.Tensor:
            return t.to(device=device, dtype=dtype or t.dtype)

        return GlobalContext(**{f.name: move(getattr(self, f.name)) for f in dataclasses.fields(self)})


@dataclass(frozen=True)
class TrackingContext:
    """The global contexts of K expressions over one clip, batched, for tracking them together (T frames,
    L the longest expression's tokens; K = 1 is the official model's single expression)."""

    priors: torch.Tensor  # (K, T, g, g) prior-mask probabilities
    mask_embeddings: torch.Tensor  # (K, T * g*g, C) every frame's, for the object-level global fusion
    merged_embeddings: torch.Tensor  # (K, T * (g/2)^2, C) the pixel-level fusion's keys
    sparse_prompts: torch.Tensor  # (K, T, C)
    text_features: torch.Tensor  # (K, T, L, C), padded to the longest expression
    text_padding: torch.Tensor | None  # (K, L) bool, True at padding; None when no expression is padded
    pointer_codes: torch.Tensor  # (T, C) the temporal code of each distance in frames (see the aggregator)

    @property
    def num_frames(self) -> int:
        return self.priors.shape[1]

    @property
    def num_expressions(self) -> int:
        return self.priors.shape[0]


class MaskPriorGenerator(nn.Module):
    """Priors, mask embeddings and prompts for every frame of a clip from BEiT-3's outputs."""

    def __init__(self, config: MaskPriorConfig, beit3: BEiT3Config, prompt_dim: int):
        super().__init__()
        width = config.width
        if width != beit3.embed_dim:
            raise ValueError(
                f"The mask prior generator's width ({width}) must equal BEiT-3's ({beit3.embed_dim}); "
                "a checkpoint with 1024-wide prior modules on a 768-wide BEiT-3 cannot run "
                "(the official code's base layout)."
            )
        self.grid_size = beit3.grid_size
        self.prompt_dim = prompt_dim
        self.visual_interaction = VisualInteraction(width, config.num_heads, config.ffn_dim)
        self.class_token_attention = nn.MultiheadAttention(width, config.num_heads, batch_first=True)
        self.channel_modulation = nn.Linear(width, width)
        self.prior_head = nn.Linear(width, 1)
        self.mask_embedding = nn.Linear(width, prompt_dim)
        self.sparse_prompt = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, prompt_dim))
        self.text_projection = nn.Linear(width, prompt_dim)
        # Scores the projected <s> token for the similarity loss; unused at inference.
        self.sentence_score = nn.Linear(prompt_dim, 1)

    def forward(self, encoded: BEiT3Output, frame_indices: torch.Tensor | None = None) -> GlobalContext:
        """Run the global stage on BEiT-3's output for the T frames of one clip and one expression.

        Args:
            encoded: BEiT-3 output with batch T (one row per frame, the same expression on each).
            frame_indices: (T,) indices for the temporal code; 0..T-1 (the official numbering) by default.
        """
        num_frames, num_patches, width = encoded.visual_tokens.shape
        grid = self.grid_size
        visual = self.visual_interaction(encoded.visual_tokens.reshape(1, num_frames * num_patches, width))
        class_tokens = encoded.class_token.unsqueeze(0)  # (1, T, D)
        attended = multihead_attention(self.class_token_attention, class_tokens, visual, visual)
        modulation = self.channel_modulation(class_tokens * attended).reshape(num_frames, 1, 1, width)
        modulated = visual.reshape(num_frames, grid, grid, width) * modulation  # (T, g, g, D)

        prior_logits = self.prior_head(modulated).squeeze(-1)
        priors = torch.sigmoid(prior_logits)

        if frame_indices is None:
            frame_indices = torch.arange(num_frames, device=visual.device)
        time_code = get_1d_sine_pe(frame_indices.to(visual.dtype), dim=self.prompt_dim)  # (T, C)
        embeddings = self.mask_embedding(modulated).reshape(num_frames, grid * grid, self.prompt_dim)
        embeddings = embeddings + time_code[:, None, :].to(embeddings.dtype)
        return GlobalContext(
            prior_logits=prior_logits,
            priors=priors,
            mask_embeddings=embeddings,
            sparse_prompts=self.sparse_prompt(encoded.class_token),
            text_features=self.text_projection(encoded.text_tokens),
        )

    def sentence_scores(self, text_features: torch.Tensor) -> torch.Tensor:
        """(T, L, C) text features -> (T,) the official ``sen_feat`` scalar (from the ``<s>`` token)."""
        return self.sentence_score(text_features[:, 0]).squeeze(-1)
