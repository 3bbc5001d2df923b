"""Peak memory and time of the global stage (BEiT-3 + mask prior) on a long 720p clip with the large preset.

The official algorithm materialises 8 x (196 T)^2 float32 attention weights in the prior generator (110 GB at
T = 300); ours streams BEiT-3 over chunks of frames and attends through the fused kernel. This script decodes
a clip, runs ``VideoPredictor.init_session`` (the whole global stage for one expression) on random large
weights, and prints the figures (peak RSS from the OS, wall seconds), plus the dense matrix the official
algorithm would need.

    python benchmarks/long_clip_global_context.py examples/02_cups.mp4 --frames 300 --json /tmp/long.json
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("video", type=Path)
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--preset", default="large")
    parser.add_argument("--expression", default="the yellow ball")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from mpgsam2 import VideoPredictor, build_model, load_tokenizer
    from mpgsam2.tokenizer import TEST_TOKENIZER
    from mpgsam2.video_io import read_video

    start = time.perf_counter()
    clip = read_video(args.video, max_frames=args.frames)
    decode_s = time.perf_counter() - start
    rss_after_decode = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    start = time.perf_counter()
    model = build_model(args.preset, seed=0)
    build_s = time.perf_counter() - start
    rss_after_build = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    predictor = VideoPredictor(model, load_tokenizer(TEST_TOKENIZER))

    start = time.perf_counter()
    session = predictor.init_session(clip.frames, [args.expression])
    global_s = time.perf_counter() - start
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    tokens = model.config.beit3.num_patches * clip.num_frames
    heads = model.config.mask_prior.num_heads
    row = {
        "preset": args.preset,
        "frames": clip.num_frames,
        "resolution": f"{clip.width}x{clip.height}",
        "decode_s": round(decode_s, 2),
        "build_s": round(build_s, 2),
        "global_stage_s": round(global_s, 2),
        "peak_rss_mib": round(peak_mib),
        "rss_after_decode_mib": round(rss_after_decode),
        "rss_after_build_mib": round(rss_after_build),
        "official_dense_attention_weights_gib": round(heads * tokens**2 * 4 / 2**30, 1),
        "priors_shape": list(session.tracks[0].context.priors.shape),
        "threads": args.threads,
    }
    print(json.dumps(row, indent=2))
    if args.json:
        args.json.write_text(json.dumps(row, indent=2))


if __name__ == "__main__":
    main()
