"""BEiT-3 multimodal encoder: a multiway transformer over [vision CLS, patches, text tokens].

A compact re-implementation of the BEiT-3 encoder of ``torchscale`` (the code the official model imports),
with the same parameter names so the official checkpoints load unchanged. Every LayerNorm and Linear has a
vision expert ``A`` (applied to the image tokens) and a language expert ``B`` (applied to the text tokens);
self-attention is joint over both. Pre-LayerNorm with sub-LayerNorm ("subln"), GELU, no dropout at inference.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .config import BEiT3Config


class Multiway(nn.Module):
    """Applies expert ``A`` to the image tokens and expert ``B`` to the text tokens."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.A = module
        self.B = copy.deepcopy(module)

    def forward(self, vision: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """vision: (B, P, D), text: (B, L, D) -> the two experts' outputs, kept apart (never copied into one
        sequence: the modalities meet only in the joint attention)."""
        return self.A(vision), self.B(text)


class MultiwayAttention(nn.Module):
    """Joint multi-head self-attention with per-modality projections and an inner LayerNorm."""

    def __init__(self, config: BEiT3Config):
        super().__init__()
        dim = config.embed_dim
        self.num_heads = config.num_heads
        self.q_proj = Multiway(nn.Linear(dim, dim))
        self.k_proj = Multiway(nn.Linear(dim, dim))
        self.v_proj = Multiway(nn.Linear(dim, dim))
        self.out_proj = Multiway(nn.Linear(dim, dim))
        self.inner_attn_ln = Multiway(nn.LayerNorm(dim, eps=config.layer_norm_eps))

    def forward(
        self, vision: torch.Tensor, text: torch.Tensor, key_padding: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """vision: (B, P, D), text: (B, L, D); key_padding: (B, P + L) bool, True where a key is padding."""
        batch, split, dim = vision.shape
        length = split + text.shape[1]
        head_dim = dim // self.num_heads

        def heads(projection: Multiway) -> torch.Tensor:
            joined = torch.cat(projection(vision, text), dim=1)
            return joined.view(batch, length, self.num_heads, head_dim).transpose(1, 2)

        q, k, v = (heads(p) for p in (self.q_proj, self.k_proj, self.v_proj))
        mask = None if key_padding is None else ~key_padding[:, None, None, :]
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        attended = attended.transpose(1, 2).reshape(batch, length, dim)
        return self.out_proj(*self.inner_attn_ln(*attended.split([split, length - split], dim=1)))


class FeedForward(nn.Module):
    """fc1 -> GELU (in fp32, as torchscale does) -> LayerNorm -> fc2."""

    def __init__(self, config: BEiT3Config):
        super().__init__()
        self.fc1 = nn.Linear(config.embed_dim, config.ffn_dim)
        self.fc2 = nn.Linear(config.ffn_dim, config.embed_dim)
        self.ffn_layernorm = nn.LayerNorm(config.ffn_dim, eps=config.layer_norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.fc1(x)
        hidden = F.gelu(hidden.float()).type_as(hidden)
        return self.fc2(self.ffn_layernorm(hidden))


class EncoderLayer(nn.Module):
    def __init__(self, config: BEiT3Config):
        super().__init__()
        norm = nn.LayerNorm(config.embed_dim, eps=config.layer_norm_eps)
        self.self_attn = MultiwayAttention(config)
        self.self_attn_layer_norm = Multiway(norm)
        self.ffn = Multiway(FeedForward(config))
        self.final_layer_norm = Multiway(copy.deepcopy(norm))

    def forward(
        self, vision: torch.Tensor, text: torch.Tensor, key_padding: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """vision: (B, P, D), text: (B, L, D) -> the same shapes."""
        attended = self.self_attn(*self.self_attn_layer_norm(vision, text), key_padding)
        vision, text = vision + attended[0], text + attended[1]
        fed = self.ffn(*self.final_layer_norm(vision, text))
        return vision + fed[0], text + fed[1]


class VisionEmbedding(nn.Module):
    """16x16 patches -> tokens, with a learned class token in front."""

    def __init__(self, config: BEiT3Config):
        super().__init__()
        dim = config.embed_dim
        self.proj = nn.Conv2d(3, dim, kernel_size=config.patch_size, stride=config.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        # Used by BEiT-3's masked image modelling only; kept so that checkpoints load strictly.
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        patches = self.proj(images).flatten(2).transpose(1, 2)
        return torch.cat([self.cls_token.expand(len(images), -1, -1), patches], dim=1)


class PositionTables(nn.Module):
    """Separate learned position tables for the vision (``A``) and text (``B``) tokens."""

    def __init__(self, config: BEiT3Config):
        super().__init__()
        self.A = nn.Embedding(config.vision_position_rows, config.embed_dim)
        self.B = nn.Embedding(config.max_text_positions, config.embed_dim)


def sine_cosine_positions(grid_size: int, dim: int) -> torch.Tensor:
    """(grid_size**2, dim) 2-D sine-cosine codes of the row-major patch grid: the first half of the channels
    codes the row, the second the column, each as sines and cosines of ``dim // 4`` frequencies.

    The frequencies go geometrically from ``pi / grid_size`` (half a period across the image, so that the
    sine of the lowest one, taken about the grid's centre, grows steadily from one edge to the other and a
    linear read-out gives the coordinate) to ``pi`` (neighbouring patches in opposite phase).
    """
    if dim % 4:
        raise ValueError(f"2-D sine-cosine codes need a width divisible by 4, not {dim}.")
    bands = dim // 4
    exponents = torch.arange(bands, dtype=torch.float64) / max(bands - 1, 1)
    frequencies = torch.pi * float(grid_size) ** (exponents - 1)  # (bands,)
    coordinates = torch.arange(grid_size, dtype=torch.float64) - (grid_size - 1) / 2
    angles = coordinates[:, None] * frequencies  # (grid, bands)
    codes = torch.cat([angles.sin(), angles.cos()], dim=1)  # (grid, dim // 2)
    rows = codes[:, None, :].expand(grid_size, grid_size, -1)
    columns = codes[None, :, :].expand(grid_size, grid_size, -1)
    return torch.cat([rows, columns], dim=-1).reshape(grid_size**2, dim).float()


class Encoder(nn.Module):
    def __init__(self, config: BEiT3Config):
        super().__init__()
        self.position_offset = config.position_offset
        self.embed_positions = PositionTables(config)
        self.layers = nn.ModuleList(EncoderLayer(config) for _ in range(config.depth))
        self.layer_norm = Multiway(nn.LayerNorm(config.embed_dim, eps=config.layer_norm_eps))


@dataclass(frozen=True)
class BEiT3Output:
    """Encoder output split by role. B is the batch (one row per frame)."""

    class_token: torch.Tensor  # (B, D): the vision CLS position after the final LayerNorm
    visual_tokens: torch.Tensor  # (B, P, D): the P = 196 patch tokens, row-major
    text_tokens: torch.Tensor  # (B, L, D)
    hidden: torch.Tensor  # (B, 1 + P + L, D): everything, for parity checks


class BEiT3(nn.Module):
    """The BEiT-3 multiway encoder (``mm_extractor.beit3`` in the official checkpoints)."""

    def __init__(self, config: BEiT3Config):
        super().__init__()
        self.config = config
        self.text_embed = nn.Embedding(config.vocab_size, config.embed_dim)
        self.vision_embed = VisionEmbedding(config)
        self.encoder = Encoder(config)

    @torch.no_grad()
    def start_positions_on_grid(self) -> None:
        """Set the learned vision position table to 2-D sine-cosine codes (:func:`sine_cosine_positions`),
        the class token's row and the unused rows before it to 0.

        For training from scratch: random rows are codes of positions with nothing in common between
        neighbours, from which no linear read-out gives a patch's row or column (196 codes in 128 channels
        for the ``toy`` preset), so "the shape on the left" has no direction to start from. The table stays
        a parameter that trains, and checkpoints keep their layout.
        """
        table = self.encoder.embed_positions.A.weight
        first_patch = self.encoder.position_offset + 1  # after the class token's row
        codes = sine_cosine_positions(self.config.grid_size, self.config.embed_dim)
        table.zero_()
        table[first_patch : first_patch + codes.shape[0]] = codes.to(table)

    def forward(
        self, images: torch.Tensor, input_ids: torch.Tensor, text_padding: torch.Tensor | None = None
    ) -> BEiT3Output:
        """Encode images with their token ids.

        Args:
            images: (B, 3, 224, 224) normalised images.
            input_ids: (B, L) int64 token ids.
            text_padding: (B, L) bool, True at padding positions (the official set-up also marks ``<unk>``).
        """
        if input_ids.shape[1] > self.config.max_text_tokens:
            raise ValueError(
                f"{input_ids.shape[1]} text tokens exceed BEiT-3's {self.config.max_text_tokens} positions."
            )
        vision = self.vision_embed(images)
        text = self.text_embed(input_ids)
        split = vision.shape[1]
        positions = self.encoder.embed_positions
        offset = self.encoder.position_offset
        vision = vision + positions.A.weight[offset : offset + split]
        text = text + positions.B.weight[offset : offset + text.shape[1]]

        key_padding = None
        if text_padding is not None and bool(text_padding.any()):
            key_padding = torch.cat(
                [text_padding.new_zeros(text_padding.shape[0], split), text_padding], dim=1
            )
            text = text * (~text_padding).unsqueeze(-1).to(text.dtype)

        # The two modalities travel apart through the layers (every expert sees one of them), and meet only
        # in the joint attention.
        for layer in self.encoder.layers:
            vision, text = layer(vision, text, key_padding)
        vision, text = self.encoder.layer_norm(vision, text)
        return BEiT3Output(
            class_token=vision[:, 0],
            visual_tokens=vision[:, 1:],
            text_tokens=text,
            hidden=torch.cat([vision, text], dim=1),
        )
