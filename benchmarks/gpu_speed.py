"""Frames per second of the released model's size on a CUDA device, for 1 and 3 expressions, in fp32, TF32,
bf16 and fp32 with the image encoder compiled; and how far TF32 and bf16 move the results from fp32.

    python benchmarks/gpu_speed.py [--frames 32] [--json out.json]

Random weights of the large preset (BEiT-3-large, Hiera-L at 1024x1024), 720p synthetic frames with moving
shapes; each configuration runs once to warm up, then is timed end to end (``VideoPredictor.segment``: the
global stage and the tracking loop). Prints a JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def synthetic_frames(count: int, height: int = 720, width: int = 1280) -> np.ndarray:
    """(T, H, W, 3) uint8: a red square and a blue disc moving over a noisy grey background."""
    rng = np.random.default_rng(0)
    frames = np.full((count, height, width, 3), 110, dtype=np.uint8)
    frames += rng.integers(0, 20, frames.shape, dtype=np.uint8)
    yy, xx = np.mgrid[:height, :width]
    for t in range(count):
        left = 100 + 20 * t
        frames[t, 200:360, left : left + 160] = (220, 30, 30)
        disc = (yy - 500) ** 2 + (xx - (1000 - 15 * t)) ** 2 < 90**2
        frames[t][disc] = (30, 60, 220)
    return frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("gpu_speed.py needs a CUDA device.")
    from mpgsam2 import VideoPredictor, build_model, load_tokenizer
    from mpgsam2.tokenizer import TEST_TOKENIZER

    model = build_model("large", seed=0).to("cuda")
    tokenizer = load_tokenizer(TEST_TOKENIZER)
    frames = synthetic_frames(args.frames)
    texts = ["the red square", "the blue circle", "the grey background"]
    rows, outputs = [], {}
    for name, precision, compiled in (
        ("fp32", "fp32", False),
        ("tf32", "tf32", False),
        ("bf16", "bf16", False),
        ("fp32+compile", "fp32", True),
    ):
        predictor = VideoPredictor(
            model, tokenizer, device="cuda", precision=precision, compile_image_encoder=compiled
        )
        for count in (1, 3):
            predictor.segment(frames[:2], texts[:count])  # warm-up (and compilation)
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            started = time.perf_counter()
            results = predictor.segment(frames, texts[:count])
            torch.cuda.synchronize()
            seconds = time.perf_counter() - started
            outputs[(name, count)] = results
            rows.append(
                {
                    "configuration": name,
                    "expressions": count,
                    "frames": args.frames,
                    "seconds": round(seconds, 3),
                    "frames_per_second": round(args.frames / seconds, 2),
                    "peak_gpu_mib": round(torch.cuda.max_memory_allocated() / 2**20),
                    "compile_fell_back": bool(getattr(predictor.encode_frame, "failed", False)),
                }
            )
    deviation = {}
    for name in ("tf32", "bf16", "fp32+compile"):
        pairs = list(zip(outputs[("fp32", 3)], outputs[(name, 3)]))
        deviation[name] = {
            "max_abs_logit_difference": float(max(np.abs(a.logits - b.logits).max() for a, b in pairs)),
            "mask_agreement": float(np.mean([(a.masks == b.masks).mean() for a, b in pairs])),
        }
    result = {
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "rows": rows,
        "deviation_from_fp32": deviation,
    }
    text = json.dumps(result, indent=2)
    if args.json:
        args.json.write_text(text + "\n")
    sys.stdout.write(text + "\n")


if __name__ == "__main__":
    main()
