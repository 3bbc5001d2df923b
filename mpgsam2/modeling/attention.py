"""Multi-head attention with ``nn.MultiheadAttention``'s weights through PyTorch's fused kernel.

``nn.MultiheadAttention`` keeps the official parameter layout (``in_proj_weight``, ``out_proj``), but its
inference fast path materialises the whole (heads, queries, keys) score matrix: 12.5 GB for the 196 T tokens
of a 100-frame clip (measured on this CPU, against 0.65 GB through ``scaled_dot_product_attention``). The
global stage attends over every frame at once, so it goes through here. On MPS the fused kernel itself
materialises the matrix (PyTorch's issue tracker reports 27.7 GB at 150 frames), so there the queries go in
chunks (:func:`query_chunk_for`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def multihead_attention(
    module: nn.MultiheadAttention,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    key_padding: torch.Tensor | None = None,
    query_chunk: int | None = None,
) -> torch.Tensor:
    """``module(query, key, value)`` for batch-first inputs without materialising attention weights.

    Args:
        query: (B, Nq, C); key, value: (B, Nk, C).
        key_padding: (B, Nk) bool, True for keys no query may attend to (padding).
        query_chunk: attend this many queries at a time (where the fused kernel would otherwise build the
            whole score matrix, as on MPS); the result is the same.
    Returns:
        (B, Nq, C).
    """
    heads = module.num_heads
    batch, queries, channels = query.shape
    w_q, w_k, w_v = module.in_proj_weight.chunk(3)
    b_q, b_k, b_v = module.in_proj_bias.chunk(3)

    def project(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        return F.linear(x, weight, bias).view(batch, x.shape[1], heads, channels // heads).transpose(1, 2)

    q, k, v = project(query, w_q, b_q), project(key, w_k, b_k), project(value, w_v, b_v)
    mask = None if key_padding is None else ~key_padding[:, None, None, :]
    dropout = module.dropout if module.training else 0.0
    if query_chunk is None or queries <= query_chunk:
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
    else:
        attended = torch.cat(
            [
                F.scaled_dot_product_attention(
                    q[:, :, i : i + query_chunk], k, v, attn_mask=mask, dropout_p=dropout
                )
                for i in range(0, queries, query_chunk)
            ],
            dim=2,
        )
    return module.out_proj(attended.transpose(1, 2).reshape(batch, queries, channels))


#: Queries per chunk where the fused kernel builds the whole score matrix: bounds it at
#: heads x 4096 x keys (about 1 GB in fp32 for 8 heads and 196 x 40 keys).
MPS_QUERY_CHUNK = 4096


def query_chunk_for(device: torch.device) -> int | None:
    """Queries per chunk for the global stage's attention on ``device`` (None: all at once)."""
    return MPS_QUERY_CHUNK if device.type == "mps" else None
