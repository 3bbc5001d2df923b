"""How fast the toy preset's image encoder learns the kinds of shape when it is told them directly.

    python benchmarks/toy_encoder_kinds.py [--steps 3000] [--batch-size 48] [--lr 1e-3] [--eval-every 250]
                                           [--frames 6000] [--held-out-frames 400] [--threads 2]
                                           [--pytorch-init] [--json out.json]

The toy model's grounding names shapes by colour and size but hardly by kind, and its BEiT-3 patch tokens
carry no more of the kind than chance (``benchmarks/toy_model.py --patch-tokens``). This asks whether the
encoder can learn kinds at all, and how fast, given the strongest signal there is: BEiT-3 of the ``toy``
preset, from random weights (``mpgsam2.build_model("toy", seed=0)``), trained with a linear head on the kind
(square, circle, triangle, star) of the shape that owns each patch
(:func:`mpgsam2.datasets.toy.probing.owned_patches`), on single frames of training seeds (0 on) read beside the
neutral expression, with the grounding stage's optimiser (AdamW, warm-up, half a cosine). Every
``--eval-every`` steps it prints the head's accuracy on the owned patches of one frame of each of 400 held-out
clips (900000 on), over all of them and for small and big shapes. Chance is about 0.25 (four kinds).
``--pytorch-init`` starts from PyTorch's own initialisation of each layer instead (``build_model("toy")``, what a
training configuration without ``model.seed`` trains), with which the kinds come several times slower.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

logger = logging.getLogger("benchmarks.toy_encoder_kinds")

FIRST_HELD_OUT_SEED = 900_000
IGNORED = -100


def labelled_frames(
    seeds, rng: np.random.Generator, model
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One random frame of each seed's clip: (N, 3, s, s) BEiT-3 inputs, (N, P) kind labels (``IGNORED``
    where no shape owns the patch) and (N, P) bool, True on patches of small shapes."""
    from mpgsam2.datasets.toy import generate_toy_clip
    from mpgsam2.datasets.toy.probing import (
        ATTRIBUTE_VALUES,
        encoder_inputs,
        object_attributes,
        owned_patches,
    )

    small_index = ATTRIBUTE_VALUES["size"].index("small")
    images, labels, small = [], [], []
    for seed in seeds:
        clip = generate_toy_clip(int(seed))
        frame = int(rng.integers(clip.frames.shape[0]))
        owned, owner = owned_patches(clip.masks[:, frame : frame + 1], model.config.beit3.grid_size)
        attributes = object_attributes(clip.objects)
        labels.append(torch.where(owned[0], attributes["shape"][owner[0]], IGNORED))
        small.append((attributes["size"][owner[0]] == small_index) & owned[0])
        images.append(encoder_inputs(model, clip.frames[frame : frame + 1])[0])
    return torch.stack(images), torch.stack(labels), torch.stack(small)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=48)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup-steps", type=int, default=100)
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--frames", type=int, default=6000, help="training frames, one per clip")
    parser.add_argument("--held-out-frames", type=int, default=400, help="scored frames, one per clip")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument(
        "--pytorch-init", action="store_true", help="PyTorch's initialisation instead of model seed 0"
    )
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    from mpgsam2.datasets.toy import SHAPES
    from mpgsam2.datasets.toy.probing import NEUTRAL_EXPRESSION
    from mpgsam2.modeling.model import build_model
    from mpgsam2.tokenizer import TOY_TOKENIZER, load_tokenizer

    model = build_model("toy", seed=None if args.pytorch_init else 0)
    encoder = model.multimodal_encoder.train()
    head = torch.nn.Linear(model.config.beit3.embed_dim, len(SHAPES))
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    images, labels, _ = labelled_frames(range(args.frames), rng, model)
    held_out = labelled_frames(
        range(FIRST_HELD_OUT_SEED, FIRST_HELD_OUT_SEED + args.held_out_frames), rng, model
    )
    logger.info(
        "%d training and %d held-out frames in %.0f s",
        len(images),
        args.held_out_frames,
        time.perf_counter() - started,
    )
    ids = load_tokenizer(TOY_TOKENIZER).encode(NEUTRAL_EXPRESSION).input_ids

    def accuracy() -> dict[str, float | None]:
        encoder.eval()
        held_images, held_labels, held_small = held_out
        with torch.no_grad():
            tokens = torch.cat(
                [
                    encoder(batch, ids[None].expand(len(batch), -1)).visual_tokens
                    for batch in held_images.split(100)
                ]
            )
        encoder.train()
        right = head(tokens).argmax(-1) == held_labels
        owned = held_labels != IGNORED
        groups = {"all": owned, "small": owned & held_small, "big": owned & ~held_small}
        # None where the scored frames hold no patch of that group (a handful of frames, in a smoke run).
        return {
            name: float(right[chosen].float().mean()) if chosen.any() else None
            for name, chosen in groups.items()
        }

    parameters = [*encoder.parameters(), *head.parameters()]
    optimizer = torch.optim.AdamW(parameters, lr=args.lr, weight_decay=5e-4)
    curve = [{"step": 0, "seconds": 0.0, **accuracy()}]
    logger.info("%s", curve[-1])
    started = time.perf_counter()
    for step in range(1, args.steps + 1):
        warm = min(1.0, step / args.warmup_steps)
        for group in optimizer.param_groups:
            group["lr"] = args.lr * warm * 0.5 * (1 + math.cos(math.pi * (step - 1) / args.steps))
        chosen = torch.from_numpy(rng.integers(len(images), size=args.batch_size))
        batch = images[chosen]
        tokens = encoder(batch, ids[None].expand(len(batch), -1)).visual_tokens
        loss = F.cross_entropy(head(tokens).flatten(0, 1), labels[chosen].flatten(), ignore_index=IGNORED)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        if step % args.eval_every == 0 or step == args.steps:
            seconds = round(time.perf_counter() - started, 1)
            curve.append({"step": step, "seconds": seconds, "loss": float(loss.detach()), **accuracy()})
            logger.info("%s", curve[-1])
    result = {
        "steps": args.steps,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "frames": args.frames,
        "init": "pytorch" if args.pytorch_init else "seed 0",
        "curve": curve,
    }
    text = json.dumps(result, indent=2)
    if args.json:
        args.json.write_text(text + "\n")
    sys.stdout.write(text + "\n")


if __name__ == "__main__":
    main()
