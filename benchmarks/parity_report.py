"""Max |ours - official| per output and frame on the parity case, with time and peak memory.

    python benchmarks/parity_report.py [--case case_a]

Reads the official code's reference data that the tests carry (tests/data/official); prints a table and the
run's figures.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", default="case_a", help="a case of tests/data/official")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(ROOT / "tests"))
    from official import TOKENIZER_MODEL, load_case, official_random_weights

    from mpgsam2 import VideoPredictor, build_model, load_tokenizer
    from mpgsam2.checkpoints import load_official_state_dict
    from mpgsam2.inference.frames import preprocess

    case = load_case(args.case)
    start = time.perf_counter()
    model = build_model("large")
    load_official_state_dict(model, official_random_weights(seed=int(case["seed"])))
    load_s = time.perf_counter() - start
    tokenizer = load_tokenizer(TOKENIZER_MODEL)
    predictor = VideoPredictor(model, tokenizer)
    expression = str(case["expression"])
    frames = case["frames_uint8"]

    start = time.perf_counter()
    (result,) = predictor.segment(frames, [expression])
    segment_s = time.perf_counter() - start

    rows: dict[str, list[float]] = {}
    with torch.inference_mode():
        pre = model.config.preprocess
        images = torch.stack([preprocess(f, 224, pre.mean, pre.std) for f in frames])
        encoded = tokenizer.encode(expression)
        context, beit3 = model.encode_clip(images, encoded.input_ids, encoded.padding)
        rows["beit3_encoder_out"] = _per_frame(beit3.hidden.numpy(), case["beit3_encoder_out"])
        rows["prior_logits_14"] = _per_frame(context.prior_logits.numpy(), case["prior_logits_14"])
        rows["sam_text_embeds"] = _per_frame(context.sparse_prompts.numpy(), case["sam_text_embeds"][:, 0])
        session = predictor.init_session(frames, [expression])
        for name in ("sam_prompt_masks_256", "dec_masks_pre_obj_gate", "dec_iou", "dec_sam_tokens"):
            rows[name] = []
        for t in range(len(frames)):
            features = model.encode_frame(predictor.sam_input(frames[t]))
            out = model.track_frame(features, session.tracking, session.memory_bank, t)
            session.remember(t, out.memory)
            rows["sam_prompt_masks_256"].append(
                _max(out.dense_prompt.numpy()[0], case["sam_prompt_masks_256"][t])
            )
            rows["dec_masks_pre_obj_gate"].append(
                _max(out.decoder.multimask_logits.numpy()[0], case["dec_masks_pre_obj_gate"][t])
            )
            rows["dec_iou"].append(_max(out.decoder.iou.numpy()[0], case["dec_iou"][t]))
            rows["dec_sam_tokens"].append(_max(out.decoder.mask_tokens.numpy()[0], case["dec_sam_tokens"][t]))
    rows["prior_mask_14 (segment)"] = _per_frame(result.priors, case["prior_mask_14"])
    rows["object_score (segment)"] = _per_frame(result.object_scores, case["dec_obj_score_logits"][:, 0])
    rows["pred_mask_logits_orig_res (segment)"] = _per_frame(result.logits, case["pred_mask_logits_orig_res"])
    equal = [(result.masks[t] == case["pred_masks_binary"][t]).mean() for t in range(len(frames))]

    print(f"{'output':40s} " + " ".join(f"frame {t:<8d}" for t in range(len(frames))))
    for name, values in rows.items():
        print(f"{name:40s} " + " ".join(f"{v:<14.3e}" for v in values))
    print(f"{'binary masks equal (fraction)':40s} " + " ".join(f"{v:<14.6f}" for v in equal))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(
        f"build+load {load_s:.1f} s; segment (3 frames, 1 expression) {segment_s:.1f} s; peak RSS {peak:.2f} GiB"
    )


def _max(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max())


def _per_frame(a: np.ndarray, b: np.ndarray) -> list[float]:
    return [_max(a[t], b[t]) for t in range(len(b))]


if __name__ == "__main__":
    main()
