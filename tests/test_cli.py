"""`python -m mpgsam2 segment | evaluate | infer-dataset` end to end on real clips with the test preset."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mpgsam2.export import load_coco_rle_json, load_palette_zip
from mpgsam2.video_io import ffprobe_summary, probe_video

ROOT = Path(__file__).resolve().parents[1]
CUPS = ROOT / "examples" / "short" / "cups_2s_360p.mp4"
BEDROOM = ROOT / "examples" / "short" / "bedroom_1s_270p.mp4"


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "mpgsam2", "-q", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def cups_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cups")
    done = run_cli(
        "segment", str(CUPS), "-e", "the yellow ball", "-e", "the cup on the right",
        "--out", str(out), "--model", "test", "--start", "0.5", "--max-frames", "12",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return out, json.loads(done.stdout.strip().splitlines()[-1])


def test_segment_writes_a_browser_playable_overlay_with_audio(cups_run):
    out, printed = cups_run
    assert Path(printed["overlay"]) == out / "overlay.mp4"
    source = probe_video(CUPS)
    summary = ffprobe_summary(out / "overlay.mp4")
    assert summary["codec"] == "h264" and summary["pix_fmt"] == "yuv420p"
    assert summary["fps"] == pytest.approx(source.fps, rel=1e-3)
    assert summary["num_frames"] == 12
    assert (summary["width"], summary["height"]) == (source.width, source.height)
    assert summary["has_audio"] and source.has_audio
    assert summary["duration_s"] == pytest.approx(12 / source.fps, abs=0.1)


def test_segment_exports_decode_to_the_same_masks(cups_run):
    out, _ = cups_run
    palette = load_palette_zip(out / "masks_palette.zip")  # (T, H, W) index = expression number
    rle = load_coco_rle_json(out / "masks_rle.json")  # per expression (T, H, W) bool
    assert palette.shape == (12, 360, 640) and len(rle) == 2
    # The palette keeps the later expression where masks overlap.
    expected = np.where(rle[1], 2, np.where(rle[0], 1, 0))
    np.testing.assert_array_equal(palette, expected)
    per_expression = sorted((out / "masks").iterdir())
    assert len(per_expression) == 2
    first = np.stack([np.asarray(Image.open(p)) > 127 for p in sorted(per_expression[0].glob("*.png"))])
    np.testing.assert_array_equal(first, rle[0])
    data = json.loads((out / "masks_rle.json").read_text())
    assert data["fps"] == pytest.approx(probe_video(CUPS).fps, rel=1e-3)
    assert [e["text"] for e in data["expressions"]] == ["the yellow ball", "the cup on the right"]
    stamps = sorted({a["timestamp_s"] for a in data["annotations"]})
    assert stamps[0] == pytest.approx(0.5, abs=1 / 29.97)


def test_segment_writes_prior_views_timeline_and_bundle(cups_run):
    out, _ = cups_run
    views = sorted((out / "priors").glob("frame_*.jpg"))
    assert len(views) == 12
    view = Image.open(views[0])
    assert view.height == 2 * 360 and view.width == 3 * 640  # two expressions: [frame | prior | mask] rows
    timeline = Image.open(out / "timeline.png")
    assert timeline.width > 300 and timeline.height > 200
    with zipfile.ZipFile(out / "mpgsam2_results.zip") as bundle:
        assert {"overlay.mp4", "masks_palette.zip", "masks_rle.json", "timeline.png"} <= set(
            bundle.namelist()
        )
    summary = json.loads((out / "summary.json").read_text())
    assert [e["expression"] for e in summary["expressions"]] == ["the yellow ball", "the cup on the right"]


def test_single_expression_is_blue_and_no_audio_source_gives_no_audio(tmp_path):
    done = run_cli(
        "segment", str(BEDROOM), "-e", "the boy", "--out", str(tmp_path), "--model", "test", "--fps", "10"
    )
    assert done.returncode == 0, done.stderr
    summary = ffprobe_summary(tmp_path / "overlay.mp4")
    assert summary["fps"] == pytest.approx(10, rel=1e-3) and not summary["has_audio"]
    result = json.loads((tmp_path / "summary.json").read_text())["expressions"][0]
    assert tuple(result["color"]) == (30, 144, 255)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["segment", "README.md", "-e", "x", "--model", "test"], "Could not read"),
        (["segment", str(CUPS), "--model", "test"], "at least one expression"),
        (["segment", str(CUPS), "-e", "x", "--model", "nowhere/none:ytvos"], "cannot be downloaded"),
        (["segment", str(CUPS), "-e", "x", "--model", "test", "--start", "50"], "no frame"),
    ],
)
def test_user_errors_end_with_one_clear_line(tmp_path, args, message):
    done = run_cli(*args, "--out", str(tmp_path / "o"))
    assert done.returncode == 2
    assert message.lower() in done.stderr.lower()
    assert "Traceback" not in done.stderr


def test_evaluate_reports_j_and_f(tmp_path):
    gt, pred = tmp_path / "gt" / "vid", tmp_path / "pred" / "vid"
    gt.mkdir(parents=True)
    pred.mkdir(parents=True)
    square = np.zeros((40, 40), np.uint8)
    square[10:20, 10:20] = 1
    for t in range(3):
        Image.fromarray(square).save(gt / f"{t:05d}.png")
        Image.fromarray(np.roll(square, 1, axis=1)).save(pred / f"{t:05d}.png")
    done = run_cli("evaluate", str(tmp_path / "pred"), str(tmp_path / "gt"))
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    # A 10x10 square shifted by one pixel: J = 90 / 110; the shift is within the boundary tolerance: F = 1.
    assert report["J"] == pytest.approx(90 / 110) and report["F"] == pytest.approx(1.0)
    assert report["J&F"] == pytest.approx((90 / 110 + 1) / 2)
    assert report["videos"]["vid"]["objects"]["1"]["J_per_frame"] == pytest.approx([90 / 110] * 3)


def _write_ytvos_fixture(root: Path) -> None:
    frames = root / "valid" / "JPEGImages" / "vid1"
    frames.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for t in range(3):
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(frames / f"{t:05d}.jpg")
    meta = {
        "videos": {
            "vid1": {
                "frames": ["00000", "00001", "00002"],
                "expressions": {"0": {"exp": "a cat", "obj_id": "1"}, "1": {"exp": "the dog", "obj_id": "2"}},
            }
        }
    }
    (root / "valid" / "meta_expressions.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("fmt", ["ytvos", "mevis", "davis"])
def test_infer_dataset_writes_the_benchmark_layout(tmp_path, fmt):
    _write_ytvos_fixture(tmp_path / "data")
    out = tmp_path / "out"
    done = run_cli(
        "infer-dataset", str(tmp_path / "data"), "--format", fmt, "--out", str(out), "--model", "test"
    )
    assert done.returncode == 0, done.stderr
    if fmt == "ytvos":
        pngs = sorted(out.glob("Annotations/vid1/*/*.png"))
    elif fmt == "mevis":
        pngs = sorted(out.glob("vid1/*/*.png"))
    else:
        # Expression i is annotator i % 4's object i // 4 + 1: two expressions, two annotators.
        pngs = sorted(out.glob("anno_*/vid1/*.png"))
        assert sorted({p.parent.parent.name for p in pngs}) == ["anno_0", "anno_1"]
    assert len(pngs) == 6
    image = Image.open(pngs[0])
    assert image.size == (64, 48)
    values = set(np.unique(np.asarray(image)).tolist())
    if fmt == "ytvos":
        assert values <= {0, 255}
    elif fmt == "davis":
        assert image.mode == "P" and values <= {0, 1}
