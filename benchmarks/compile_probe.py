"""Eager against ``torch.compile`` for SAM 2's image encoder (Hiera + FPN), on the frames of one clip.

    python benchmarks/compile_probe.py test     # Hiera-T at 256x256: about a minute
    python benchmarks/compile_probe.py large    # Hiera-L at 1024x1024: a few minutes on a CPU

Prints seconds per frame for both, the first call's time (compilation included) and the largest difference
of the top-level features. Set the threads with OMP_NUM_THREADS.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
for _path in (str(ROOT), str(ROOT / "benchmarks")):
    if _path not in sys.path:
        sys.path.insert(0, _path)


def main() -> None:
    from pipeline import synthetic_frames

    from mpgsam2 import build_model
    from mpgsam2.inference.frames import preprocess

    preset = sys.argv[1] if len(sys.argv) > 1 else "test"
    model = build_model(preset, seed=0)
    size, pre = model.config.sam2.image_size, model.config.preprocess
    images = [preprocess(f, size, pre.mean, pre.std).unsqueeze(0) for f in synthetic_frames(6, 480, 854)]
    encoder = model.sam2.image_encoder
    with torch.inference_mode():
        reference = [encoder(x)["vision_features"] for x in images[:2]]
        started = time.perf_counter()
        for x in images[2:]:
            encoder(x)
        eager = (time.perf_counter() - started) / len(images[2:])
        compiled = torch.compile(encoder, dynamic=False)
        started = time.perf_counter()
        compiled(images[0])
        first = time.perf_counter() - started
        started = time.perf_counter()
        for x in images[2:]:
            compiled(x)
        fast = (time.perf_counter() - started) / len(images[2:])
        diff = max(
            float((compiled(x)["vision_features"] - r).abs().max()) for x, r in zip(images[:2], reference)
        )
    print(
        f"{preset}: eager {eager:.3f} s/frame, compiled {fast:.3f} s/frame, "
        f"first call (compilation) {first:.1f} s, max |diff| {diff:.1e}"
    )


if __name__ == "__main__":
    main()
