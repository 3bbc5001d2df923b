"""End-to-end tests of the Gradio app: ``python app.py --model test`` in a subprocess, driven through
``gradio_client`` exactly as the README shows.

The app runs the real untrained "test" preset on the real example clips; nothing is faked.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from mpgsam2.export import load_coco_rle_json, load_palette_zip
from mpgsam2.space import RunFolders
from mpgsam2.video_io import ffprobe_summary

ROOT = Path(__file__).resolve().parents[1]
CUPS = ROOT / "examples" / "short" / "cups_2s_360p.mp4"  # 640x360, 60 frames at 30000/1001 fps, aac audio
BEDROOM = ROOT / "examples" / "short" / "bedroom_1s_270p.mp4"  # 480x270, 30 frames at 30 fps, no audio
NTSC = 30000 / 1001
STARTUP_TIMEOUT_S = 120

# gradio_client reports usage to a server unless told not to; these tests only talk to 127.0.0.1.
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def running_app(
    folder: Path, *args: str, env: dict[str, str] | None = None, launcher: Path | None = None
) -> Iterator[str]:
    """Start ``python app.py ARGS`` (through ``launcher APP ARGS`` when given) on a free local port; yield
    its URL; stop it (by its process id).

    Its session folders go to ``folder / "sessions"``, Gradio's files to ``folder / "gradio"`` and its log to
    ``folder / "app.log"``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    environment = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "GRADIO_ANALYTICS_ENABLED": "False",
        "HF_HUB_OFFLINE": "1",
        "MPGSAM2_SESSIONS_DIR": str(folder / "sessions"),
        "GRADIO_TEMP_DIR": str(folder / "gradio"),
        **(env or {}),
    }
    log_path = folder / "app.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                *([str(launcher)] if launcher else []),
                str(ROOT / "app.py"),
                "--port",
                str(port),
                *args,
            ],
            cwd=ROOT,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: workers it forks (ZeroGPU) stop with it
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            if process.poll() is not None:
                raise AssertionError(
                    f"the app exited with {process.returncode}:\n{log_path.read_text()[-3000:]}"
                )
            try:
                with urllib.request.urlopen(url + "/config", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"the app did not start in time:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        _stop_group(process)


def _stop_group(process: subprocess.Popen) -> None:
    """Terminate the app and every process it started (a forked GPU worker outlives its parent)."""
    for sig, wait_s in ((signal.SIGTERM, 20), (signal.SIGKILL, 20)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=wait_s)
            break
        except subprocess.TimeoutExpired:
            continue
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # the workers, if the app left any


def client_for(url: str, downloads: Path):
    from gradio_client import Client

    return Client(url, verbose=False, download_files=str(downloads))


@pytest.fixture(scope="module")
def app(tmp_path_factory) -> Iterator[tuple[str, Path]]:
    """The app with the untrained test model: its URL and its session root."""
    folder = tmp_path_factory.mktemp("app")
    with running_app(folder, "--model", "test") as url:
        yield url, folder / "sessions"


def _label_map(masks: list[np.ndarray]) -> np.ndarray:
    labels = np.zeros(masks[0].shape, dtype=np.uint8)
    for k, m in enumerate(masks):
        labels[m] = k + 1  # later expressions win overlaps, as in the palette export
    return labels


@pytest.mark.slow
def test_segment_end_to_end_through_gradio_client(app, tmp_path):
    from gradio_client import handle_file

    url, _ = app
    client = client_for(url, tmp_path)
    overlay, bundle, palette, rle, timeline, summary = client.predict(
        video=handle_file(str(CUPS)),
        expressions="the yellow ball\nthe cup on the right",
        max_frames=12,
        api_name="/segment",
    )
    client.close()

    probe = ffprobe_summary(overlay)
    assert probe["codec"] == "h264" and probe["pix_fmt"] == "yuv420p"
    assert probe["fps"] == pytest.approx(ffprobe_summary(CUPS)["fps"]) == pytest.approx(NTSC)
    assert probe["num_frames"] == 12 and (probe["width"], probe["height"]) == (640, 360)
    assert probe["has_audio"] and probe["audio_codec"] == "aac"

    labels = load_palette_zip(palette)
    masks = load_coco_rle_json(rle)
    assert labels.shape == (12, 360, 640) and [m.shape for m in masks] == [(12, 360, 640)] * 2
    np.testing.assert_array_equal(labels, _label_map(masks))
    assert all(m.any() for m in masks)  # the test preset draws masks (meaningless ones)

    assert summary["untrained"] is True and summary["model"] == "test"
    assert summary["video"]["frames"] == 12 and summary["video"]["fps"] == pytest.approx(NTSC)
    assert [e["expression"] for e in summary["expressions"]] == ["the yellow ball", "the cup on the right"]
    assert [e["color_name"] for e in summary["expressions"]] == ["blue", "orange"]
    assert [e["frames_with_mask"] for e in summary["expressions"]] == [
        int(m.any(axis=(1, 2)).sum()) for m in masks
    ]

    with zipfile.ZipFile(bundle) as archive:
        assert set(archive.namelist()) == {
            "overlay.mp4",
            "masks_palette.zip",
            "masks_rle.json",
            "timeline.png",
            "summary.json",
        }
        np.testing.assert_array_equal(
            load_palette_zip(archive.extract("masks_palette.zip", tmp_path / "bundle")), labels
        )
    png = Path(timeline).read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", png[16:24]) == (900, 500)


@pytest.mark.slow
def test_two_sessions_at_once_each_get_their_own_results(app, tmp_path):
    from gradio_client import handle_file

    url, sessions_root = app
    first, second = client_for(url, tmp_path / "a"), client_for(url, tmp_path / "b")
    assert first.session_hash != second.session_hash
    folders = RunFolders(sessions_root)
    own = {folders.folder(first.session_hash).name, folders.folder(second.session_hash).name}
    job_a = first.submit(
        video=handle_file(str(CUPS)), expressions="the yellow ball", max_frames=6, api_name="/segment"
    )
    job_b = second.submit(
        video=handle_file(str(BEDROOM)),
        expressions="the girl in the blue skirt\nthe boy",
        max_frames=5,
        fps=15,
        api_name="/segment",
    )
    seen: set[str] = set()
    deadline = time.monotonic() + 240
    while not (job_a.done() and job_b.done()) and time.monotonic() < deadline:
        seen |= {p.name for p in sessions_root.iterdir()} if sessions_root.exists() else set()
        time.sleep(0.05)
    result_a, result_b = job_a.result(timeout=10), job_b.result(timeout=10)
    first.close()
    second.close()

    # Each run worked in its own session's folder, named after (a digest of) that session.
    assert seen & own == own

    overlay_a, _, palette_a, rle_a, _, summary_a = result_a
    overlay_b, _, palette_b, rle_b, _, summary_b = result_b
    assert [e["expression"] for e in summary_a["expressions"]] == ["the yellow ball"]
    assert [e["expression"] for e in summary_b["expressions"]] == ["the girl in the blue skirt", "the boy"]
    probe_a, probe_b = ffprobe_summary(overlay_a), ffprobe_summary(overlay_b)
    assert (probe_a["width"], probe_a["height"], probe_a["num_frames"]) == (640, 360, 6)
    assert (probe_b["width"], probe_b["height"], probe_b["num_frames"]) == (480, 270, 5)
    assert probe_a["has_audio"] and not probe_b["has_audio"]
    assert probe_b["fps"] == pytest.approx(15.0)
    assert load_palette_zip(palette_a).shape == (6, 360, 640)
    assert load_palette_zip(palette_b).shape == (5, 270, 480)
    assert len(load_coco_rle_json(rle_a)) == 1 and len(load_coco_rle_json(rle_b)) == 2
    assert len({overlay_a, overlay_b, palette_a, palette_b}) == 4


@pytest.mark.slow
def test_points_re_track_a_target_from_the_clicked_frame(app, tmp_path):
    from gradio_client import handle_file

    url, _ = app
    client = client_for(url, tmp_path)
    form = {"video": handle_file(str(CUPS)), "expressions": "the yellow ball\nthe cup", "max_frames": 6}
    *_, rle, _, summary = client.predict(**form, api_name="/segment")
    *_, rle_fixed, _, summary_fixed = client.predict(
        **form, points="the yellow ball:3:320,180\nthe yellow ball:4:20,30:neg", api_name="/segment"
    )
    client.close()
    before, after = load_coco_rle_json(rle), load_coco_rle_json(rle_fixed)
    np.testing.assert_array_equal(after[0][:3], before[0][:3])  # frames before the first click
    np.testing.assert_array_equal(after[1], before[1])  # the expression without points
    assert (after[0][3:] != before[0][3:]).any()
    assert "clicks" not in summary or not summary["clicks"]
    assert summary_fixed["clicks"] == [
        {"expression": "the yellow ball", "frame": 3, "x": 320.0, "y": 180.0, "positive": True},
        {"expression": "the yellow ball", "frame": 4, "x": 20.0, "y": 30.0, "positive": False},
    ]


def test_impossible_requests_are_refused_before_they_are_queued(app, tmp_path):
    from gradio_client import handle_file
    from gradio_client.exceptions import ValidationError

    url, sessions_root = app
    client = client_for(url, tmp_path)
    started = time.monotonic()
    with pytest.raises(ValidationError) as caught:
        client.predict(
            video=handle_file(str(CUPS)), expressions=" \n ", end_s=-1, max_frames=1000, api_name="/segment"
        )
    message = str(caught.value)
    assert "expressions: Type at least one expression" in message
    assert "end_s: The trim end must be 0" in message
    assert "max_frames: At most 600 frames run at once" in message
    with pytest.raises(
        ValidationError, match="start_s: The trim window holds no frame: the video is 2.00 s long"
    ):
        client.predict(video=handle_file(str(CUPS)), expressions="the ball", start_s=3, api_name="/segment")
    with pytest.raises(ValidationError, match="points: Point 1 names no expression of the form"):
        client.predict(
            video=handle_file(str(CUPS)), expressions="the ball", points="the cat:1:2,3", api_name="/segment"
        )
    not_a_video = tmp_path / "notes.mp4"
    not_a_video.write_text("not a video")
    with pytest.raises(ValidationError, match="video: Could not read the uploaded file as a video") as caught:
        client.predict(video=handle_file(str(not_a_video)), expressions="the ball", api_name="/segment")
    assert "notes.mp4" not in str(caught.value)
    assert time.monotonic() - started < 30
    # Nothing ran: this session never got a folder.
    assert not RunFolders(sessions_root).folder(client.session_hash).exists()
    client.close()


@pytest.mark.slow
@pytest.mark.skipif(
    (ROOT / "checkpoints" / "ytvos").exists(), reason="real weights are installed in checkpoints/ytvos"
)
def test_without_weights_the_app_runs_the_toy_model_and_says_how_to_get_the_real_ones(tmp_path):
    import json

    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    from mpgsam2.export import load_palette_zip

    hub = {"HF_HOME": str(tmp_path / "hf"), "MPGSAM2_WEIGHTS": str(tmp_path / "none")}
    with running_app(tmp_path / "app", env=hub) as url:  # the default model, ytvos, cannot be loaded
        with urllib.request.urlopen(url + "/config", timeout=10) as response:
            config = json.load(response)
        values = [str(c.get("props", {}).get("value")) for c in config["components"]]
        notice = next(v for v in values if "Toy model" in v)
        assert "The `ytvos` model could not be loaded" in notice
        assert "huggingface-cli download ReeF2025/MPG-SAM2" in notice
        dropdown = next(c for c in config["components"] if c.get("props", {}).get("elem_id") == "model")
        assert dropdown["props"]["value"] == "toy"
        client = client_for(url, tmp_path)
        # Without a model named, /segment runs the app's model: the toy model segments its example.
        result = client.predict(
            video=handle_file(str(ROOT / "examples" / "toy_shapes.mp4")),
            expressions="the green circle",
            max_frames=4,
            api_name="/segment",
        )
        summary = result[5]
        assert summary["model"] == "toy" and not summary["untrained"]
        masks = load_palette_zip(result[2])
        assert masks.shape[0] == 4 and (masks == 1).any()
        # The released model asked for by name still says how to get it.
        with pytest.raises(AppError, match="huggingface-cli download ReeF2025/MPG-SAM2"):
            client.predict(
                video=handle_file(str(CUPS)), expressions="the ball", model="ytvos", max_frames=2,
                api_name="/segment",
            )  # fmt: skip
        client.close()
