"""Seconds per step of each stage of the toy recipe (``configs/toy.json``), and what its full length costs.

Runs the project's own training command on a small generated split in a temporary folder, a few steps of each
stage (the categories stage, the grounding stage and its pass on clip windows, the main loop, with the settings
of ``configs/toy.json``; a stage the configuration leaves off is not run),
reads the seconds per step that each stage logs, and prints them with the minutes that the configuration's
own step counts would take at that pace. Two processes (``--processes 2``, as the recipe's command runs on
a 2-core CPU) report the pace of both together: each step is one step of the run.

    python benchmarks/toy_training_speed.py                     # one process, one thread
    python benchmarks/toy_training_speed.py --processes 2 --json speed.json
    python benchmarks/toy_training_speed.py --processes 2 --set categories.kept_frames=extra

The first logged window of each stage (warm-up: first calls, allocator growth) is left out of the mean.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mpgsam2.training import MAIN_LOG, read_log  # noqa: E402
from mpgsam2.training.categories import CATEGORIES_LOG  # noqa: E402
from mpgsam2.training.grounding import CLIP_GROUNDING_LOG, GROUNDING_LOG  # noqa: E402
from mpgsam2.training.run_config import load_config  # noqa: E402

logger = logging.getLogger("toy_training_speed")

CONFIG = ROOT / "configs" / "toy.json"
# Each stage's section of the configuration (whose "steps" the timed run sets), what it logs, and the
# configuration's step count for it.
STAGES = {
    "categories": ("categories", CATEGORIES_LOG, lambda c: c.categories.steps),
    "grounding": ("grounding", GROUNDING_LOG, lambda c: c.grounding.steps),
    "clip": ("clip_grounding", CLIP_GROUNDING_LOG, lambda c: c.clip_grounding.steps),
    "main": ("train", MAIN_LOG, lambda c: c.schedule.max_steps),
}
#: The sections of the stages before the main loop.
PRE_STAGES = tuple(section for stage, (section, _, _) in STAGES.items() if stage != "main")


def stage_pace(log: Path) -> tuple[float, int]:
    """The mean seconds per step of a stage's log windows after the first, and how many steps they cover."""
    rows = read_log(log)
    windows = [(b["step"] - a["step"], b["s_per_step"]) for a, b in zip(rows, rows[1:])]
    windows = windows[1:] or windows  # the first window holds the warm-up
    steps = sum(n for n, _ in windows)
    return sum(n * pace for n, pace in windows) / steps, steps


def run(
    processes: int,
    steps: int,
    clips: int,
    output_dir: Path,
    extra: Sequence[str] = (),
    stages: Sequence[str] = PRE_STAGES,
) -> float:
    """Runs the training command (with ``extra`` settings of the recipe, ``steps`` of each of ``stages`` and of
    the main loop); returns its wall time in seconds."""
    every = max(1, steps // 4)
    settings = [
        f"output_dir={output_dir}",
        *(f"{stage}.steps={steps}" for stage in stages),
        f"train.max_steps={steps}",
        f"train.log_every={every}",
        f"data.train.0.toy.num_videos={clips}",
        "data.eval.toy.num_videos=1",
        f"train.save_every_steps={steps * 10}",
    ]
    # The variant's settings first, so that the measured run's own step counts win over its.
    settings = [*extra, *settings]
    if processes == 1:
        command = [sys.executable, "-m", "mpgsam2", "train", str(CONFIG)]
    else:
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={processes}",
        ]
        command += ["-m", "mpgsam2", "train", str(CONFIG)]
    for setting in settings:
        command += ["--set", setting]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"The training command failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--processes", type=int, default=1, help="training processes (torchrun), one thread each"
    )
    parser.add_argument("--steps", type=int, default=40, help="steps of each stage")
    parser.add_argument("--clips", type=int, default=200, help="generated training clips")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="time a variant of the recipe (as the training command's --set); repeatable",
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    config = load_config(CONFIG, args.set)
    # The stages that the configuration (with the variant's settings) runs; the main loop always runs.
    timed = {stage: entry for stage, entry in STAGES.items() if stage == "main" or entry[2](config)}
    with tempfile.TemporaryDirectory(prefix="toy-speed-") as folder:
        stages = [section for stage, (section, _, _) in timed.items() if stage != "main"]
        wall = run(args.processes, args.steps, args.clips, Path(folder) / "run", args.set, stages)
        figures = {
            "processes": args.processes,
            "settings": args.set,
            "steps": args.steps,
            "command_s": round(wall, 1),
            "stages": {},
        }
        total = 0.0
        for stage, (_, name, configured) in timed.items():
            pace, measured = stage_pace(Path(folder) / "run" / name)
            minutes = pace * configured(config) / 60
            total += minutes
            figures["stages"][stage] = {
                "s_per_step": round(pace, 4),
                "steps_measured": measured,
                "configured_steps": configured(config),
                "configured_minutes": round(minutes, 1),
            }
    figures["configured_minutes"] = round(total, 1)
    logger.info("%-11s %10s %9s %17s", "stage", "s / step", "measured", "minutes at toy.json")
    for stage, row in figures["stages"].items():
        logger.info(
            "%-11s %10.3f %9d %10.1f (%d steps)",
            stage,
            row["s_per_step"],
            row["steps_measured"],
            row["configured_minutes"],
            row["configured_steps"],
        )
    logger.info("the %d stages of configs/toy.json at this pace: %.1f minutes", len(timed), total)
    logger.info(
        "(%d process(es); the whole command, with its data and evaluation: %.0f s)", args.processes, wall
    )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
