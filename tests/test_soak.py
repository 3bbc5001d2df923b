"""Soak: N sequential runs through the app's session machinery leave no temporary files and no memory growth.

Each run goes through ``app._execute`` (a fresh session, its run folder, the pipeline with the untrained test
model on a 6-frame clip, every export), then the session ends. Temporary files are counted under the
sessions root and under a private temporary directory that every ``tempfile`` call of this process uses;
memory is the process's resident set (VmRSS). The figures are printed (``pytest -s`` shows them).
"""

from __future__ import annotations

import gc
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CUPS = ROOT / "examples" / "short" / "cups_2s_360p.mp4"
RUNS = 5
MAX_RSS_GROWTH_MB = 150
TIME_LIMIT_S = 120


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    pytest.skip("no /proc/self/status VmRSS on this system")


def count_files(*folders: Path) -> int:
    return sum(1 for folder in folders if folder.exists() for p in folder.rglob("*") if p.is_file())


@pytest.mark.slow
def test_sequential_runs_leave_no_files_and_no_memory_growth(tmp_path, monkeypatch):
    sys.path.insert(0, str(ROOT))
    try:
        import app
    finally:
        sys.path.remove(str(ROOT))
    from mpgsam2 import space
    from mpgsam2.inference.predictor import VideoPredictor

    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private_tmp))
    sessions = space.RunFolders(tmp_path / "sessions")
    predictor = VideoPredictor.from_pretrained("test", device="cpu")
    store = space.ModelStore(lambda source, device=None: predictor)
    monkeypatch.setattr(app, "MODELS", store)
    monkeypatch.setattr(app, "SESSIONS", sessions)
    monkeypatch.setattr(app, "MODEL_CHOICES", ["test"])
    job = app._check(str(CUPS), "the yellow ball\nthe cup on the right", "test", 0, 0, 0, 6, 0.5)
    assert job.frames == 6

    def one_run(index: int) -> None:
        session = f"soak-{index}"
        finished = list(app._execute(job, session, None))[-1]
        assert finished.outputs.num_frames == 6 and finished.outputs.bundle_zip.is_file()
        sessions.remove(session)  # the session ends (the page's unload)

    one_run(-1)  # warm-up: first-use allocations and imports are not growth
    gc.collect()
    files_before, rss_before = count_files(sessions.root, private_tmp), rss_mb()
    started = time.monotonic()
    for index in range(RUNS):
        one_run(index)
        assert time.monotonic() - started < TIME_LIMIT_S, f"soak ran past {TIME_LIMIT_S} s"
    gc.collect()
    files_after, rss_after = count_files(sessions.root, private_tmp), rss_mb()
    print(
        f"\nsoak: {RUNS} runs of {job.frames} frames x {len(job.expressions)} expressions in "
        f"{time.monotonic() - started:.1f} s; temp files before {files_before}, after {files_after}; "
        f"RSS before {rss_before:.1f} MB, after {rss_after:.1f} MB ({rss_after - rss_before:+.1f} MB)"
    )
    assert files_after <= files_before == 0
    assert sessions.sessions() == []
    assert rss_after - rss_before < MAX_RSS_GROWTH_MB
