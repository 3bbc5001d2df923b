"""Training augmentation of a clip: horizontal flip (with "left" <-> "right" in the expression) and the
official photometric distortion.

The official code flips and distorts only SAM 2's 1024x1024 input: BEiT-3's 224x224 input is made before
the augmentation, so a flipped clip pairs a flipped SAM 2 image and a swapped expression with an unflipped
BEiT-3 image. Here the frames themselves are augmented, before both inputs are made from them, so both
model inputs always show the same (flipped, distorted) picture.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image

from .object_categories import flip_patch_labels
from .samples import RawClip

_LEFT_RIGHT = re.compile("left|right")


def swap_left_right(expression: str) -> str:
    """ "left" <-> "right" everywhere, inside words too ("leftmost" -> "rightmost"), as the official flip."""
    return _LEFT_RIGHT.sub(lambda m: "right" if m.group(0) == "left" else "left", expression)


def horizontal_flip(clip: RawClip) -> RawClip:
    """Mirror frames, masks and patch labels left-right and swap "left" / "right" in the expression."""
    return replace(
        clip,
        frames=np.ascontiguousarray(clip.frames[:, :, ::-1]),
        masks=np.ascontiguousarray(clip.masks[:, :, ::-1]),
        expression=swap_left_right(clip.expression),
        patch_labels=None if clip.patch_labels is None else flip_patch_labels(clip.patch_labels),
    )


def _contrast(image: np.ndarray, rng: random.Random) -> np.ndarray:
    if rng.randint(0, 1):
        image = image * rng.uniform(0.5, 1.5)
    return image


def _hsv_jitter(image: np.ndarray, rng: random.Random) -> np.ndarray:
    """Random saturation (x 0.5-1.5) and hue (+- 18 degrees), each with probability 1/2."""
    scale_saturation = rng.uniform(0.5, 1.5) if rng.randint(0, 1) else None
    hue_shift = rng.uniform(-18.0, 18.0) if rng.randint(0, 1) else None
    if scale_saturation is None and hue_shift is None:
        return image
    rgb = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))
    hsv = np.asarray(rgb.convert("HSV"), dtype=np.float32)
    if scale_saturation is not None:
        hsv[..., 1] = np.clip(hsv[..., 1] * scale_saturation, 0, 255)
    if hue_shift is not None:
        hsv[..., 0] = np.mod(hsv[..., 0] + hue_shift * 256.0 / 360.0, 256.0)
    height, width = hsv.shape[:2]
    back = Image.frombytes("HSV", (width, height), np.round(hsv).astype(np.uint8).tobytes()).convert("RGB")
    return np.asarray(back, dtype=np.float32)


def photometric_distort(frame: np.ndarray, rng: random.Random) -> np.ndarray:
    """The official ``PhotometricDistort`` of one (H, W, 3) uint8 frame, with values clipped to 0-255.

    Brightness (+- 32, p = 1/2); then either contrast before the saturation/hue jitter or after it (p = 1/2
    each, contrast x 0.5-1.5 with p = 1/2); then a random channel permutation (p = 1/2). Unlike the official
    code, which converts RGB arrays with OpenCV's BGR routines and casts without clipping (so bright pixels
    wrap around to dark), hue and saturation are changed in true HSV and values are clipped.
    """
    image = frame.astype(np.float32)
    if rng.randint(0, 1):
        image = image + rng.uniform(-32.0, 32.0)
    if rng.randint(0, 1):
        image = _hsv_jitter(_contrast(image, rng), rng)
    else:
        image = _contrast(_hsv_jitter(image, rng), rng)
    if rng.randint(0, 1):
        image = image[
            ..., list(rng.choice([(0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0), (0, 1, 2)]))
        ]
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class ClipAugmentation:
    """What the official training applies: a clip-level flip (p = 0.5) and per-frame photometric distortion.

    RefCOCO pre-training uses the flip only (``photometric=False``), as the official image transforms.
    """

    flip_probability: float = 0.5
    photometric: bool = True

    def __call__(self, clip: RawClip, rng: random.Random) -> RawClip:
        if rng.random() < self.flip_probability:
            clip = horizontal_flip(clip)
        if self.photometric:
            clip = replace(clip, frames=np.stack([photometric_distort(f, rng) for f in clip.frames]))
        return clip
