"""Writes examples/toy_shapes.mp4: a generated clip of shapes for the toy model, and lists its expressions.

The clip comes from :func:`mpgsam2.datasets.toy.generate_toy_clip` with a seed that no training or evaluation
uses, longer than the training clips, each frame scaled up by a whole factor with nearest neighbours (the
model sees the generator's frames again after its own resizing, and a viewer sees more than 128 pixels).

Run: python scripts/make_toy_example.py [--seed 990028] [--frames 40] [--scale 3] [--fps 10] [--output PATH]
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from mpgsam2.datasets.toy import ToyConfig, generate_toy_clip
from mpgsam2.video_io import write_video

logger = logging.getLogger("make_toy_example")

#: Far from the training seeds (0 on) and the evaluation seeds (900000 on).
EXAMPLE_SEED = 990_028


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=EXAMPLE_SEED)
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--scale", type=int, default=3, help="whole factor: each pixel becomes scale x scale")
    parser.add_argument("--fps", type=float, default=10.0)
    parser.add_argument("--output", type=Path, default=Path("examples/toy_shapes.mp4"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    clip = generate_toy_clip(args.seed, ToyConfig(num_frames=args.frames, max_expressions=4))
    frames = np.repeat(np.repeat(clip.frames, args.scale, axis=1), args.scale, axis=2)
    write_video(args.output, frames, args.fps, crf=12)
    logger.info("Wrote %s: %d frames of %dx%d", args.output, *frames.shape[:3])
    for expression in clip.expressions:
        hidden = int((~clip.target_masks(expression).any(axis=(1, 2))).sum())
        logger.info("  %-45s %-10s hidden on %d frames", expression.text, expression.kind, hidden)


if __name__ == "__main__":
    main()
