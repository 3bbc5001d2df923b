"""The Space on ZeroGPU, emulated on the CPU: ``python app.py --model test`` launched through the ``spaces``
package's real ZeroGPU code path (``tests/zerogpu/launch.py``) against a stand-in device API on loopback
(``tests/zerogpu/device_api.py``), and used through ``gradio_client`` as a visitor would.

Checked: start-up (models built and loaded under ZeroGPU's torch patching), a run through a forked worker,
a second run in the same worker, Stop (the frames done are delivered), a run cut off at its duration (the
frames done are delivered with a message), and a model that did not load (a message, not a bare error).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_app import BEDROOM, CUPS, client_for, running_app

from mpgsam2.export import load_coco_rle_json
from mpgsam2.space import RunFolders

pytestmark = pytest.mark.slow

ZEROGPU = Path(__file__).resolve().parent / "zerogpu"


@contextlib.contextmanager
def emulated_space(folder: Path, *args: str) -> Iterator[tuple[str, object, Path]]:
    """``python app.py ARGS`` under the emulation: its URL, the device API and the session folders' root."""
    import sys

    sys.path.insert(0, str(ZEROGPU))
    try:
        from device_api import DeviceAPI, direct_io_folder
    finally:
        sys.path.remove(str(ZEROGPU))
    # On a machine with one GPU, benchmarks/gpu_check.sh sets ZEROGPU_GPU_UUID: the workers get the real GPU.
    real_gpu = os.environ.get("ZEROGPU_GPU_UUID")
    api = DeviceAPI(gpu_uuid=real_gpu) if real_gpu else DeviceAPI()
    server = api.serve(0)
    env = {
        "ZEROGPU_DEVICE_API": f"http://127.0.0.1:{server.server_address[1]}",
        "ZEROGPU_HOME": str(direct_io_folder(folder)),
        **({"ZEROGPU_REAL_GPU": "1", "CUDA_VISIBLE_DEVICES": ""} if real_gpu else {}),
    }
    try:
        with running_app(folder / "app", *args, env=env, launcher=ZEROGPU / "launch.py") as url:
            yield url, api, folder / "app" / "sessions"
    finally:
        server.shutdown()


@pytest.fixture(scope="module")
def zerogpu_app(tmp_path_factory) -> Iterator[tuple[str, object, Path]]:
    """The app with the test model under the emulation."""
    with emulated_space(tmp_path_factory.mktemp("zerogpu"), "--model", "test") as app:
        yield app


def _segment(client, video=BEDROOM, expressions="the girl", frames=3, **kwargs):
    from gradio_client import handle_file

    return client.predict(
        video=handle_file(str(video)),
        expressions=expressions,
        max_frames=frames,
        api_name="/segment",
        **kwargs,
    )


def test_start_up_and_a_run_in_a_forked_worker(zerogpu_app, tmp_path):
    url, api, sessions = zerogpu_app
    client = client_for(url, tmp_path)
    overlay, bundle, palette, rle, timeline, summary = _segment(client, CUPS, "the yellow ball\nthe cup", 3)
    assert (
        summary["untrained"] is True and summary["video"]["frames"] == 3 and not summary["video"]["stopped"]
    )
    assert [m.shape for m in load_coco_rle_json(rle)] == [(3, 360, 640)] * 2
    assert Path(overlay).stat().st_size > 0 and Path(bundle).is_file()
    # The call ran in a forked worker that the device API allowed, and gave the GPU back normally.
    (allow,) = api.events("allow")
    assert int(allow["pid"]) != os.getpid()
    assert [e.get("fail") for e in api.events("release")] == ["false"]
    # The worker saved the run's session beside its frames, so that a correction with clicks (its own GPU
    # call, in another worker) re-tracks only the frames the clicks change.
    (run_folder,) = {p.parent for p in sessions.rglob("session.safetensors")}
    assert (run_folder / "results.npz").is_file()
    client.close()


def test_a_second_run_reuses_the_worker(zerogpu_app, tmp_path):
    url, api, _ = zerogpu_app
    client = client_for(url, tmp_path)
    allowed = len(api.events("allow"))
    summary = _segment(client, frames=2)[5]
    assert summary["video"]["frames"] == 2
    assert len(api.events("allow")) == allowed  # scheduled as "idle": the same worker, no new process
    client.close()


def test_stop_delivers_the_frames_done(zerogpu_app, tmp_path):
    url, api, sessions = zerogpu_app
    client = client_for(url, tmp_path)
    job = client.submit(
        video=__import__("gradio_client").handle_file(str(BEDROOM)),
        expressions="the girl",
        max_frames=30,
        api_name="/segment",
    )
    folders = RunFolders(sessions)
    session = folders.folder(client.session_hash)
    deadline = time.monotonic() + 240
    while not list(session.glob("run-*/priors/frame_00001.jpg")) and time.monotonic() < deadline:
        time.sleep(0.2)
    folders.stop_flag(client.session_hash).touch()  # what the Stop button does
    summary = job.result(timeout=240)[5]
    done = summary["video"]["frames"]
    assert 2 <= done < 30 and summary["video"]["stopped"] and summary["video"]["frames_requested"] == 30
    client.close()


def test_a_run_cut_off_at_its_duration_delivers_the_frames_done(zerogpu_app, tmp_path):
    url, api, _ = zerogpu_app
    client = client_for(url, tmp_path)
    api.kill_after_s = 6.0  # the worker is killed 6 s into the call, as ZeroGPU does at the duration
    try:
        summary = _segment(client, frames=30)[5]
    finally:
        api.kill_after_s = None
    done = summary["video"]["frames"]
    assert 1 <= done < 30 and summary["video"]["stopped"]
    (message,) = summary["messages"]
    assert message.startswith(f"The run was cut off after {done} of 30 frames: it used all the GPU time")
    assert "Lower the maximum number of frames or the frame rate" in message
    assert api.events("kill")
    # The next run gets a fresh worker and works.
    assert _segment(client, frames=1)[5]["video"]["frames"] == 1
    client.close()


def test_a_model_that_did_not_load_says_why(zerogpu_app, tmp_path):
    from gradio_client.exceptions import AppError

    url, _, _ = zerogpu_app
    client = client_for(url, tmp_path)
    with pytest.raises(AppError, match="cannot be downloaded"):
        _segment(client, model="ytvos", frames=1)
    client.close()


def test_without_weights_the_space_runs_the_toy_model_in_its_workers(tmp_path, monkeypatch):
    """A Space without the released weights (none in the cache, no download): the toy model, loaded at
    start-up beside the others' failures, answers from a forked worker."""
    from mpgsam2.export import load_palette_zip

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # the app's environment starts from this one
    monkeypatch.setenv("MPGSAM2_WEIGHTS", str(tmp_path / "none"))
    with emulated_space(tmp_path / "space") as (url, api, _):
        client = client_for(url, tmp_path)
        toy_clip = Path(__file__).resolve().parents[1] / "examples" / "toy_shapes.mp4"
        result = _segment(client, toy_clip, "the green circle", 3)
        assert result[5]["model"] == "toy" and not result[5]["untrained"]
        assert (load_palette_zip(result[2]) == 1).any()
        (allow,) = api.events("allow")
        assert int(allow["pid"]) != os.getpid()
        client.close()
