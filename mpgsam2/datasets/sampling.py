"""Which frames of a video make a training clip: the official anchor / local / global sampling.

The official Ref-YouTube-VOS and MeViS datasets enumerate one training item per expression and per anchor
frame ``0, T, 2T, ...`` (T = frames per clip), and build each clip from

* the anchor frame,
* one local neighbour on each side, 1 to 3 frames away (clamped to the video),
* ``T - 3`` global frames drawn without replacement from outside the local window (from the whole video when
  that is too short, repeating frames when even the whole video is too short),

sorted in time. Duplicates are possible (an anchor at frame 0 is its own "previous" neighbour) and kept, as in
the official code; so is its handling of ``T = 2`` (three indices drawn, the first two in time kept).
"""

from __future__ import annotations

import random

LOCAL_MAX_OFFSET = 3


def anchor_frames(num_video_frames: int, num_frames: int) -> list[int]:
    """The anchors the official datasets enumerate for one expression: ``range(0, length, T)``."""
    return list(range(0, num_video_frames, max(num_frames, 1)))


def sample_clip_frames(num_video_frames: int, anchor: int, num_frames: int, rng: random.Random) -> list[int]:
    """Frame indices (sorted, length ``num_frames``) of one clip around ``anchor``.

    Args:
        num_video_frames: frames in the video (at least 1).
        anchor: the anchor frame index, ``0 <= anchor < num_video_frames``.
        num_frames: frames per clip (1 gives the anchor alone).
        rng: the random source (one per item, so that sampling is reproducible).
    """
    if num_video_frames < 1 or not 0 <= anchor < num_video_frames:
        raise ValueError(f"Anchor {anchor} is outside a video of {num_video_frames} frames.")
    if num_frames < 1:
        raise ValueError("A clip needs at least one frame.")
    indices = [anchor]
    if num_frames != 1:
        before = rng.randint(1, LOCAL_MAX_OFFSET)
        after = rng.randint(1, LOCAL_MAX_OFFSET)
        indices += [max(0, anchor - before), min(num_video_frames - 1, anchor + after)]
        if num_frames > 3:
            all_frames = list(range(num_video_frames))
            outside = all_frames[: min(indices)] + all_frames[max(indices) :]
            needed = num_frames - len(indices)
            if len(outside) > needed:
                indices += [outside[i] for i in rng.sample(range(len(outside)), needed)]
            elif num_video_frames >= needed:
                indices += rng.sample(all_frames, needed)
            else:
                repeats, rest = divmod(needed, num_video_frames)
                indices += rng.sample(all_frames, rest) + all_frames * repeats
    indices.sort()
    return indices[:num_frames]
