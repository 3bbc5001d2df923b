"""The command line: ``python -m mpgsam2 train``, ``python -m mpgsam2.training`` and ``torchrun -m ...``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from ..checkpoints import load_model, resolve_source
from ..tokenizer import load_tokenizer
from .evaluate import evaluate_model
from .loop import train
from .model_init import find_tokenizer_file
from .resume import last_checkpoint
from .run_config import load_config


def run_train_command(args: argparse.Namespace) -> int:
    """``python -m mpgsam2 train``: train (or, with ``--eval-only``, evaluate) and write a JSON summary."""
    overrides = list(args.set or [])
    if args.output_dir:
        overrides.append(f"output_dir={args.output_dir}")
    config = load_config(args.config, overrides)
    if args.eval_only:
        if config.eval_data is None:
            raise ValueError(
                "--eval-only needs a data.eval section in the configuration (or --set data.eval=...)."
            )
        source = args.checkpoint or last_checkpoint(config.output_dir)
        if source is None:
            raise FileNotFoundError(f"No checkpoint in {config.output_dir}; pass --checkpoint.")
        source = resolve_source(source)
        model = load_model(source, config.schedule.device)
        tokenizer = load_tokenizer(find_tokenizer_file(config.model.tokenizer or source))
        out = Path(args.eval_dir) if args.eval_dir else Path(source) / "eval"
        report = evaluate_model(
            model, tokenizer, config.eval_data, out, config.schedule.device, config.schedule.precision
        )
        summary = {k: report[k] for k in ("J", "F", "J&F", "num_videos", "num_expressions")} | {
            "out": str(out)
        }
    else:
        result = train(config, resume=args.resume)
        if int(os.environ.get("RANK", "0")) != 0:
            return 0
        summary = {"steps": result["steps"], "checkpoint": result["checkpoint"]}
        if result["history"]:
            summary["loss_first"] = result["history"][0]["loss"]
            summary["loss_last"] = result["history"][-1]["loss"]
        if "eval" in result:
            summary["eval"] = {k: result["eval"][k] for k in ("J", "F", "J&F", "num_expressions")}
    sys.stdout.write(json.dumps(summary) + "\n")
    return 0


def _add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("config", help="a JSON configuration (see configs/)")
    parser.add_argument("--output-dir", default=None, help="override the configuration's output_dir")
    parser.add_argument(
        "--resume",
        default=None,
        help="'auto' (the run's last checkpoint) or a checkpoint folder; a run's checkpoint-stages folder "
        "starts the main loop after its pre-training stages, with this configuration's main-loop settings",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a setting, e.g. --set train.max_steps=100 --set model.aggregator.object_local=false",
    )
    parser.add_argument(
        "--eval-only", action="store_true", help="evaluate a checkpoint on data.eval, no training"
    )
    parser.add_argument(
        "--checkpoint", default=None, help="with --eval-only: the model (default: the run's last)"
    )
    parser.add_argument("--eval-dir", default=None, help="with --eval-only: where to write metrics and masks")
    parser.set_defaults(run=run_train_command)
    return parser


TRAIN_HELP = "train or fine-tune from a JSON configuration (one GPU; several with torchrun; CPU smoke tests)"
TRAIN_DESCRIPTION = (
    "Train MPG-SAM 2 with the official recipe. Several GPUs or machines: "
    "torchrun --nproc_per_node=N -m mpgsam2 train CONFIG."
)


def add_train_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``train`` on the ``mpgsam2`` command line (``subparsers`` from ``add_subparsers``)."""
    parser = subparsers.add_parser("train", help=TRAIN_HELP, description=TRAIN_DESCRIPTION)
    return _add_arguments(parser)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m mpgsam2.training CONFIG ...`` (also under ``torchrun -m mpgsam2.training``)."""
    parser = _add_arguments(argparse.ArgumentParser(prog="mpgsam2 train", description=TRAIN_DESCRIPTION))
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings only")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO, format="%(levelname)s %(message)s"
    )
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError) as error:
        sys.stderr.write(f"error: {error}\n")
        return 2
