"""Evaluation: J, F and J&F of a model on an annotated split, per video and overall."""

from __future__ import annotations

import csv
import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import torch

from ..datasets import DatasetSpec, build_eval_set
from ..modeling.model import MPGSAM2
from ..tokenizer import ExpressionTokenizer
from ..video_io.sequences import natural_key

logger = logging.getLogger(__name__)


def evaluate_model(
    model: MPGSAM2,
    tokenizer: ExpressionTokenizer,
    spec: DatasetSpec,
    out_dir: str | os.PathLike,
    device: str | torch.device | None = None,
    precision: str | None = None,
    write_masks: bool = True,
) -> dict:
    """Segment every expression of an annotated split and score it: J, F and J&F per video and overall.

    Each expression is one object sequence scored over all its video's frames with the DAVIS measures
    (:func:`mpgsam2.metrics.evaluate_sequences`); a video's scores are the means over its expressions and
    the overall scores the means over all expressions (the Ref-YouTube-VOS / MeViS convention). MeViS videos
    run in independent clips of 24 frames unless ``spec.clip_length`` says otherwise, as the official
    inference. Writes ``metrics.json`` and ``metrics.csv`` (one row per video and an ``overall`` row) to
    ``out_dir`` and, with ``write_masks``, the predicted masks in the benchmark's submission layout under
    ``out_dir/predictions`` (the layout ``python -m mpgsam2 infer-dataset`` writes).
    """
    from ..datasets import write_davis_annotators, write_expression_masks
    from ..datasets.layouts import default_clip_length
    from ..inference.predictor import VideoPredictor
    from ..metrics import evaluate_sequences

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dataset = build_eval_set(spec)
    predictor = VideoPredictor(model, tokenizer, device=device, precision=precision)
    clip_length = spec.clip_length or default_clip_length(spec.format)
    videos: dict[str, dict] = {}
    all_j: list[float] = []
    all_f: list[float] = []
    start = time.time()
    for item in dataset.iter_eval_videos():
        frames = item.load_frames()
        exp_ids = sorted(item.expressions, key=natural_key)
        texts = [item.expressions[e]["exp"] for e in exp_ids]
        results = predictor.segment_each(frames, texts, clip_length)
        scores: dict[str, dict] = {}
        for exp_id, text, result in zip(exp_ids, texts, results):
            measured = evaluate_sequences(result.masks, item.ground_truth(exp_id))
            scores[exp_id] = {
                "expression": text,
                "J": measured["J"],
                "F": measured["F"],
                "J&F": measured["J&F"],
            }
            all_j.append(measured["J"])
            all_f.append(measured["F"])
        if write_masks:
            folder = out_dir / "predictions"
            probabilities = {e: 1 / (1 + np.exp(-r.logits)) for e, r in zip(exp_ids, results)}
            if spec.format == "davis":
                write_davis_annotators(folder, item, probabilities)
            else:
                for exp_id, result in zip(exp_ids, results):
                    write_expression_masks(
                        folder, spec.format, item, exp_id, result.masks, probabilities[exp_id]
                    )
        j = float(np.mean([s["J"] for s in scores.values()]))
        f = float(np.mean([s["F"] for s in scores.values()]))
        videos[item.video] = {"J": j, "F": f, "J&F": (j + f) / 2, "expressions": scores}
        logger.info("%s: J&F %.3f over %d expressions", item.video, (j + f) / 2, len(scores))
    mean_j = float(np.mean(all_j)) if all_j else float("nan")
    mean_f = float(np.mean(all_f)) if all_f else float("nan")
    report = {
        "dataset": {"format": spec.format, "root": spec.root, "split": spec.split},
        "J": mean_j,
        "F": mean_f,
        "J&F": (mean_j + mean_f) / 2,
        "num_videos": len(videos),
        "num_expressions": len(all_j),
        "seconds": round(time.time() - start, 1),
        "videos": videos,
    }
    (out_dir / "metrics.json").write_text(json.dumps(report, indent=2))
    with (out_dir / "metrics.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["video", "expressions", "J", "F", "J&F"])
        for video, row in videos.items():
            writer.writerow(
                [video, len(row["expressions"]), f"{row['J']:.5f}", f"{row['F']:.5f}", f"{row['J&F']:.5f}"]
            )
        writer.writerow(["overall", len(all_j), f"{mean_j:.5f}", f"{mean_f:.5f}", f"{report['J&F']:.5f}"])
    logger.info(
        "Evaluation on %s %s: J&F %.4f (J %.4f, F %.4f)",
        spec.format,
        spec.split,
        report["J&F"],
        mean_j,
        mean_f,
    )
    return report
