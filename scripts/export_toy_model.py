"""Copies a toy training run's checkpoint into checkpoints/toy/, the model that ``--model toy`` loads.

Writes the weights (stored as float16: 7 MB instead of 14, under the 10 MB that a Hugging Face Space takes
without LFS; the model loads them into float32, and the held-out figures of ``benchmarks/toy_model.py`` are
the same), their configuration and tokenizer, the run's configuration (its ``output_dir`` recorded as
``--recorded-output-dir``, not the folder on the machine that trained it) and its loss curves
(``training_log.csv``: the logged means every ``train.log_every`` steps; ``categories_log.csv``,
``grounding_log.csv`` and ``clip_grounding_log.csv``: those of the stages before it, when the run had them).
The model card (``checkpoints/toy/README.md``) is written by hand from ``benchmarks/toy_model.py``'s figures.

With ``--then RUN2`` (a run of ``configs/toy_lookalike.json``, which goes on from RUN's weights), the weights
come from RUN2's last checkpoint, and RUN2's configuration and curves are written beside RUN's, named
``lookalike_train_config.json``, ``lookalike_clip_grounding_log.csv`` and ``lookalike_training_log.csv`` (its
main loop). Without RUN, the folder's own run files (an earlier export of RUN) stay as they are.

Run: python scripts/export_toy_model.py [RUN_DIR] [--checkpoint checkpoint-N] [--output checkpoints/toy]
    [--recorded-output-dir runs/toy] [--then RUN2_DIR]
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
STAGE_LOGS = (CATEGORIES_LOG, GROUNDING_LOG, CLIP_GROUNDING_LOG)
#: The prefix of a second run's files (``--then``), and configs/toy_lookalike.json's own output folder.
THEN_NAME = "lookalike"
THEN_OUTPUT_DIR = "runs/toy_lookalike"


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
    parser.add_argument(
        "run",
        type=Path,
        nargs="?",
        help="the training run's output folder (leave it out with --then to keep the folder's own run files)",
    )
    parser.add_argument("--checkpoint", default=None, help="a checkpoint folder's name (default: the last)")
    parser.add_argument("--output", type=Path, default=Path("checkpoints/toy"))
    parser.add_argument(
        "--recorded-output-dir",
        default=RECIPE_OUTPUT_DIR,
        help="the output_dir written into the exported run configuration (default: configs/toy.json's)",
    )
    parser.add_argument(
        "--then",
        type=Path,
        default=None,
        help="a second run that went on from RUN's weights (configs/toy_lookalike.json): the weights of its "
        "last checkpoint, its configuration and its curves",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.run is None and (args.then is None or not (args.output / RUN_CONFIG).is_file()):
        parser.error(f"give RUN, or --then with an --output that already holds a run's {RUN_CONFIG}")

    source = None
    if args.run is not None:
        source = args.run / args.checkpoint if args.checkpoint else resolve_source(args.run)
    weights_source = resolve_source(args.then) if args.then else source
    model = load_model(weights_source, device="cpu")  # refuses a broken checkpoint before anything is copied
    if model.config.name != "toy":
        raise SystemExit(f"{weights_source} holds a {model.config.name!r} model, not the toy preset.")
    args.output.mkdir(parents=True, exist_ok=True)
    for name in COPIED:
        shutil.copy2(weights_source / name, args.output / name)
    weights = load_file(weights_source / WEIGHTS)
    save_file(
        {k: v.half() if v.is_floating_point() else v for k, v in weights.items()}, args.output / WEIGHTS
    )
    if source is not None:
        export_run_files(args.run, source, args.output, args.recorded_output_dir)
    # The second run's main loop (when it has one) and stages, each as RUN's curve of the same name.
    then_logs = ((MAIN_LOG, "training_log.csv"), *((log, csv_name(log)) for log in STAGE_LOGS))
    then_files = [f"{THEN_NAME}_{RUN_CONFIG}", *(f"{THEN_NAME}_{name}" for _, name in then_logs)]
    for name in then_files:
        (args.output / name).unlink(missing_ok=True)  # an earlier export's
    if args.then is not None:
        then_config = json.loads((weights_source / RUN_CONFIG).read_text())
        then_config["output_dir"] = THEN_OUTPUT_DIR
        (args.output / then_files[0]).write_text(json.dumps(then_config, indent=2) + "\n")
        for (log, _), name in zip(then_logs, then_files[1:]):
            if (args.then / log).is_file():
                write_curve(args.then / log, args.output / name, None)
    size = sum(f.stat().st_size for f in args.output.iterdir()) / 2**20
    logger.info("Wrote %s from %s (%.1f MiB)", args.output, weights_source, size)


def csv_name(log: str) -> str:
    return log.replace(".jsonl", ".csv")


def export_run_files(run: Path, source: Path, output: Path, recorded_output_dir: str) -> None:
    """The run's configuration and curves, beside the weights."""
    # Where the run happened to write is a path on the training machine; the recipe's folder makes the file
    # the configuration that the card's command reads (the other settings are the run's, overrides included).
    run_config = json.loads((source / RUN_CONFIG).read_text())
    run_config["output_dir"] = recorded_output_dir
    (output / RUN_CONFIG).write_text(json.dumps(run_config, indent=2) + "\n")
    step = int(source.name.rpartition("-")[2])  # checkpoint-N: the curve up to the exported step
    write_curve(run / MAIN_LOG, output / "training_log.csv", step)
    for stage_log in STAGE_LOGS:
        curve = output / csv_name(stage_log)
        if (run / stage_log).is_file():
            write_curve(run / stage_log, curve, None)
        elif curve.is_file():
            curve.unlink()  # an earlier export's, from a run with that stage


if __name__ == "__main__":
    main()
