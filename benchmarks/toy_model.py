"""What a toy model's masks mean, on held-out generated clips: the figures a shipped toy model must reach.

    python benchmarks/toy_model.py CHECKPOINT [--clips 50] [--first-seed 900000] [--json out.json]

``CHECKPOINT`` is anything :func:`mpgsam2.load_model` reads (a training run's ``checkpoint-N`` folder, a
folder with ``model.safetensors`` and ``config.json``). The clips come from
:func:`mpgsam2.datasets.toy.generate_toy_clip` with seeds from ``--first-seed`` on (``configs/toy.json``
trains on seeds 0 to 2999 and evaluates during training on 900000 to 900019; pass seeds no training used).
Prints one JSON object:

* ``single_jf``: mean J&F with one expression per clip (the clip's first), run alone;
* ``multi_jf``: mean J&F per expression over the clips with two or three expressions, run together;
* ``hidden_absent``: of the frames where an expression's target is fully hidden (covered or off the frame),
  the fraction whose object score is below zero (the model says "not visible"), over both kinds of runs;
* ``prior_on_target``: the fraction of frames with a visible target where the prior's strongest cell lies on
  the target (the grounding, before SAM 2), over the single runs;
* per expression kind (attributes, position, occlusion words): the single runs' mean J&F.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

logger = logging.getLogger("benchmarks.toy_model")


def jf(prediction: np.ndarray, truth: np.ndarray) -> float:
    """J&F of (T, H, W) masks (the DAVIS means over frames; an empty frame predicted empty scores 1)."""
    from mpgsam2.metrics import db_eval_iou, f_measure

    region = float(np.mean(db_eval_iou(truth, prediction)))
    boundary = float(np.mean([f_measure(p, t) for p, t in zip(prediction, truth)]))
    return (region + boundary) / 2


def prior_hits(priors: np.ndarray, truth: np.ndarray) -> list[bool]:
    """Per frame with a visible target: whether the prior's (g, g) strongest cell falls on the target."""
    grid = priors.shape[-1]
    height, width = truth.shape[1:]
    hits = []
    for prior, mask in zip(priors, truth):
        if not mask.any():
            continue
        row, column = np.unravel_index(int(np.argmax(prior)), prior.shape)
        # The cell's pixels: any of them on the target counts.
        cell = mask[
            row * height // grid : (row + 1) * height // grid,
            column * width // grid : (column + 1) * width // grid,
        ]
        hits.append(bool(cell.any()))
    return hits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--clips", type=int, default=50)
    parser.add_argument("--first-seed", type=int, default=900_000)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)

    from mpgsam2 import VideoPredictor, load_model
    from mpgsam2.datasets.toy import ToyConfig, generate_toy_clip
    from mpgsam2.tokenizer import load_tokenizer

    checkpoint = Path(args.checkpoint)
    model = load_model(checkpoint)
    predictor = VideoPredictor(model, load_tokenizer(checkpoint))
    config = ToyConfig()
    single, multi, by_kind = [], [], defaultdict(list)
    hidden, prior = [], []
    started = time.perf_counter()
    for seed in range(args.first_seed, args.first_seed + args.clips):
        clip = generate_toy_clip(seed, config)
        first = clip.expressions[0]
        (alone,) = predictor.segment(clip.frames, [first.text], logits=False)
        truth = clip.target_masks(first)
        score = jf(alone.masks, truth)
        single.append(score)
        by_kind[first.kind].append(score)
        empty = ~truth.reshape(len(truth), -1).any(-1)
        hidden.extend((alone.object_scores[empty] < 0).tolist())
        prior.extend(prior_hits(alone.priors, truth))
        if len(clip.expressions) > 1:
            together = predictor.segment(clip.frames, [e.text for e in clip.expressions], logits=False)
            for expression, result in zip(clip.expressions, together):
                truth = clip.target_masks(expression)
                multi.append(jf(result.masks, truth))
                empty = ~truth.reshape(len(truth), -1).any(-1)
                hidden.extend((result.object_scores[empty] < 0).tolist())
        logger.info("clip %d: J&F %.3f (%s: %s)", seed, score, first.kind, first.text)
    result = {
        "checkpoint": str(checkpoint),
        "clips": args.clips,
        "seeds": [args.first_seed, args.first_seed + args.clips - 1],
        "single_jf": round(statistics.mean(single), 4),
        "multi_jf": round(statistics.mean(multi), 4) if multi else None,
        "multi_expressions": len(multi),
        "hidden_absent": round(float(np.mean(hidden)), 4) if hidden else None,
        "hidden_frames": len(hidden),
        "prior_on_target": round(float(np.mean(prior)), 4) if prior else None,
        "single_jf_by_kind": {k: round(statistics.mean(v), 4) for k, v in sorted(by_kind.items())},
        "seconds": round(time.perf_counter() - started, 1),
    }
    text = json.dumps(result, indent=2)
    if args.json:
        args.json.write_text(text + "\n")
    sys.stdout.write(text + "\n")


if __name__ == "__main__":
    main()
