"""benchmarks/pipeline.py: its tiny mode runs end to end, writes the agreed JSON, and both sides agree."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "pipeline.py"
REQUIRED = ("frames", "expressions", "baseline_s", "ours_s", "baseline_peak_mib", "ours_peak_mib")
STAGES = ("decode", "beit3", "prior", "hiera", "memory_decoder", "encode")


@pytest.fixture(scope="module")
def benchmark_module():
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import pipeline
    finally:
        sys.path.remove(str(SCRIPT.parent))
    return pipeline


@pytest.mark.slow
def test_tiny_run_writes_rows_and_the_baseline_gives_our_masks(tmp_path):
    out = tmp_path / "rows.json"
    command = [sys.executable, str(SCRIPT), "--preset", "test", "--frames", "2", "--expressions", "1"]
    command += [
        "--global-frames",
        "",
        "--threads",
        "1",
        "--height",
        "96",
        "--width",
        "128",
        "--json",
        str(out),
    ]
    completed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "Whole pipeline" in completed.stdout

    rows = json.loads(out.read_text())
    assert isinstance(rows, list) and len(rows) == 1
    (row,) = rows
    for key in REQUIRED:
        assert key in row, key
    assert (row["frames"], row["expressions"], row["kind"]) == (2, 1, "pipeline")
    for variant in ("baseline", "ours"):
        assert row[f"{variant}_s"] > 0 and row[f"{variant}_peak_mib"] > 0
        stages = [row[f"{variant}_{stage}_s"] for stage in STAGES]
        assert all(s >= 0 for s in stages) and row[f"{variant}_hiera_s"] > 0
        assert sum(stages) <= row[f"{variant}_s"] * 1.01
    # The same computation on both sides: the masks agree (float rounding may only flip pixels whose logit
    # is within 1e-3 of the threshold) and the logits within the parity tolerance.
    assert row["masks_match"], row
    assert row["mask_mismatch_fraction"] <= 1e-4 and row["max_abs_logit_diff"] <= 1e-2
    assert row["mask_foreground_fraction"] > 0  # the random "test" weights keep objects present


def test_synthetic_frames_are_deterministic_and_moving(benchmark_module):
    first = benchmark_module.synthetic_frames(3, 40, 60, seed=1)
    assert first.shape == (3, 40, 60, 3) and first.dtype.name == "uint8"
    assert (first == benchmark_module.synthetic_frames(3, 40, 60, seed=1)).all()
    assert (first[0] != first[2]).any()


def test_official_attention_bound_is_quadratic(benchmark_module):
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        from official_baseline import attention_matrix_bytes
    finally:
        sys.path.remove(str(SCRIPT.parent))
    assert attention_matrix_bytes(1) == 2 * 8 * 196 * 196 * 4
    assert attention_matrix_bytes(128) == 4**2 * attention_matrix_bytes(32)
    assert attention_matrix_bytes(128) / 2**30 > 37  # more than this 24 GiB machine has


def test_extra_expression_cost_and_tables(benchmark_module, capsys):
    rows = []
    for k, (base, ours) in {1: (10.0, 8.0), 3: (30.0, 12.0)}.items():
        row = {"kind": "pipeline", "frames": 4, "expressions": k, "masks_equal": True}
        for variant, seconds in (("baseline", base), ("ours", ours)):
            row |= {f"{variant}_s": seconds, f"{variant}_peak_mib": 900.0, f"{variant}_working_mib": 90.0}
            row |= {f"{variant}_{stage}_s": seconds / 8 for stage in benchmark_module.STAGES}
        row["speedup"] = base / ours
        rows.append(row)
    benchmark_module.add_expression_costs(rows)
    assert rows[1]["ours_extra_expression_fraction"] == pytest.approx(0.25)
    assert rows[1]["baseline_extra_expression_fraction"] == pytest.approx(1.0)
    benchmark_module.print_tables(rows)
    assert "2.50x" in capsys.readouterr().out


@pytest.mark.slow
def test_the_toy_training_speed_benchmark_times_every_stage_of_the_toy_recipe(tmp_path):
    # A few steps of each stage through the real training command; its paces and the recipe's step counts,
    # here of a variant: the variant's step counts are what the paces are multiplied by, the measured run
    # keeps its own few steps.
    out = tmp_path / "speed.json"
    command = [sys.executable, str(ROOT / "benchmarks" / "toy_training_speed.py"), "--steps", "8"]
    variant = ["grounding.steps=1600", "categories.kept_batch_size=2"]
    command += ["--clips", "12", "--json", str(out), "--set", variant[0], "--set", variant[1]]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(out.read_text())
    recipe = json.loads((ROOT / "configs" / "toy.json").read_text())
    stages = figures["stages"]
    assert figures["settings"] == variant
    assert list(stages) == ["categories", "grounding", "clip", "main"]  # every stage the recipe runs
    assert [stages[s]["configured_steps"] for s in stages] == [
        recipe["categories"]["steps"],
        1600,
        recipe["clip_grounding"]["steps"],
        recipe["train"]["max_steps"],
    ]
    for row in stages.values():
        # Logged every 2 steps: the windows after the first cover steps 3 to 8.
        assert row["steps_measured"] == 6 and 0 < row["s_per_step"] < 30
        assert row["configured_minutes"] == pytest.approx(
            row["s_per_step"] * row["configured_steps"] / 60, abs=0.06
        )
    assert figures["configured_minutes"] == pytest.approx(
        sum(r["configured_minutes"] for r in stages.values()), abs=0.2
    )
    assert "minutes" in done.stderr  # the table is logged
