"""The curves of a run: means of each stage's logged terms over windows of steps, one JSON object a line in
the run's folder."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np

from .distributed import DistributedContext, mean_over_processes

logger = logging.getLogger(__name__)

#: The main loop's log; the stages before it write their own beside it.
MAIN_LOG = "log.jsonl"


def append_record(path: Path, record: dict) -> None:
    """Adds one window's record to a log (main process only)."""
    with path.open("a") as log:
        log.write(json.dumps(record) + "\n")


def read_log(path: str | Path) -> list[dict]:
    """The records of a log, in order."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def resumed_curve(records: list[dict]) -> list[dict]:
    """The records that the run's last weights come from. A run stopped and resumed from a checkpoint logs
    again the steps after it, so the log holds both attempts there; where a record's step is not past the one
    before it, the earlier attempt's records from that step on are dropped."""
    kept: list[dict] = []
    for record in records:
        while kept and kept[-1]["step"] >= record["step"]:
            kept.pop()
        kept.append(record)
    return kept


class StageLog:
    """Collects each step's terms; at step 1, every ``every`` steps and the last, logs their means over the
    processes and (main process) appends ``{"step", terms..., "lr", "s_per_step"}`` to ``path``."""

    def __init__(self, stage: str, path: Path, steps: int, every: int, context: DistributedContext):
        self.stage, self.path, self.steps, self.every, self.context = stage, path, steps, every, context
        self.window: list[dict[str, float]] = []
        self.tick = time.time()

    def add(self, step: int, terms: dict[str, float], lr: float) -> None:
        """Record the terms of ``step`` (1-based), with the learning rate it trained at."""
        self.window.append(terms)
        if step % self.every and step != 1 and step != self.steps:
            return
        means = {name: float(np.mean([entry[name] for entry in self.window])) for name in self.window[0]}
        means = mean_over_processes(means, self.context)
        seconds = (time.time() - self.tick) / len(self.window)
        if self.context.is_main:
            logger.info(
                "%s step %d/%d: %s, %.2f s/step",
                self.stage,
                step,
                self.steps,
                ", ".join(f"{name} {value:.4f}" for name, value in means.items()),
                seconds,
            )
            append_record(self.path, {"step": step, **means, "lr": lr, "s_per_step": seconds})
        self.window, self.tick = [], time.time()
