"""What a toy model's masks mean, on held-out generated clips: the figures a shipped toy model must reach.

    python benchmarks/toy_model.py [CHECKPOINT] [--clips 50] [--first-seed 900000]
                                   [--oracle-prior [--oracle-target T] | --grounding | --patch-tokens]
                                   [--json out.json]

``CHECKPOINT`` is ``toy`` (the shipped model, the default) or anything :func:`mpgsam2.load_model` reads (a
training run's ``checkpoint-N`` folder, a folder with ``model.safetensors`` and ``config.json``). The clips
come from :func:`mpgsam2.datasets.toy.generate_toy_clip` with seeds from ``--first-seed`` on
(``configs/toy.json`` trains on seeds 0 to 11999; pass seeds no training used). Prints one JSON object with
the figures of :func:`mpgsam2.datasets.toy.scoring.score_toy_model`: ``single_jf``, ``multi_jf``,
``hidden_absent``, ``prior_on_target`` and the J&F per expression kind of the single runs and of the runs
with several expressions, with their counts, ``hidden_absent`` per kind and on the hidden frames with and
without a look-alike in view (another shape that the expression's words fit) and with a twin in view (one
that shares every attribute with the target), and where the J&F below 1 is
lost (``single_jf_lost``, ``multi_jf_lost``: a mask's outline, another shape, a target missed, a hidden
one shown), with the part lost on the frames where under 30 % of the target shows
(``single_jf_lost_mostly_hidden``, with ``mostly_hidden_frames`` and the share of them drawn). ``--oracle-prior`` gives the single runs the ground truth as their
prior masks, in the form the prior loss taught the model (``--oracle-target``, by default the checkpoint's
recorded ``loss.prior_target``): what the rest of the model makes of a perfect grounding. ``--grounding`` prints instead the figures
of :func:`mpgsam2.datasets.toy.scoring.score_grounding`: where the priors of every phrasing of every target
point (BEiT-3 and the mask prior generator alone), by kind of expression, target size and the attributes
named, and for position expressions how often the peak is on a look-alike: which words the model has learned. ``--patch-tokens`` prints instead the figures of
:func:`mpgsam2.datasets.toy.probing.probe_patch_tokens`: linear read-outs of the colour, the kind and the size
of the shape under each of BEiT-3's patch tokens, fitted on the first three quarters of the clips and scored on
the rest, with each attribute's chance level: what the image encoder sees.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import torch

logger = logging.getLogger("benchmarks.toy_model")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", nargs="?", default="toy")
    parser.add_argument("--clips", type=int, default=50)
    parser.add_argument("--first-seed", type=int, default=900_000)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--oracle-prior", action="store_true", help="the ground truth as the prior masks")
    parser.add_argument(
        "--oracle-target",
        default=None,
        help="the oracle prior's cell target (default: the checkpoint's recorded loss.prior_target)",
    )
    mode.add_argument("--grounding", action="store_true", help="the priors of every expression, by words")
    mode.add_argument("--patch-tokens", action="store_true", help="what BEiT-3's patch tokens carry")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)

    from mpgsam2 import VideoPredictor
    from mpgsam2.checkpoints import resolve_source
    from mpgsam2.datasets.toy.oracle import recorded_prior_target
    from mpgsam2.training.losses import PRIOR_TARGETS

    if args.oracle_target not in (None, *PRIOR_TARGETS):
        parser.error(f"--oracle-target must be one of {sorted(PRIOR_TARGETS)}, not {args.oracle_target!r}.")
    from mpgsam2.datasets.toy.probing import probe_patch_tokens
    from mpgsam2.datasets.toy.scoring import score_grounding, score_toy_model

    predictor = VideoPredictor.from_pretrained(args.checkpoint, device="cpu")
    started = time.perf_counter()
    seeds = range(args.first_seed, args.first_seed + args.clips)
    if args.grounding:
        scores, mode = score_grounding(predictor, seeds), {"grounding": True}
    elif args.patch_tokens:
        fitted = seeds[: max(1, len(seeds) * 3 // 4)]
        scores = probe_patch_tokens(predictor, fitted, seeds[len(fitted) :])
        mode = {"patch_tokens": True}
    else:
        source = resolve_source(args.checkpoint)
        target = args.oracle_target or recorded_prior_target(source if source.is_dir() else source.parent)
        scores = score_toy_model(predictor, seeds, oracle=args.oracle_prior, oracle_target=target)
        mode = {"oracle_prior": args.oracle_prior, **({"oracle_target": target} if args.oracle_prior else {})}
    result = {
        "checkpoint": str(args.checkpoint),
        "seeds": [args.first_seed, args.first_seed + args.clips - 1],
        **mode,
        **scores.as_dict(),
        "seconds": round(time.perf_counter() - started, 1),
    }
    text = json.dumps(result, indent=2)
    if args.json:
        args.json.write_text(text + "\n")
    sys.stdout.write(text + "\n")


if __name__ == "__main__":
    main()
