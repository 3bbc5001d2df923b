"""MPG-SAM 2: BEiT-3 + mask prior generator + SAM 2 with the hierarchical global-historical aggregator.

The model is stateless with respect to videos: per-video state lives in
:class:`mpgsam2.inference.session.VideoSession` and the tracking loop in
:class:`mpgsam2.inference.predictor.VideoPredictor`. This module only composes components; weights come from
:mod:`mpgsam2.checkpoints`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .aggregator import HierarchicalAggregator
from .beit3 import BEiT3, BEiT3Output
from .config import MPGSAM2Config, get_config
from .mask_prior import GlobalContext, MaskPriorGenerator, TrackingContext
from .random_init import randomize_
from .sam2_adapter import FrameFeatures, TrackOutput, build_sam2, encode_frame, track_step


class MPGSAM2(nn.Module):
    """The whole network. Build it with :func:`build_model`, load weights with :mod:`mpgsam2.checkpoints`."""

    def __init__(self, config: MPGSAM2Config):
        super().__init__()
        self.config = config
        self.multimodal_encoder = BEiT3(config.beit3)
        self.mask_prior = MaskPriorGenerator(config.mask_prior, config.beit3, config.prompt_dim)
        self.aggregator = HierarchicalAggregator(config.aggregator, config.prompt_dim)
        self.sam2 = build_sam2(config.sam2)

    def _apply(self, fn, recurse: bool = True):
        # sam2 keeps its RoPE tables as plain attributes and moves them on first use, one copy per attention
        # layer in the middle of tracking; they follow the weights instead.
        super()._apply(fn, recurse)
        for module in self.sam2.memory_attention.modules():
            table = getattr(module, "freqs_cis", None)
            if isinstance(table, torch.Tensor) and not table.is_meta:
                module.freqs_cis = fn(table)
        return self

    @property
    def device(self) -> torch.device:
        return self.sam2.no_mem_embed.device

    @property
    def dtype(self) -> torch.dtype:
        return self.sam2.no_mem_embed.dtype

    def encode_clip(
        self,
        images: torch.Tensor,
        input_ids: torch.Tensor,
        text_padding: torch.Tensor | None = None,
        frame_indices: torch.Tensor | None = None,
        chunk_size: int = 8,
    ) -> tuple[GlobalContext, BEiT3Output]:
        """The global stage for one expression over one clip.

        Args:
            images: (T, 3, 224, 224) normalised BEiT-3 inputs.
            input_ids: (L,) token ids; text_padding: (L,) bool, True where the official set-up masks a token.
            frame_indices: (T,) frame numbers for the temporal code (0..T-1 by default).
            chunk_size: frames per BEiT-3 batch; bounds memory on long clips without changing results.
        Returns:
            The global context and BEiT-3's output (T rows).
        """
        num_frames = images.shape[0]
        outputs = []
        for start in range(0, num_frames, chunk_size):
            batch = images[start : start + chunk_size]
            ids = input_ids.unsqueeze(0).expand(len(batch), -1)
            padding = None if text_padding is None else text_padding.unsqueeze(0).expand(len(batch), -1)
            outputs.append(self.multimodal_encoder(batch, ids, padding))
        encoded = BEiT3Output(
            *(torch.cat([getattr(o, name) for o in outputs]) for name in BEiT3Output.__dataclass_fields__)
        )
        return self.mask_prior(encoded, frame_indices), encoded

    def encode_frame(self, image: torch.Tensor) -> FrameFeatures:
        """image: (1, 3, S, S) normalised SAM 2 input -> Hiera/FPN features (shared by all expressions)."""
        return encode_frame(self.sam2, image)

    def merge_mask_embeddings(self, context: GlobalContext) -> torch.Tensor:
        """(T * (g/2)^2, C): the pixel-level fusion's keys, constant over a clip, so computed once."""
        return self.aggregator.merge_patches(context.mask_embeddings)

    def tracking_context(self, contexts: Sequence[GlobalContext]) -> TrackingContext:
        """The global contexts of K expressions over one clip, batched for :meth:`track_frame` (once per clip:
        the pixel-level fusion's keys, the padding of shorter expressions, the pointers' temporal codes)."""
        lengths = [c.text_features.shape[1] for c in contexts]
        longest = max(lengths)
        text = torch.stack(
            [F.pad(c.text_features, (0, 0, 0, longest - c.text_features.shape[1])) for c in contexts]
        )
        padding = None
        if min(lengths) < longest:
            positions = torch.arange(longest, device=text.device)
            padding = torch.stack([positions >= length for length in lengths])
        first = contexts[0]
        return TrackingContext(
            priors=torch.stack([c.priors for c in contexts]),
            mask_embeddings=torch.stack([c.mask_embeddings.flatten(0, 1) for c in contexts]),
            merged_embeddings=torch.stack([self.merge_mask_embeddings(c) for c in contexts]),
            sparse_prompts=torch.stack([c.sparse_prompts for c in contexts]),
            text_features=text,
            text_padding=padding,
            pointer_codes=self.aggregator.pointer_codes(first.num_frames, first.priors.device),
        )

    def track_frame(
        self,
        features: FrameFeatures,
        context: TrackingContext,
        memory_bank: dict,
        frame_index: int,
        memory_dtype: torch.dtype | None = None,
        points: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> TrackOutput:
        """One frame for the K expressions of ``context`` at once; see
        :func:`mpgsam2.modeling.sam2_adapter.track_step`. ``memory_dtype``: how memories are stored (the
        configuration's, bfloat16, unless the device lacks it); ``points``: clicks on this frame."""
        return track_step(
            self.sam2,
            self.aggregator,
            features,
            context,
            memory_bank,
            frame_index,
            dense_prompt=self.config.mask_prior.dense_prompt,
            memory_dtype=memory_dtype or getattr(torch, self.config.sam2.memory_storage_dtype),
            points=points,
        )


def build_model(preset: str | MPGSAM2Config = "large", seed: int | None = None) -> MPGSAM2:
    """A randomly initialised model of a named preset (``"large"``, ``"base"``, ``"test"``) or a config.

    With ``seed``, the weights follow :func:`mpgsam2.modeling.random_init.randomize_` (deterministic,
    objects "present"); without, PyTorch's default initialisation.
    """
    config = get_config(preset) if isinstance(preset, str) else preset
    model = MPGSAM2(config).eval()
    if seed is not None:
        randomize_(model, seed)
    return model
