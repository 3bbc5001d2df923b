"""Bad input, faults and concurrency: every row of the reliability matrix, on each surface it reaches.

Surfaces: the Python API (``segment_video`` / ``load_clip`` / ``VideoPredictor``: a typed exception), the
command line (``python -m mpgsam2 -q segment``: exit status 2, one line on stderr, no traceback) and the
app's logic (``mpgsam2.space``: the form checks' field messages, and the runner's results or ``RunError``,
which the app shows as its one ``gr.Error``).

Real files throughout: the short example clips and files made here with the bundled ffmpeg. The fakes are a
predictor that raises ``torch.cuda.OutOfMemoryError`` part-way and a device loop that ends the way ZeroGPU
ends a worker (the handling is under test, not the model or the platform).
"""

from __future__ import annotations

import json
import os
import pickle
import re
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mpgsam2 import CheckpointError, VideoPredictor, save_pretrained
from mpgsam2.checkpoints import official_state_dict
from mpgsam2.export import load_coco_rle_json
from mpgsam2.expressions import MAX_EXPRESSIONS, clean_expressions
from mpgsam2.pipeline import (
    ClipTooLongError,
    RunInterrupted,
    RunOutOfMemory,
    SegmentOptions,
    iter_segment_video,
    load_clip,
    segment_video,
)
from mpgsam2.video_io import VideoReadError, ffmpeg_exe

ROOT = Path(__file__).resolve().parents[1]
CUPS = ROOT / "examples" / "short" / "cups_2s_360p.mp4"  # 640x360, 60 frames, audio
BEDROOM = ROOT / "examples" / "short" / "bedroom_1s_270p.mp4"  # 480x270, 30 frames, no audio

HTML = "<b>ball</b> & <script>alert(1)</script>"
RTL = "الكرة الصفراء"
EMOJI = "🎾 ball"


def ffmpeg(*args: str) -> None:
    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", *args], check=True, capture_output=True, timeout=120)


# ---------------------------------------------------------------------------------------------------------------
# Inputs made once


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    """Every problem file of the matrix, made with the bundled ffmpeg (small and quick to make)."""
    folder = tmp_path_factory.mktemp("media")
    files = {}
    files["text"] = folder / "notes.txt"
    files["text"].write_text("this is a shopping list, not a video\n" * 20)
    files["truncated"] = folder / "cut.mp4"
    files["truncated"].write_bytes(CUPS.read_bytes()[: CUPS.stat().st_size // 2])
    files["empty"] = folder / "empty.mp4"
    files["empty"].write_bytes(b"")
    files["audio_only"] = folder / "tone.m4a"
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=1", "-c:a", "aac", str(files["audio_only"]))
    files["image"] = folder / "photo.png"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=160x120", "-frames:v", "1", str(files["image"]))
    files["8k"] = folder / "8k.mp4"
    ffmpeg(
        "-f", "lavfi", "-i", "color=c=teal:s=7680x4320:r=30", "-frames:v", "2",
        "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(files["8k"]),
    )  # fmt: skip
    files["long"] = folder / "ten_minutes.mp4"
    ffmpeg(
        "-f", "lavfi", "-i", "color=c=gray:s=64x48:r=1:d=610",
        "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(files["long"]),
    )  # fmt: skip
    files["vfr"] = folder / "vfr.mkv"
    ffmpeg(
        "-f", "lavfi", "-i", "testsrc=size=96x64:rate=10", "-frames:v", "8",
        "-vf", "settb=1/1000,setpts='if(lt(N,5),N*0.1,0.5+(N-5)*0.25)/TB'",
        "-fps_mode", "vfr", "-enc_time_base:v", "1/1000", "-c:v", "libx264", "-pix_fmt", "yuv420p",
        str(files["vfr"]),
    )  # fmt: skip
    files["rotated"] = folder / "portrait.mp4"
    ffmpeg("-display_rotation", "90", "-i", str(BEDROOM), "-c", "copy", str(files["rotated"]))
    files["gray"] = folder / "gray.mkv"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=96x64:rate=10", "-frames:v", "3", "-c:v", "ffv1",
           "-pix_fmt", "gray", str(files["gray"]))  # fmt: skip
    files["alpha"] = folder / "alpha.mov"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=96x64:rate=10", "-frames:v", "3", "-c:v", "png",
           "-pix_fmt", "rgba", str(files["alpha"]))  # fmt: skip
    return files


@pytest.fixture(scope="module")
def untrained_predictor() -> VideoPredictor:
    return VideoPredictor.from_pretrained("test", device="cpu")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """Broken and foreign checkpoints: missing, truncated, a plain SAM 2.1 file, integer weights, a pickle."""
    from mpgsam2 import build_model

    folder = tmp_path_factory.mktemp("checkpoints")
    model = build_model("test", seed=0)
    data = (save_pretrained(model, folder / "good") / "model.safetensors").read_bytes()
    files = {"missing": folder / "nowhere" / "model.safetensors"}
    files["truncated"] = folder / "truncated.safetensors"
    files["truncated"].write_bytes(data[: len(data) // 3])
    official = official_state_dict(model)
    sam_only = {k[len("visual_model.") :]: v for k, v in official.items() if k.startswith("visual_model.")}
    files["sam2"] = folder / "sam2.1_hiera_tiny.pt"
    torch.save({"model": sam_only}, files["sam2"])
    integer = dict(official)
    integer["meo_linear.weight"] = integer["meo_linear.weight"].to(torch.int32)
    (folder / "int").mkdir()
    files["integer"] = folder / "int" / "weights.pt"
    torch.save({"model": integer}, files["integer"])
    (folder / "int" / "config.json").write_text(json.dumps({"mpgsam2": model.config.to_dict()}))
    files["pickle"] = folder / "evil.pt"
    files["pickle"].write_bytes(pickle.dumps(_Payload(folder / "pwned")))
    files["pwned"] = folder / "pwned"
    return files


class _Payload:
    """Unpickling this would create a file: a weights-only load must refuse it instead."""

    def __init__(self, target: Path):
        self.target = str(target)

    def __reduce__(self):
        return (Path.touch, (Path(self.target),))


APP_MODELS = ["test", "ytvos", "mevis", "tiny"]


def plan(video, expressions, model="test", start=0, end=0, fps=0, frames=3):
    """The app's checked job for the form's values (see ``mpgsam2.space.plan_job``)."""
    from mpgsam2 import space

    return space.plan_job(str(video) if video else None, expressions, model, start, end, fps, frames, 0.5,
                          models=APP_MODELS)  # fmt: skip


def field_messages(video, expressions, model="test", start=0, end=0, fps=0, frames=3) -> dict:
    """The messages the app's form shows, keyed by field (only the fields it refuses)."""
    from mpgsam2 import space

    try:
        plan(video, expressions, model, start, end, fps, frames)
    except space.InputError as error:
        return error.problems
    return {}


def make_runner(folder: Path, predictor, loop=None):
    """The app's runner with ``predictor`` as the "test" model and the device loop run in this process."""
    from mpgsam2 import space

    store = space.ModelStore(lambda source, device=None: predictor)
    store.get("test")

    def local_loop(job, frames_file, expressions, stop_flag):
        return space.device_loop(
            store.get(job.model), frames_file, expressions, job.options.clip_length, stop_flag
        )

    return space.Runner(
        store, space.RunFolders(folder / "sessions"), space.TimingLog(), "cpu", loop or local_loop
    )


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "mpgsam2", "-q", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def assert_one_clear_line(done: subprocess.CompletedProcess, message: str) -> None:
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert re.search(message, lines[0]), lines[0]


def _leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()]


# ---------------------------------------------------------------------------------------------------------------
# Bad files: Python API, command line, app


BAD_FILES = [
    ("text", "as a video.*Upload an mp4"),
    ("truncated", "truncated"),
    ("empty", "empty"),
    ("audio_only", "no video stream"),
]


@pytest.mark.parametrize(("name", "message"), BAD_FILES)
def test_bad_file_python_api(media, untrained_predictor, tmp_path, name, message):
    out = tmp_path / "out"
    with pytest.raises(VideoReadError, match=message):
        segment_video(untrained_predictor, media[name], ["the ball"], out, SegmentOptions(max_frames=2))
    assert not out.exists() or not _leftovers(out)  # nothing half-written


@pytest.mark.parametrize(("name", "message"), BAD_FILES)
def test_bad_file_cli(media, tmp_path, name, message):
    out = tmp_path / "out"
    done = run_cli("segment", str(media[name]), "-e", "the ball", "--out", str(out), "--model", "test")
    assert_one_clear_line(done, message)
    assert not out.exists() or not _leftovers(out)


@pytest.mark.parametrize(("name", "message"), BAD_FILES)
def test_bad_file_app(media, name, message):
    problems = field_messages(media[name], "the ball")
    assert list(problems) == ["video"] and re.search(message, problems["video"])
    assert media[name].name not in problems["video"]  # upload names are never echoed


def test_long_clip_is_refused_with_a_limit_and_advice(media, tmp_path):
    # Python API: a configurable limit, checked from the metadata before decoding.
    with pytest.raises(ClipTooLongError, match="at most 300 s are processed") as caught:
        load_clip(media["long"], SegmentOptions(max_duration_s=300))
    assert "Trim it" in str(caught.value) and "frame rate" in str(caught.value)
    clip = load_clip(media["long"], SegmentOptions(max_duration_s=300, start_s=100, end_s=110))
    assert clip.num_frames == 10
    # Command line: --max-duration, 300 s by default.
    done = run_cli("segment", str(media["long"]), "-e", "x", "--out", str(tmp_path / "o"), "--model", "test")
    assert_one_clear_line(done, "The video is 610 s long; at most 300 s are processed in one run")
    # App: MPGSAM2_MAX_CLIP_SECONDS (120 s by default), reported on the trim end.
    problems = field_messages(media["long"], "the ball")
    assert (
        list(problems) == ["end_s"] and "at most 120 s" in problems["end_s"] and "Trim" in problems["end_s"]
    )
    assert field_messages(media["long"], "the ball", start=60, end=90) == {}


def test_8k_is_downscaled_while_decoding_and_said(media, untrained_predictor, tmp_path):
    from mpgsam2 import space

    outputs = segment_video(untrained_predictor, media["8k"], ["the wall"], tmp_path)
    assert (outputs.width, outputs.height) == (1920, 1080)
    assert (outputs.source_width, outputs.source_height) == (7680, 4320)
    assert "Frames were downscaled from 7680x4320 to 1920x1080 while decoding." in outputs.warnings
    assert "downscaled from 7680x4320" in space.summary_text(outputs)
    job = plan(str(media["8k"]), "the wall", "test", 0, 0, 0, 150)
    assert (job.width, job.height) == (1920, 1080)  # so the memory check counts the decoded size


@pytest.mark.parametrize(
    ("name", "frames", "size"),
    [("image", 1, (160, 120)), ("vfr", 8, (96, 64)), ("rotated", 3, (270, 480)), ("gray", 3, (96, 64)),
     ("alpha", 3, (96, 64))],
)  # fmt: skip
def test_unusual_but_valid_videos_run(media, untrained_predictor, tmp_path, name, frames, size):
    outputs = segment_video(
        untrained_predictor, media[name], ["the thing"], tmp_path, SegmentOptions(max_frames=3)
    )
    assert outputs.num_frames == min(frames, 3) and (outputs.width, outputs.height) == size
    assert outputs.overlay_video.stat().st_size > 0 and outputs.bundle_zip.is_file()
    job = plan(str(media[name]), "the thing", "test", 0, 0, 0, 3)
    assert (job.width, job.height) == size and job.frames == min(frames, 3)


def test_vfr_timestamps_are_kept(media, untrained_predictor, tmp_path):
    outputs = segment_video(untrained_predictor, media["vfr"], ["the thing"], tmp_path)
    data = json.loads(outputs.rle_json.read_text())
    stamps = sorted({a["timestamp_s"] for a in data["annotations"]})
    np.testing.assert_allclose(stamps, [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0], atol=2e-3)


# ---------------------------------------------------------------------------------------------------------------
# Expressions


@pytest.mark.parametrize(
    ("expressions", "message"),
    [([], "at least one expression"), (["", "  ", "\t"], "at least one expression")],
)
def test_no_expression_python_api(untrained_predictor, tmp_path, expressions, message):
    with pytest.raises(ValueError, match=message):
        segment_video(untrained_predictor, BEDROOM, expressions, tmp_path / "o", SegmentOptions(max_frames=1))
    assert not (tmp_path / "o").exists()


def test_no_expression_cli_and_app(tmp_path):
    done = run_cli("segment", str(BEDROOM), "-e", "  ", "--out", str(tmp_path / "o"), "--model", "test")
    assert_one_clear_line(done, "Type at least one expression")
    assert field_messages(BEDROOM, "\n  \n") == {
        "expressions": "Type at least one expression, e.g. 'the dog on the left'."
    }


def test_blank_lines_are_dropped_everywhere():
    from mpgsam2 import space

    assert clean_expressions(["", "the dog", "  ", " the cat "]) == ["the dog", "the cat"]
    assert space.parse_expressions("\n\nthe dog\n \n\tthe cat\n") == ["the dog", "the cat"]
    assert field_messages(BEDROOM, "\n\nthe dog\n\n") == {}


def test_expression_limits():
    assert len(clean_expressions([f"object {i}" for i in range(MAX_EXPRESSIONS)])) == 50
    with pytest.raises(ValueError, match="51 expressions given; at most 50"):
        clean_expressions([f"object {i}" for i in range(51)])
    problems = field_messages(BEDROOM, "\n".join(f"object {i}" for i in range(50)))
    assert problems == {"expressions": "50 expressions given; at most 10 run at once. Remove some lines."}


def test_long_expression_is_cut_with_a_warning(untrained_predictor, tmp_path):
    text = ("the small yellow ball that rolls under the cup " * 110)[:5000]
    outputs = segment_video(untrained_predictor, BEDROOM, [text], tmp_path, SegmentOptions(max_frames=1))
    assert any("only its beginning was used" in w for w in outputs.warnings)
    assert untrained_predictor.tokenizer.encode(text).truncated
    assert len(untrained_predictor.tokenizer.encode(text).input_ids) <= 1022
    # The app refuses it up front (200 characters at most), saying what to change.
    problems = field_messages(BEDROOM, text)
    assert problems == {"expressions": "Expression 1 is 5000 characters long; shorten it to at most 200."}


def test_expression_of_unknown_tokens_only_is_flagged(untrained_predictor, tmp_path):
    from mpgsam2 import space

    assert untrained_predictor.tokenizer.encode("🎉🎉 ☃").unknown_only
    outputs = segment_video(untrained_predictor, BEDROOM, ["🎉🎉 ☃"], tmp_path, SegmentOptions(max_frames=1))
    assert any("no word the model knows" in w for w in outputs.warnings)
    assert "no word the model knows" in space.summary_text(outputs)


def test_html_rtl_and_emoji_are_text(untrained_predictor, tmp_path):
    from mpgsam2 import space

    texts = [HTML, RTL, EMOJI]
    outputs = segment_video(untrained_predictor, BEDROOM, texts, tmp_path, SegmentOptions(max_frames=2))
    assert outputs.expressions == texts
    summary = json.loads(outputs.summary_json.read_text(encoding="utf-8"))
    assert [e["expression"] for e in summary["expressions"]] == texts
    rle = outputs.rle_json.read_text(encoding="utf-8")
    assert RTL in rle and EMOJI in rle and "<b>ball</b>" in rle
    text = space.summary_text(outputs)
    for item in texts:
        assert item in text  # verbatim in the plain-text summary (a Textbox never renders markup)
    assert "&lt;" not in text
    job = plan(str(BEDROOM), "\n".join(texts), "test", 0, 0, 0, 2)
    data = space.result_json(outputs, job, 1.0, "the CPU", True)
    assert [e["expression"] for e in data["expressions"]] == texts


# ---------------------------------------------------------------------------------------------------------------
# Checkpoints


CHECKPOINT_ROWS = [
    ("missing", "neither an existing file"),
    ("truncated", "truncated"),
    ("sam2", "not an MPG-SAM 2 checkpoint"),
    ("integer", "non-floating-point"),
    ("pickle", "only safetensors and weights-only torch files are read"),
]


@pytest.mark.parametrize(("name", "message"), CHECKPOINT_ROWS)
def test_bad_checkpoint_python_api(checkpoints, name, message):
    with pytest.raises(CheckpointError, match=message):
        VideoPredictor.from_pretrained(checkpoints[name], device="cpu")
    assert not checkpoints["pwned"].exists()  # never a pickle load


@pytest.mark.parametrize(("name", "message"), CHECKPOINT_ROWS)
def test_bad_checkpoint_cli(checkpoints, tmp_path, name, message):
    done = run_cli(
        "segment", str(BEDROOM), "-e", "x", "--out", str(tmp_path / "o"), "--model", str(checkpoints[name])
    )
    assert_one_clear_line(done, message)
    assert not checkpoints["pwned"].exists()


def test_bad_checkpoint_app(checkpoints, tmp_path):
    from mpgsam2 import space

    store = space.ModelStore(VideoPredictor.from_pretrained)
    for name, message in CHECKPOINT_ROWS:
        error = store.try_load(str(checkpoints[name]))
        assert error is not None and message in error
        assert message in space.model_notice(name, False, error)  # the banner says what is wrong
    # A run asks for the model again: the same message, as the run's error.
    runner = space.Runner(
        space.ModelStore(VideoPredictor.from_pretrained), space.RunFolders(tmp_path), space.TimingLog(), "cpu",
        loop=None,
    )  # fmt: skip
    with pytest.raises(space.RunError, match="truncated"):
        runner.predictor(str(checkpoints["truncated"]))


# ---------------------------------------------------------------------------------------------------------------
# Out of memory, failures part-way, a run cut off by the GPU duration


class FailingPredictor:
    """The test predictor, until frame ``fail_at``: then ``error`` is raised (as a CUDA OOM would be)."""

    def __init__(self, predictor: VideoPredictor, fail_at: int, error: BaseException):
        self.inner, self.fail_at, self.error = predictor, fail_at, error
        self.tokenizer, self.encode, self.untrained = (
            predictor.tokenizer,
            predictor.encode,
            predictor.untrained,
        )

    def _failing(self, results):
        for result in results:
            if result.frame_index == self.fail_at:
                raise self.error
            yield result

    def iter_segment(self, frames, texts, clip_length=None):
        return self._failing(self.inner.iter_segment(frames, texts, clip_length=clip_length))

    # The app's loop keeps the session for corrections: the same failure there.
    def init_session(self, *args, **kwargs):
        return self.inner.init_session(*args, **kwargs)

    def propagate(self, session, logits=False):
        return self._failing(self.inner.propagate(session, logits))


def _oom() -> BaseException:
    return torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def test_out_of_memory_python_api(untrained_predictor, tmp_path, monkeypatch):
    freed = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: freed.append(True))
    fake = FailingPredictor(untrained_predictor, 2, _oom())
    with pytest.raises(RunOutOfMemory) as caught:
        segment_video(fake, BEDROOM, ["the girl"], tmp_path, SegmentOptions(max_frames=4))
    message = str(caught.value)
    assert freed and "Out of device memory after 2 of 4 frames" in message
    assert "Lower the maximum number of frames, the frame rate, the resolution" in message
    outputs = caught.value.outputs  # the frames done are complete and downloadable
    assert outputs is not None and outputs.stopped and outputs.num_frames == 2
    assert load_coco_rle_json(outputs.rle_json)[0].shape[0] == 2 and zipfile.is_zipfile(outputs.bundle_zip)
    # Before any frame: nothing to keep, the same advice.
    with pytest.raises(RunOutOfMemory, match="after 0 of 4 frames") as caught:
        segment_video(FailingPredictor(untrained_predictor, 0, _oom()), BEDROOM, ["x"], tmp_path / "b",
                      SegmentOptions(max_frames=4))  # fmt: skip
    assert caught.value.outputs is None
    # Picklable (ZeroGPU hands exceptions across processes), outputs included.
    again = pickle.loads(pickle.dumps(RunOutOfMemory("m", outputs)))
    assert again.outputs.num_frames == 2


def test_out_of_memory_cli(untrained_predictor, tmp_path, monkeypatch, capsys):
    from mpgsam2 import __main__ as cli

    monkeypatch.setattr(
        VideoPredictor, "from_pretrained", classmethod(lambda cls, *a, **k: FailingPredictor(untrained_predictor, 1,
                                                                                              _oom()))
    )  # fmt: skip
    code = cli.main(["-q", "segment", str(BEDROOM), "-e", "the girl", "--out", str(tmp_path), "--max-frames",
                     "3", "--model", "test"])  # fmt: skip
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("WARNING")]
    assert code == 2 and len(lines) == 1 and "Out of device memory after 1 of 3 frames" in lines[0]
    assert (tmp_path / "mpgsam2_results.zip").is_file()  # the frame done is kept


def test_out_of_memory_app_keeps_frames_or_says_what_to_reduce(untrained_predictor, tmp_path):
    from mpgsam2 import space

    job = plan(BEDROOM, "the girl", frames=4)
    runner = make_runner(tmp_path, FailingPredictor(untrained_predictor, 2, _oom()))
    events = list(runner.run(job, "session-a"))
    finished = events[-1]
    assert isinstance(finished, space.Finished) and finished.outputs.num_frames == 2
    text = space.summary_text(finished.outputs)
    assert "Stopped early: the results cover the first 2 of 4 frames." in text
    assert "The GPU ran out of memory after 2 of 4 frames; the results cover those frames" in text
    runner = make_runner(tmp_path, FailingPredictor(untrained_predictor, 0, _oom()))
    with pytest.raises(space.RunError, match="ran out of memory after 0 of 4 frames .* Lower the maximum"):
        list(runner.run(job, "session-a"))


def test_run_cut_off_by_gpu_duration_keeps_the_frames_done(untrained_predictor, tmp_path):
    """On ZeroGPU the worker is killed past its duration: the stream ends with the error ZeroGPU raises
    (``gr.Error("GPU task aborted")``), and the runner writes complete outputs of the frames it received."""
    import gradio as gr

    from mpgsam2 import space

    def cut_off(job, frames_file, expressions, stop_flag):
        frames = space.device_loop(untrained_predictor, frames_file, expressions, None, stop_flag)
        for done, frame in enumerate(frames, 1):
            yield frame
            if done == 3:
                raise gr.Error("GPU task aborted", title="ZeroGPU worker error")

    runner = make_runner(tmp_path, untrained_predictor, loop=cut_off)
    runner.gpu_seconds = lambda job: 30
    finished = list(runner.run(plan(CUPS, "the cup\nthe ball", frames=6), "session-b"))[-1]
    outputs = finished.outputs
    assert outputs.stopped and outputs.num_frames == 3 and outputs.frames_requested == 6
    assert any("cut off after 3 of 6 frames: it used all the GPU time reserved for it (30 s)" in w
               for w in outputs.warnings)  # fmt: skip
    assert [m.shape[0] for m in load_coco_rle_json(outputs.rle_json)] == [3, 3]
    assert len(outputs.prior_views) == 3 and all(p.is_file() for p in outputs.prior_views)
    assert outputs.overlay_video.stat().st_size > 0
    assert "cut off" in space.summary_text(outputs)


def test_a_failure_before_any_frame_is_a_clear_error(untrained_predictor, tmp_path):
    from mpgsam2 import space

    def broken(job, frames_file, expressions, stop_flag):
        raise RuntimeError("boom")

    runner = make_runner(tmp_path, untrained_predictor, loop=broken)
    with pytest.raises(space.RunError, match=r"The run stopped after 0 of 2 frames \(RuntimeError: boom\)"):
        list(runner.run(plan(BEDROOM, "the girl", frames=2), "session-c"))


def test_a_failure_part_way_python_api(untrained_predictor, tmp_path):
    fake = FailingPredictor(untrained_predictor, 1, KeyError("bad"))
    with pytest.raises(RunInterrupted, match="failed after 1 of 2 frames") as caught:
        segment_video(fake, BEDROOM, ["x"], tmp_path, SegmentOptions(max_frames=2))
    assert caught.value.outputs.num_frames == 1 and not isinstance(caught.value, RunOutOfMemory)


# ---------------------------------------------------------------------------------------------------------------
# Model choice, sessions and concurrency


def test_mevis_runs_in_24_frame_clips():
    assert plan(BEDROOM, "the girl", "mevis").options.clip_length == 24
    assert plan(BEDROOM, "the girl", "ytvos").options.clip_length is None


def test_concurrent_runs_never_mix_outputs(untrained_predictor, tmp_path):
    runner = make_runner(tmp_path, untrained_predictor)
    jobs = {"left": plan(BEDROOM, "the girl", frames=3), "right": plan(CUPS, "the cup\nthe ball", frames=4)}
    results, errors = {}, []

    def work(name):
        try:
            results[name] = list(runner.run(jobs[name], f"session-{name}"))[-1].outputs
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(name,)) for name in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors
    left, right = results["left"], results["right"]
    assert left.folder != right.folder and left.folder.parent != right.folder.parent
    assert (left.expressions, left.num_frames, left.width) == (["the girl"], 3, 480)
    assert (right.expressions, right.num_frames, right.width) == (["the cup", "the ball"], 4, 640)
    assert [m.shape for m in load_coco_rle_json(left.rle_json)] == [(3, 270, 480)]
    assert [m.shape for m in load_coco_rle_json(right.rle_json)] == [(4, 360, 640)] * 2
    # Ending the sessions removes their folders.
    for name in jobs:
        runner.folders.remove(f"session-{name}")
    assert runner.folders.sessions() == []


def test_stop_keeps_the_frames_done(untrained_predictor, tmp_path):
    events = list(
        iter_segment_video(
            untrained_predictor,
            CUPS,
            ["the cup"],
            tmp_path,
            SegmentOptions(max_frames=5),
            should_stop=lambda: True,
        )
    )
    outputs = events[-1]
    assert outputs.stopped and outputs.num_frames == 1 and outputs.bundle_zip.is_file()


# ---------------------------------------------------------------------------------------------------------------
# Fuzz: expression parsing and the tokenizer with arbitrary text


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.text(max_size=300), max_size=60) | st.text(max_size=2000))
def test_fuzz_expression_parsing(value):
    from mpgsam2 import space

    try:
        cleaned = clean_expressions(value)
    except ValueError as error:
        assert "expression" in str(error)
    else:
        assert cleaned and all(c == c.strip() and c for c in cleaned) and len(cleaned) <= MAX_EXPRESSIONS
    try:
        parsed = space.parse_expressions(value)
    except space.InputError as error:
        assert list(error.problems) == ["expressions"]
    else:
        assert 1 <= len(parsed) <= space.MAX_EXPRESSIONS
        assert all(p and len(p) <= space.MAX_EXPRESSION_CHARS and p.isprintable() for p in parsed)


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=3000))
def test_fuzz_tokenizer_encode(untrained_predictor, text):
    tokenizer = untrained_predictor.tokenizer
    encoded = tokenizer.encode(text)
    ids = encoded.input_ids.tolist()
    assert 2 <= len(ids) <= tokenizer.max_tokens
    assert encoded.padding.shape == encoded.input_ids.shape
    assert encoded.known_tokens >= 0 and encoded.unknown_only == (encoded.known_tokens == 0)
