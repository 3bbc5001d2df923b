"""The settings of the few-step training runs that the tests of the training stages share."""

from __future__ import annotations


def short_run(output_dir, *extra: str) -> list[str]:
    """Overrides of ``configs/toy.json``: three clips of three frames, 2 categories steps, 3 grounding steps
    with the categories head kept, 2 steps of the grounding stage on clip windows (one 3-frame window a step),
    3 main steps with a checkpoint at 2, every step logged; then ``extra``."""
    return [
        f"output_dir={output_dir}",
        "data.train.0.toy.num_videos=3",
        "data.train.0.num_frames=3",
        "data.eval=null",
        "train.max_steps=3",
        "optim.warmup_steps=2",
        "train.log_every=1",
        "train.save_every_steps=2",
        "categories.steps=2",
        "categories.batch_size=2",
        "grounding.steps=3",
        "grounding.batch_size=2",
        "grounding.categories=1",
        "clip_grounding.steps=2",
        "clip_grounding.batch_size=1",
        "clip_grounding.num_frames=3",
        *extra,
    ]
