"""Copies a toy training run's checkpoint into checkpoints/toy/, the model that ``--model toy`` loads.

Writes the weights (stored as float16: 7 MB instead of 14, under the 10 MB that a Hugging Face Space takes
without LFS; the model loads them into float32, and the held-out figures of ``benchmarks/toy_model.py`` are
the same), their configuration and tokenizer, the run's configuration (its ``output_dir`` recorded as
``--recorded-output-dir``, not the folder on the machine that trained it) and its loss curves
(``training_log.csv``: the logged means every ``train.log_every`` steps; ``categories_log.csv``,
``grounding_log.csv`` and ``clip_grounding_log.csv``: those of the stages before it, when the run had them).
The model card (``checkpoints/toy/README.md``) is written by hand from ``benchmarks/toy_model.py``'s figures.

Run: python scripts/export_toy_model.py RUN_DIR [--checkpoint checkpoint-N] [--output checkpoints/toy]
    [--recorded-output-dir runs/toy]
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import shutil
from pathlib import Path

from safetensors.torch import load_file, save_file

from mpgsam2.checkpoints import load_model, resolve_source
from mpgsam2.training import MAIN_LOG, read_log, resumed_curve
from mpgsam2.training.categories import CATEGORIES_LOG
from mpgsam2.training.grounding import CLIP_GROUNDING_LOG, GROUNDING_LOG

logger = logging.getLogger("export_toy_model")

COPIED = ("config.json", "sentencepiece.bpe.model")
RUN_CONFIG = "train_config.json"
#: configs/toy.json's own output folder: the exported run configuration is then that file's.
RECIPE_OUTPUT_DIR = "runs/toy"
WEIGHTS = "model.safetensors"


def write_curve(log: Path, csv_path: Path, last_step: int | None) -> list[dict]:
    """A run's JSON-lines log as CSV (rows up to ``last_step``, those of the last attempt where the run was
    resumed); returns the rows."""
    rows = [row for row in resumed_curve(read_log(log)) if last_step is None or row["step"] <= last_step]
    columns = [c for c in ("step", "epoch", "lr", "s_per_step") if c in rows[0]]
    columns += sorted(k for k in rows[0] if k.startswith("loss") or k.endswith("accuracy"))
    with csv_path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([f"{row[c]:.6g}" if isinstance(row[c], float) else row[c] for c in columns])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="the training run's output folder")
    parser.add_argument("--checkpoint", default=None, help="a checkpoint folder's name (default: the last)")
    parser.add_argument("--output", type=Path, default=Path("checkpoints/toy"))
    parser.add_argument(
        "--recorded-output-dir",
        default=RECIPE_OUTPUT_DIR,
        help="the output_dir written into the exported run configuration (default: configs/toy.json's)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    source = args.run / args.checkpoint if args.checkpoint else resolve_source(args.run)
    model = load_model(source, device="cpu")  # refuses a broken checkpoint before anything is copied
    if model.config.name != "toy":
        raise SystemExit(f"{source} holds a {model.config.name!r} model, not the toy preset.")
    args.output.mkdir(parents=True, exist_ok=True)
    for name in COPIED:
        shutil.copy2(source / name, args.output / name)
    # Where the run happened to write is a path on the training machine; the recipe's folder makes the file
    # the configuration that the card's command reads (the other settings are the run's, overrides included).
    run_config = json.loads((source / RUN_CONFIG).read_text())
    run_config["output_dir"] = args.recorded_output_dir
    (args.output / RUN_CONFIG).write_text(json.dumps(run_config, indent=2) + "\n")
    weights = load_file(source / WEIGHTS)
    save_file(
        {k: v.half() if v.is_floating_point() else v for k, v in weights.items()}, args.output / WEIGHTS
    )
    step = int(source.name.rpartition("-")[2])  # checkpoint-N: the curve up to the exported step
    rows = write_curve(args.run / MAIN_LOG, args.output / "training_log.csv", step)
    for stage_log in (CATEGORIES_LOG, GROUNDING_LOG, CLIP_GROUNDING_LOG):
        curve = args.output / stage_log.replace(".jsonl", ".csv")
        if (args.run / stage_log).is_file():
            write_curve(args.run / stage_log, curve, None)
        elif curve.is_file():
            curve.unlink()  # an earlier export's, from a run with that stage
    size = sum(f.stat().st_size for f in args.output.iterdir()) / 2**20
    logger.info("Wrote %s from %s (%d log rows, %.1f MiB)", args.output, source, len(rows), size)


if __name__ == "__main__":
    main()
