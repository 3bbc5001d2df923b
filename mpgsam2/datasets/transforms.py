"""Raw clips to model inputs, as the official training prepares them.

Both images are squashed to squares with PIL's bilinear filter and ImageNet-normalised (SAM 2: ``S x S``,
1024 for the released models; BEiT-3: 224 x 224); the ground truth is resized to ``S x S`` with nearest
neighbours, where the losses compare it with the predicted logits.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..inference.frames import preprocess
from ..modeling.config import MPGSAM2Config
from ..tokenizer import ExpressionTokenizer
from .samples import RawClip, TrainingClip


class ClipTransform:
    """Turns a :class:`RawClip` into a :class:`TrainingClip` for a model configuration."""

    def __init__(self, config: MPGSAM2Config, tokenizer: ExpressionTokenizer):
        self.image_size = config.sam2.image_size
        self.beit_size = config.beit3.image_size
        self.mean = config.preprocess.mean
        self.std = config.preprocess.std
        # A copy cut to BEiT-3's text positions: the caller's tokenizer is left as it is.
        self.tokenizer = tokenizer.limited_to(config.beit3.max_text_tokens)

    def __call__(self, clip: RawClip) -> TrainingClip:
        sam = torch.stack([preprocess(f, self.image_size, self.mean, self.std) for f in clip.frames])
        beit = torch.stack([preprocess(f, self.beit_size, self.mean, self.std) for f in clip.frames])
        masks = torch.from_numpy(clip.masks.astype(np.float32))[:, None]
        masks = F.interpolate(masks, size=(self.image_size, self.image_size), mode="nearest")[:, 0]
        encoded = self.tokenizer.encode(clip.expression)
        return TrainingClip(
            sam_images=sam,
            beit_images=beit,
            masks=(masks > 0.5).float(),
            visible=torch.from_numpy(clip.visible.copy()),
            input_ids=encoded.input_ids,
            text_padding=encoded.padding,
            expression=clip.expression,
            source=clip.source,
            kind=clip.kind,
            patch_labels=clip.patch_labels,
        )


def collate_clips(clips: Sequence[TrainingClip]) -> list[TrainingClip]:
    """A batch is a list: clips differ in length, text length and path (video or image)."""
    return list(clips)
