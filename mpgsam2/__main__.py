"""Command line: ``python -m mpgsam2 {segment, evaluate, infer-dataset}`` (also installed as ``mpgsam2``).

Errors a user can fix end the program with one line saying what to change and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

logger = logging.getLogger("mpgsam2")

USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError)
#: ``segment`` refuses longer parts of a video unless told otherwise (--max-duration).
MAX_DURATION_S = 300.0


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default="ytvos",
        help="ytvos | mevis | tiny | a hub id (repo[:variant]) | a local folder or weights file | "
        "toy (trained on generated shapes only, shipped in checkpoints/toy) | "
        "test (tiny, random and UNTRAINED: for trying the pipeline only). Default: ytvos.",
    )
    parser.add_argument("--device", default=None, help="cuda, mps or cpu (default: the best available)")
    parser.add_argument(
        "--precision",
        default=None,
        help="fp32 (default: the official numbers), tf32 (fp32 with TF32 products on CUDA), bf16 or fp16 autocast",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile SAM 2's image encoder (eager if compiling fails)",
    )


def _predictor(args):
    from .inference.predictor import VideoPredictor

    predictor = VideoPredictor.from_pretrained(
        args.model, device=args.device, precision=args.precision, compile_image_encoder=args.compile
    )
    if predictor.untrained:
        logger.warning("Model 'test' has random weights: it is UNTRAINED and its masks mean nothing.")
    elif predictor.toy:
        logger.warning("The toy model knows generated coloured shapes only; real videos need ytvos or mevis.")
    return predictor


def _segment(args) -> int:
    from tqdm import tqdm

    from .expressions import clean_expressions
    from .inference.clicks import parse_click
    from .inference.predictor import check_clip_length
    from .pipeline import DEFAULT_MAX_SIDE, SegmentOptions, load_clip, segment_video

    expressions = clean_expressions(args.expression or [])
    check_clip_length(args.clip_length)
    clicks: dict[str, list] = {}
    for text in args.point or []:
        expression, click = parse_click(text)
        clicks.setdefault(expression, []).append(click)
    options = SegmentOptions(
        start_s=args.start,
        end_s=args.end,
        fps=args.fps,
        max_frames=args.max_frames,
        opacity=args.opacity,
        clip_length=args.clip_length,
        max_side=(args.max_side or None) if args.max_side is not None else DEFAULT_MAX_SIDE,
        max_duration_s=args.max_duration or None,
    )
    clip = load_clip(args.video, options)  # before loading the model: a bad video fails in a second
    predictor = _predictor(args)
    with tqdm(total=clip.num_frames, unit="frame", desc="segmenting", disable=args.quiet) as bar:

        def progress(done: int, total: int) -> None:
            bar.update(done - bar.n)

        outputs = segment_video(
            predictor, args.video, expressions, args.out, options, progress, clip=clip, clicks=clicks
        )
    for message in (*outputs.warnings, *outputs.no_match_messages()):
        logger.warning(message)
    print(json.dumps({"overlay": str(outputs.overlay_video), "folder": str(outputs.folder)}))
    return 0


def _evaluate(args) -> int:
    from .datasets.submission import evaluate_folders

    report = evaluate_folders(args.pred_dir, args.gt_dir)
    print(json.dumps(report, indent=2, default=float))
    return 0


def _infer_dataset(args) -> int:
    import numpy as np
    from tqdm import tqdm

    from .datasets import BenchmarkSplit, write_davis_annotators, write_expression_masks
    from .datasets.layouts import default_clip_length

    predictor = _predictor(args)
    out_dir = Path(args.out)
    clip_length = args.clip_length if args.clip_length is not None else default_clip_length(args.format)
    videos = BenchmarkSplit(args.dataset, args.split)
    for item in tqdm(videos, unit="video", disable=args.quiet):
        frames = item.load_frames()
        exp_ids = list(item.expressions)
        texts = [item.expressions[e]["exp"] for e in exp_ids]
        results = predictor.segment_each(frames, texts, clip_length=clip_length)
        probabilities = {e: 1 / (1 + np.exp(-r.logits)) for e, r in zip(exp_ids, results)}
        if args.format == "davis":
            write_davis_annotators(out_dir, item, probabilities)
            continue
        for exp_id, result in zip(exp_ids, results):
            write_expression_masks(out_dir, args.format, item, exp_id, result.masks, probabilities[exp_id])
    print(json.dumps({"videos": len(videos), "out": str(out_dir)}))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mpgsam2", description="MPG-SAM 2 referring video segmentation")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars or info logs")
    commands = parser.add_subparsers(dest="command", required=True)

    segment = commands.add_parser("segment", help="segment the objects that expressions refer to in a video")
    segment.add_argument("video", help="mp4, webm, mov, mkv, avi, gif, an image, or a folder/zip of frames")
    segment.add_argument("-e", "--expression", action="append", help="repeat for several targets")
    segment.add_argument("--out", required=True, help="output folder")
    segment.add_argument("--start", type=float, default=None, help="start time in seconds")
    segment.add_argument("--end", type=float, default=None, help="end time in seconds")
    segment.add_argument("--fps", type=float, default=None, help="frames per second to process")
    segment.add_argument("--max-frames", type=int, default=None, help="process at most this many frames")
    segment.add_argument(
        "--point",
        action="append",
        metavar="EXPRESSION:FRAME:X,Y[:neg]",
        help="a click that corrects an expression's target on a frame (pixels of the processed frames; :neg "
        "for 'not here'); the expression is re-tracked from its earliest clicked frame. Repeat for more.",
    )
    segment.add_argument("--opacity", type=float, default=0.5, help="mask opacity in the overlay (0-1)")
    segment.add_argument(
        "--clip-length", type=int, default=None, help="independent clips of N frames (MeViS)"
    )
    segment.add_argument(
        "--max-side",
        type=int,
        default=None,
        help="downscale frames whose longer side exceeds this many pixels (default 1920; 0: never)",
    )
    segment.add_argument(
        "--max-duration",
        type=float,
        default=MAX_DURATION_S,
        help=f"refuse a part to process longer than this many seconds (default {MAX_DURATION_S:g}; 0: no limit)",
    )
    _add_model_options(segment)
    segment.set_defaults(run=_segment)

    evaluate = commands.add_parser("evaluate", help="J, F and J&F of palette-PNG predictions (DAVIS 2017)")
    evaluate.add_argument("pred_dir")
    evaluate.add_argument("gt_dir")
    evaluate.set_defaults(run=_evaluate)

    infer = commands.add_parser("infer-dataset", help="run a Ref-YouTube-VOS, MeViS or Ref-DAVIS17 split")
    infer.add_argument("dataset", help="folder with meta_expressions.json and JPEGImages")
    infer.add_argument("--format", choices=("ytvos", "mevis", "davis"), default="ytvos")
    infer.add_argument("--split", default="valid")
    infer.add_argument("--out", required=True)
    infer.add_argument(
        "--clip-length", type=int, default=None, help="default: 24 for mevis, whole video else"
    )
    _add_model_options(infer)
    infer.set_defaults(run=_infer_dataset)

    # Registered for the listing only: `main` hands `train ...` to mpgsam2.training before parsing, so that
    # the other commands start without importing torch.
    commands.add_parser("train", help="fine-tune, rerun ablations, evaluate checkpoints (docs/TRAINING.md)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["train"]:
        from .training import main as train_main

        return train_main(argv[1:])
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO, format="%(levelname)s %(message)s"
    )
    from .pipeline import RunInterrupted, RunOutOfMemory

    try:
        return args.run(args)
    except USER_ERRORS as error:
        print(f"error: {_one_line(error)}", file=sys.stderr)
        return 2
    except RunInterrupted as error:  # the outputs of the frames done, if any, are on disk
        logger.debug("run interrupted", exc_info=True)
        print(f"error: {_one_line(error)}", file=sys.stderr)
        return 2 if isinstance(error, RunOutOfMemory) else 1


def _one_line(error: BaseException) -> str:
    """The error's message on one line (some list their details one per line)."""
    return " ".join(line.strip() for line in str(error).splitlines() if line.strip())


if __name__ == "__main__":
    sys.exit(main())
