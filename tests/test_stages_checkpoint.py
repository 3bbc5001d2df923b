"""The end of the pre-training stages is kept: a run stopped before its first main-loop checkpoint, or a variant
of the main loop, starts there instead of training the stages again, and goes on as an unbroken run would."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from short_runs import short_run

from mpgsam2 import load_model
from mpgsam2.training import load_config, read_log, train
from mpgsam2.training.resume import STAGES_CHECKPOINT, STATE_FILE

ROOT = Path(__file__).resolve().parents[1]
TOY = ROOT / "configs" / "toy.json"
# The heads kept on through the main loop, on the stages' own frames (as configs/toy.json), so that their
# state travels in the stages' checkpoint too.
KEPT = ("loss.categories=1", "categories.kept_frames=stage")


def run(output_dir: Path, *extra: str, resume: str | None = None) -> dict:
    return train(load_config(TOY, short_run(output_dir, *KEPT, *extra)), resume=resume)


def assert_same_steps(expected: list[dict], got: list[dict]) -> None:
    assert len(got) == len(expected)
    for step, (a, b) in enumerate(zip(expected, got)):
        for name, value in a.items():
            assert b[name] == pytest.approx(value, rel=1e-5), (step, name)


@pytest.mark.slow
def test_a_run_stopped_after_the_stages_resumes_there_without_training_them_again(tmp_path):
    straight = run(tmp_path / "a")
    saved = torch.load(tmp_path / "a" / STAGES_CHECKPOINT / STATE_FILE, weights_only=True)
    # The main loop's step 0: no optimiser state yet, the kept heads' state with it.
    assert saved["progress"] == {"step": 0, "epoch": 0, "samples": 0}
    assert "optimizer" not in saved and "categories_head" in saved
    # Never pruned by the main loop's own checkpoints (keep_checkpoints).
    assert (tmp_path / "a" / "checkpoint-3").is_dir()

    stopped = run(tmp_path / "b", "train.max_steps=0")
    assert stopped["steps"] == 0 and Path(stopped["checkpoint"]).name == STAGES_CHECKPOINT
    stage_logs = {
        name: read_log(tmp_path / "b" / name)
        for name in ("categories_log.jsonl", "grounding_log.jsonl", "clip_grounding_log.jsonl")
    }
    assert [len(rows) for rows in stage_logs.values()] == [2, 3, 2]
    resumed = run(tmp_path / "b", resume="auto")
    assert {name: read_log(tmp_path / "b" / name) for name in stage_logs} == stage_logs
    assert_same_steps(straight["history"], resumed["history"])
    ours = load_model(tmp_path / "b" / "checkpoint-3", device="cpu").state_dict()
    theirs = load_model(tmp_path / "a" / "checkpoint-3", device="cpu").state_dict()
    assert all(torch.allclose(ours[k], theirs[k], rtol=1e-4, atol=1e-6) for k in theirs)


@pytest.mark.slow
def test_a_variant_of_the_main_loop_starts_from_another_runs_stages(tmp_path):
    straight = run(tmp_path / "a")
    stages = str(tmp_path / "a" / STAGES_CHECKPOINT)
    same = run(tmp_path / "same", resume=stages)
    assert_same_steps(straight["history"], same["history"])
    # Another rate for the main loop: its own optimiser starts from the stages' weights.
    slower = run(tmp_path / "slower", "optim.lr=1e-5", "optim.lr_fast=1e-5", resume=stages)
    assert not any((tmp_path / "slower" / f"{s}_log.jsonl").exists() for s in ("grounding", "clip_grounding"))
    assert slower["history"][0]["loss"] == pytest.approx(straight["history"][0]["loss"], rel=1e-5)
    assert slower["history"][2]["loss"] != pytest.approx(straight["history"][2]["loss"], rel=1e-3)
