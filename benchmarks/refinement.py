"""Seconds of a click refinement against a full run, on the same clip, frames and expression.

    python benchmarks/refinement.py [--preset test|base|large] [--frames 16] [--click-frame 12] [--json out.json]

The full run is ``init_session`` + ``propagate`` (the global stage and every frame tracked); the refinement is
``refine`` on that session with one positive point on ``--click-frame``, re-tracking from there to the end.
The Space's route is timed too: the session saved to a file after the run (``save_session``; on ZeroGPU, at
the end of the run's GPU call), then loaded by the correction (``load_session``) before its ``refine``.
Random weights of the preset (the cost does not depend on what the weights are), frames of the example clip
``examples/short/cups_2s_360p.mp4``. Each is timed ``--repeats`` times after one warm-up; prints a JSON object
with the medians.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
CLIP = ROOT / "examples" / "short" / "cups_2s_360p.mp4"
EXPRESSION = "the yellow ball"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="test")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--click-frame", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from mpgsam2 import VideoPredictor, build_model
    from mpgsam2.inference.clicks import Click
    from mpgsam2.tokenizer import TEST_TOKENIZER, load_tokenizer
    from mpgsam2.video_io import read_video

    clip = read_video(CLIP, max_frames=args.frames)
    height, width = clip.frames.shape[1:3]
    predictor = VideoPredictor(
        build_model(args.preset, seed=0), load_tokenizer(TEST_TOKENIZER), device=args.device
    )
    click = Click(args.click_frame, x=width / 2, y=height / 2)

    def full_run():
        session = predictor.init_session(clip.frames, [EXPRESSION], keep_memories=True)
        for _ in predictor.propagate(session):
            pass
        return session

    def refinement(session):
        for _ in predictor.refine(session, 0, [click]):
            pass

    def timed(fn, *fn_args):
        if predictor.device.type == "cuda":
            torch.cuda.synchronize(predictor.device)
        started = time.perf_counter()
        out = fn(*fn_args)
        if predictor.device.type == "cuda":
            torch.cuda.synchronize(predictor.device)
        return time.perf_counter() - started, out

    import tempfile

    from mpgsam2.inference.snapshots import load_session, save_session

    full_s, refine_s, save_s, resumed_s = [], [], [], []
    with tempfile.TemporaryDirectory() as scratch:
        snapshot = Path(scratch) / "session.safetensors"
        for repeat in range(args.repeats + 1):
            seconds, session = timed(full_run)
            saved, _ = timed(save_session, session, snapshot)
            refined, _ = timed(refinement, session)
            resumed, _ = timed(lambda: refinement(load_session(snapshot, clip.frames, predictor.device)))
            if repeat:  # the first round warms up
                full_s.append(seconds)
                refine_s.append(refined)
                save_s.append(saved)
                resumed_s.append(resumed)
        snapshot_mb = snapshot.stat().st_size / 2**20
    full, refine = statistics.median(full_s), statistics.median(refine_s)
    result = {
        "preset": args.preset,
        "device": str(predictor.device),
        "threads": args.threads,
        "frames": len(clip.frames),
        "size": f"{width}x{height}",
        "click_frame": args.click_frame,
        "re_tracked_frames": len(clip.frames) - args.click_frame,
        "full_run_s": round(full, 3),
        "refinement_s": round(refine, 3),
        "refinement_over_full": round(refine / full, 3),
        "save_session_s": round(statistics.median(save_s), 3),
        "load_and_refine_s": round(statistics.median(resumed_s), 3),
        "session_file_mb_per_frame": round(snapshot_mb / len(clip.frames), 3),
        "full_run_runs_s": [round(s, 3) for s in full_s],
        "refinement_runs_s": [round(s, 3) for s in refine_s],
    }
    text = json.dumps(result, indent=2)
    if args.json:
        args.json.write_text(text + "\n")
    sys.stdout.write(text + "\n")


if __name__ == "__main__":
    main()
