"""Tests of mpgsam2.space (the Space's logic without Gradio) and of the streaming pipeline it drives.

Everything runs on the real example clips; the pipeline tests use the real untrained "test" preset.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from mpgsam2 import space
from mpgsam2.export import load_coco_rle_json, load_palette_zip
from mpgsam2.pipeline import FrameDone, SegmentOptions, SegmentOutputs, iter_segment_video, segment_video
from mpgsam2.pipeline.outputs import absent_spans
from mpgsam2.video_io import ffprobe_summary, read_video

ROOT = Path(__file__).resolve().parents[1]
CUPS = ROOT / "examples" / "short" / "cups_2s_360p.mp4"  # 640x360, 60 frames at 30000/1001 fps, aac audio
BEDROOM = ROOT / "examples" / "short" / "bedroom_1s_270p.mp4"  # 480x270, 30 frames at 30 fps, no audio
NTSC = 30000 / 1001


@pytest.fixture(scope="module")
def untrained_predictor():
    from mpgsam2 import VideoPredictor

    return VideoPredictor.from_pretrained("test")


# ---------------------------------------------------------------------------------------------------------------
# Expressions


def test_expressions_are_one_per_line_stripped_and_blank_lines_dropped():
    text = "  the yellow ball \n\n\tthe cup   on the right\r\n   \n"
    assert space.parse_expressions(text) == ["the yellow ball", "the cup on the right"]
    assert space.parse_expressions(["the dog", " ", "the woman"]) == ["the dog", "the woman"]


def test_markup_in_expressions_is_kept_verbatim():
    assert space.parse_expressions("<b>the $5 bill</b>") == ["<b>the $5 bill</b>"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (None, "at least one expression"),
        (" \n \n", "at least one expression"),
        ("\n".join(f"object {i}" for i in range(space.MAX_EXPRESSIONS + 1)), "at most 10 run at once"),
        ("ok\n" + "x" * (space.MAX_EXPRESSION_CHARS + 1), "Expression 2 is 201 characters long"),
        ("the dog\nthe cat\nThe Dog", "Expression 3 repeats expression 1"),
    ],
)
def test_bad_expressions_name_the_field_and_the_fix(text, message):
    with pytest.raises(space.InputError, match=message) as caught:
        space.parse_expressions(text)
    assert list(caught.value.problems) == ["expressions"]


# ---------------------------------------------------------------------------------------------------------------
# Frame options


def test_zero_and_empty_mean_not_set():
    options = space.segment_options(0, 0, 0, 0, 0.3)
    assert options == SegmentOptions(
        None,
        None,
        None,
        space.MAX_FRAMES,
        0.3,
        max_side=space.limits.MAX_SIDE,
        max_duration_s=space.limits.MAX_CLIP_SECONDS,
    )
    options = space.segment_options(None, "", None, 12, None)
    assert (options.start_s, options.end_s, options.max_frames, options.opacity) == (None, None, 12, 0.5)
    assert space.segment_options(1.5, 3, 10, 50.0, 1).max_frames == 50


def test_every_bad_option_is_reported_at_once():
    with pytest.raises(space.InputError) as caught:
        space.segment_options(-1, -2, -5, space.MAX_FRAMES + 1, 1.5)
    problems = caught.value.problems
    assert set(problems) == {"start_s", "end_s", "fps", "max_frames", "opacity"}
    assert "0 s or later" in problems["start_s"]
    assert f"At most {space.MAX_FRAMES} frames" in problems["max_frames"]


@pytest.mark.parametrize(
    ("kwargs", "field", "message"),
    [
        ({"start_s": 3, "end_s": 2}, "end_s", "must be after the trim start"),
        ({"max_frames": 2.5}, "max_frames", "whole number"),
        ({"fps": "fast"}, "fps", "must be a number"),
        ({"start_s": float("nan")}, "start_s", "finite"),
    ],
)
def test_single_bad_option(kwargs, field, message):
    with pytest.raises(space.InputError, match=message) as caught:
        space.segment_options(**kwargs)
    assert list(caught.value.problems) == [field]


@pytest.mark.parametrize(
    ("path", "options"),
    [
        (CUPS, SegmentOptions()),
        (CUPS, SegmentOptions(max_frames=12)),
        (CUPS, SegmentOptions(start_s=0.5, end_s=1.5)),
        (CUPS, SegmentOptions(fps=10)),
        (CUPS, SegmentOptions(start_s=0.25, fps=7, max_frames=9)),
        (CUPS, SegmentOptions(fps=60)),
        (BEDROOM, SegmentOptions(end_s=0.5, fps=12)),
        (BEDROOM, SegmentOptions(start_s=0.9)),
    ],
)
def test_frame_estimate_matches_the_decoder(path, options):
    info = space.probe(path)
    clip = read_video(
        path, start_s=options.start_s, end_s=options.end_s, fps=options.fps, max_frames=options.max_frames
    )
    assert space.estimate_frames(info, options) == clip.num_frames


def test_a_trim_window_after_the_end_is_refused():
    with pytest.raises(space.InputError, match="the video is 2.00 s long") as caught:
        space.estimate_frames(space.probe(CUPS), SegmentOptions(start_s=2.5))
    assert list(caught.value.problems) == ["start_s"]


# ---------------------------------------------------------------------------------------------------------------
# Planning a job


def test_plan_describes_the_run():
    job = space.plan_job(str(CUPS), "the yellow ball\nthe cup on the right", "test", 0, 1, 0, 150, 0.5)
    assert job.expressions == ("the yellow ball", "the cup on the right")
    assert (job.frames, job.width, job.height, job.has_audio) == (30, 640, 360, True)
    assert job.source_fps == pytest.approx(NTSC)
    assert job.options.end_s == 1 and job.options.opacity == 0.5
    assert job.work == 60 and job.preset == "test"
    assert job.memory_bytes == 30 * 640 * 360 * 5


def test_plan_collects_problems_of_every_field():
    with pytest.raises(space.InputError) as caught:
        space.plan_job(None, "", "nonexistent", -1, 0, 0, 10, 0.5, models=["ytvos", "test"])
    assert set(caught.value.problems) == {"video", "expressions", "model", "start_s"}
    assert "Choose one of the models offered: ytvos, test." in caught.value.problems["model"]


def test_an_unreadable_upload_is_refused_without_echoing_its_name(tmp_path):
    upload = tmp_path / "<img src=x onerror=alert(1)>.mp4"
    upload.write_bytes(b"this is not a video" * 100)
    with pytest.raises(space.InputError) as caught:
        space.plan_job(str(upload), "the dog", "test")
    message = caught.value.problems["video"]
    # A text file named .mp4 is not a video, whatever ffmpeg's mp4 reader says of it ("moov atom not found").
    assert message.startswith("Could not read the uploaded file as a video: it is not a video file.")
    assert "<img" not in message and str(tmp_path) not in message


def test_without_paths_replaces_every_form_of_the_path(tmp_path):
    path = tmp_path / "my clip.mp4"
    message = f"Could not read '{path.name}': {path} is broken (see {path.resolve()})"
    cleaned = space.without_paths(message, path)
    assert "my clip" not in cleaned and str(tmp_path) not in cleaned
    assert cleaned.startswith("Could not read the uploaded file:")


def test_memory_budget(monkeypatch):
    monkeypatch.setattr(space.limits, "MEMORY_BUDGET_BYTES", 10 * 640 * 360 * 5)
    space.plan_job(str(CUPS), "a\nb", "test", max_frames=10)
    with pytest.raises(space.InputError, match="need about .* GiB of memory") as caught:
        space.plan_job(str(CUPS), "a\nb", "test", max_frames=11)
    assert list(caught.value.problems) == ["max_frames"]


def test_zero_gpu_refuses_runs_longer_than_allowed_and_says_what_fits():
    job = space.plan_job(str(CUPS), "a\nb", "ytvos", max_frames=60, max_gpu_seconds=300)
    assert space.gpu_duration(job) <= 300
    limit = space.gpu_seconds_needed(job) - 5
    with pytest.raises(space.InputError) as caught:
        space.plan_job(str(CUPS), "a\nb", "ytvos", max_frames=60, max_gpu_seconds=limit)
    message = caught.value.problems["max_frames"]
    suggested = int(message.split("Lower the maximum number of frames to ")[1].split()[0])
    assert 1 <= suggested < 60
    space.plan_job(str(CUPS), "a\nb", "ytvos", max_frames=suggested, max_gpu_seconds=limit)


# ---------------------------------------------------------------------------------------------------------------
# Estimates and the ZeroGPU duration


def _job(
    frames: int, expressions: int, model: str = "ytvos", size: tuple[int, int] = (1280, 720)
) -> space.Job:
    return space.Job(
        video="clip.mp4",
        expressions=tuple(f"object {i}" for i in range(expressions)),
        model=model,
        options=SegmentOptions(),
        frames=frames,
        width=size[0],
        height=size[1],
        source_fps=30.0,
        has_audio=False,
    )


def test_gpu_duration_grows_with_frames_and_expressions_within_bounds():
    durations = [space.gpu_duration(_job(frames, 2)) for frames in (1, 50, 100, 200, 400)]
    assert durations == sorted(durations) and durations[0] == space.MIN_GPU_SECONDS
    assert durations[-1] <= space.MAX_GPU_SECONDS
    assert space.gpu_duration(_job(150, 3)) > space.gpu_duration(_job(150, 1)) > space.MIN_GPU_SECONDS
    assert space.gpu_duration(_job(5000, 10)) == space.MAX_GPU_SECONDS
    assert space.gpu_duration(_job(5000, 10), max_seconds=120) == 120


def test_cost_model_parts():
    model = space.CostModel(setup_s=2, per_frame_s=0.5, per_frame_expression_s=0.25, per_frame_megapixel_s=1)
    # 10 frames x (0.5 + 2 x 0.25 + 1 MP x 3) + 2
    assert model.seconds(10, 2, 1000, 1000) == pytest.approx(42.0)
    assert space.cost_model("cuda", "unknown") == space.COST_MODELS[("cuda", "large")]
    assert space.cost_model("xpu", "test") == space.COST_MODELS[("cpu", "test")]
    assert space.estimate_seconds(_job(100, 2), "cpu") > 10 * space.estimate_seconds(_job(100, 2), "cuda")


def test_timing_log_moves_the_estimate_towards_measured_runs():
    """Measured model loops scale the model's part of the estimate; the outputs' part stays."""
    timings = space.TimingLog()
    job = _job(40, 2, model="test", size=(640, 360))
    base = space.model_seconds(job, "cpu")
    outputs = space.estimate_seconds(job, "cpu") - base
    timings.record("cpu", job, 40, 4 * base)
    assert space.model_seconds(job, "cpu", timings) == pytest.approx(4 * base)
    assert space.estimate_seconds(job, "cpu", timings) == pytest.approx(4 * base + outputs)
    timings.record("cpu", job, 40, base)
    assert space.model_seconds(job, "cpu", timings) == pytest.approx(2 * base)
    assert timings.runs("cpu", "test") == 2 and timings.runs("cuda", "test") == 0
    assert space.estimate_seconds(job, "cuda", timings) == space.estimate_seconds(job, "cuda")
    timings.record("cpu", job, 0, 5.0)  # nothing measured: ignored
    assert timings.runs("cpu", "test") == 2


def test_estimate_line():
    kwargs = {"device_kind": "cpu", "device_label": "the CPU"}
    assert space.estimate_line(None, "x", "test", **kwargs) == "Upload a video to see how much work it is."
    assert space.estimate_line(str(CUPS), "", "test", 0, 0, 0, 12, **kwargs) == (
        "12 frames selected at 640x360; type at least one expression."
    )
    line = space.estimate_line(str(CUPS), "a\nb", "test", 0, 0, 0, 12, **kwargs)
    assert line.startswith("12 frames x 2 expressions = 24 frame-expressions at 640x360; about ")
    assert "on the CPU (a first guess until a run is measured)." in line
    on_zero = space.estimate_line(str(CUPS), "a", "ytvos", max_frames=10, max_gpu_seconds=300, **kwargs)
    assert on_zero.endswith(f"ZeroGPU reserves {space.MIN_GPU_SECONDS} s for it.")
    problems = space.estimate_line(str(CUPS), "a", "test", 5, 0, 0, 12, **kwargs)
    assert problems.startswith("To change before running: The trim window holds no frame")
    assert space.format_seconds(42.4) == "42 s" and space.format_seconds(125) == "2 min 05 s"


# ---------------------------------------------------------------------------------------------------------------
# Session folders


def test_sessions_get_separate_folders_named_by_digest(tmp_path):
    sessions = space.RunFolders(tmp_path)
    with sessions.run("alice") as a, sessions.run("../../bob") as b:
        assert a.parent != b.parent and a.parent.parent == b.parent.parent == tmp_path
        assert all(len(p.parent.name) == 32 for p in (a, b))
        (a / "overlay.mp4").write_bytes(b"alice")
        (b / "overlay.mp4").write_bytes(b"bob")
        assert sessions.running("alice") == 1 and sessions.running("carol") == 0
    assert (a / "overlay.mp4").read_bytes() == b"alice"  # finished runs stay until pruned or removed
    assert len(sessions.sessions()) == 2


def test_new_runs_prune_finished_ones_but_never_a_running_one(tmp_path):
    sessions = space.RunFolders(tmp_path, keep_runs=2)
    finished = []
    for _ in range(3):
        with sessions.run("s") as run_dir:
            finished.append(run_dir)
            time.sleep(0.01)  # distinct modification times
    assert [p.exists() for p in finished] == [False, True, True]
    with sessions.run("s") as first, sessions.run("s") as second, sessions.run("s") as third:
        # Running jobs are never pruned (they also count as kept), the newest finished one stays.
        assert first.exists() and second.exists() and third.exists()
        assert [p.exists() for p in finished] == [False, False, True]


def test_an_ended_session_is_removed_after_its_running_job(tmp_path):
    sessions = space.RunFolders(tmp_path)
    with sessions.run("s") as run_dir:
        assert sessions.remove("s") is False  # a heartbeat drop in the middle of a run
        assert run_dir.exists()
    assert not run_dir.parent.exists()
    with sessions.run("s") as run_dir:
        sessions.remove("s")
        with sessions.run("s"):  # the session came back: nothing is removed
            pass
    assert run_dir.parent.exists()
    assert sessions.remove("s") is True and not run_dir.parent.exists()
    assert sessions.remove("never-seen") is True


def test_stop_flag(tmp_path):
    sessions = space.RunFolders(tmp_path)
    assert sessions.request_stop("s") is False  # nothing running
    with sessions.run("s"):
        assert sessions.request_stop("s") is True
        assert sessions.stop_flag("s").exists() and not sessions.stop_flag("other").exists()
    with sessions.run("s"):
        assert not sessions.stop_flag("s").exists()  # a new run starts without the old request


def test_sweep_removes_idle_sessions_only(tmp_path):
    sessions = space.RunFolders(tmp_path, max_idle_s=60)
    (tmp_path / "examples").mkdir()  # not a session folder
    with sessions.run("old"):
        pass
    with sessions.run("busy") as busy:
        old = sessions.folder("old")
        past = time.time() - 3600
        os.utime(old, (past, past))
        os.utime(busy.parent, (past, past))
        assert sessions.sweep() == [old]
    assert busy.parent.exists() and (tmp_path / "examples").exists()
    sessions.close()
    assert sessions.sessions() == [] and (tmp_path / "examples").exists()


def test_a_root_made_here_is_removed_on_close():
    sessions = space.RunFolders()
    with sessions.run("s") as run_dir:
        assert run_dir.is_dir()
    sessions.close()
    assert not sessions.root.exists()


# ---------------------------------------------------------------------------------------------------------------
# Models


def test_weights_come_from_the_environment_then_checkpoints_then_the_hub(tmp_path):
    env_root, checkpoints = tmp_path / "env", tmp_path / "checkpoints"
    for folder in (env_root / "ytvos", checkpoints / "ytvos", checkpoints / "mevis"):
        folder.mkdir(parents=True)
        (folder / "model.safetensors").write_bytes(b"")
    (env_root / "tiny").mkdir()  # empty: skipped
    store = space.ModelStore(
        lambda source, device=None: source, checkpoints, {"MPGSAM2_WEIGHTS": str(env_root)}
    )
    assert store.source_for("ytvos") == str(env_root / "ytvos")
    assert store.source_for("mevis") == str(checkpoints / "mevis")
    assert store.source_for("tiny") == "tiny"
    assert store.source_for("test") == "test" and store.source_for("me/repo:x") == "me/repo:x"


def test_models_load_once_and_errors_are_kept_for_the_page():
    calls = []

    def loader(source, device=None):
        calls.append(source)
        if source == "ytvos":
            raise ValueError("no weights here; run `huggingface-cli download ReeF2025/MPG-SAM2`")
        return object()

    store = space.ModelStore(loader)
    threads = [threading.Thread(target=store.get, args=("test",)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert calls == ["test"] and store.loaded("test") and store.error("test") is None
    message = store.try_load("ytvos")
    assert message is not None and "huggingface-cli download" in message
    assert store.error("ytvos") == message and not store.loaded("ytvos")
    with pytest.raises(ValueError):
        store.get("ytvos")  # tried again: the weights may have arrived meanwhile
    assert calls.count("ytvos") == 2


def test_missing_real_weights_give_advice_and_the_app_can_still_start(tmp_path, monkeypatch):
    from mpgsam2 import VideoPredictor

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    store = space.ModelStore(VideoPredictor.from_pretrained, tmp_path / "checkpoints", env={})
    message = store.try_load("ytvos")
    assert message is not None and "huggingface-cli download ReeF2025/MPG-SAM2" in message
    notice = space.model_notice("ytvos", False, message)
    assert "could not be loaded" in notice and "--model toy" in notice and message in notice
    assert "UNTRAINED" in space.model_notice("test", True, None)
    assert space.model_notice("ytvos", False, None) == ""
    # The toy model, asked for or in place of a model that could not be loaded: what it is, and the way to
    # the real weights.
    toy = space.model_notice("toy", False, None, toy=True)
    assert "generated" in toy and "huggingface-cli download ReeF2025/MPG-SAM2" in toy
    assert "could not be loaded" not in toy
    fallback = space.model_notice(
        "toy", False, None, toy=True, fell_back_from="ytvos", fallback_reason=message
    )
    assert "The `ytvos` model could not be loaded" in fallback and message in fallback


def test_model_choices_and_example_caches():
    assert space.model_choices("ytvos") == ["ytvos", "mevis", "tiny"]
    assert space.model_choices("mevis") == ["mevis", "ytvos", "tiny"]
    assert space.model_choices("test") == ["test", "ytvos", "mevis", "tiny"]
    assert space.examples_cache_name("mevis") == "cached_examples_mevis"
    custom = space.examples_cache_name("/weights/my model")
    assert custom.startswith("cached_examples_") and "/" not in custom and " " not in custom
    assert space.examples_cache_name("test") != space.examples_cache_name("ytvos")
    assert space.preset_for("tiny") == "base" and space.preset_for("/my/weights") == "large"


def test_colour_names_follow_the_palette():
    from mpgsam2 import render

    assert len(space.COLOR_NAMES) == len(render.PALETTE)
    assert [space.color_name(k, 3) for k in range(3)] == ["blue", "orange", "green"]
    assert space.color_name(0, 12) == "#{:02x}{:02x}{:02x}".format(*render.color_for(0, 12))


# ---------------------------------------------------------------------------------------------------------------
# The streaming pipeline behind the app, and the text made from its outputs


@pytest.mark.slow
def test_frames_stream_in_and_a_stopped_run_keeps_the_frames_done(untrained_predictor, tmp_path):
    expressions = ["the girl", "the boy"]
    events = []
    for event in iter_segment_video(
        untrained_predictor,
        BEDROOM,
        expressions,
        tmp_path,
        SegmentOptions(max_frames=8),
        should_stop=lambda: len(events) >= 3,
    ):
        if isinstance(event, FrameDone):
            assert event.frame_view.is_file()  # written before it is announced
        events.append(event)
    frames, outputs = events[:-1], events[-1]
    assert [e.done for e in frames] == [1, 2, 3] and all(e.total == 8 for e in frames)
    assert [e.frame_index for e in frames] == [0, 1, 2]
    assert isinstance(outputs, SegmentOutputs)
    assert outputs.stopped and outputs.num_frames == 3 and outputs.frames_requested == 8
    probe = ffprobe_summary(outputs.overlay_video)
    assert probe["num_frames"] == 3 and probe["codec"] == "h264" and probe["fps"] == pytest.approx(30.0)
    labels = load_palette_zip(outputs.palette_zip)
    masks = load_coco_rle_json(outputs.rle_json)
    assert labels.shape == (3, 270, 480) and [m.shape for m in masks] == [(3, 270, 480)] * 2
    expected = np.zeros_like(labels)
    for k, m in enumerate(masks):
        expected[m] = k + 1
    np.testing.assert_array_equal(labels, expected)
    assert len(outputs.prior_views) == 3


@pytest.mark.slow
def test_segment_video_reports_progress_and_runs_to_the_end(untrained_predictor, tmp_path):
    seen = []
    outputs = segment_video(
        untrained_predictor,
        CUPS,
        ["the yellow ball"],
        tmp_path,
        SegmentOptions(max_frames=4),
        progress=lambda done, total: seen.append((done, total)),
    )
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert not outputs.stopped and outputs.num_frames == outputs.frames_requested == 4
    probe = ffprobe_summary(outputs.overlay_video)
    assert probe["has_audio"] and probe["fps"] == pytest.approx(NTSC)

    job = space.plan_job(str(CUPS), "the yellow ball", "test", max_frames=4)
    text = space.summary_text(outputs, seconds=3.2, untrained=True)
    assert text.startswith("4 frames x 1 expression in 3 s (640x360, 29.97 fps).")
    assert "UNTRAINED TEST MODEL" in text
    data = space.result_json(outputs, job, 3.21, "the CPU", untrained=True)
    assert data["video"] == {
        "frames": 4,
        "frames_requested": 4,
        "stopped": False,
        "fps": pytest.approx(NTSC),
        "width": 640,
        "height": 360,
        "source_width": 640,
        "source_height": 360,
    }
    assert data["warnings"] == []
    assert data["untrained"] is True and data["seconds"] == 3.21
    assert [e["expression"] for e in data["expressions"]] == ["the yellow ball"]
    assert data["expressions"][0]["color_name"] == "blue"
    assert space.download_files(outputs)[0].endswith("mpgsam2_results.zip")


def testabsent_spans():
    stamps = np.arange(8) / 4.0
    visible = np.array([False, True, True, False, False, True, False, False])
    assert absent_spans(visible, stamps, 4.0) == ((0.0, 0.25), (0.75, 1.25), (1.5, 2.0))
    assert absent_spans(np.ones(3, bool), stamps[:3], 4.0) == ()


def _summary(expression: str, frames_with_mask: int, spans=()) -> object:
    from mpgsam2.pipeline import ExpressionSummary

    visible = frames_with_mask > 0
    return ExpressionSummary(
        expression=expression,
        color=(30, 144, 255),
        frames_with_object=frames_with_mask,
        frames_with_mask=frames_with_mask,
        first_visible_s=0.0 if visible else None,
        last_visible_s=1.9 if visible else None,
        mean_area_percent=4.25 if visible else 0.0,
        absent_spans_s=spans,
    )


def test_summary_text_is_plain_and_names_expressions_without_a_match(tmp_path):
    outputs = SegmentOutputs(
        folder=tmp_path,
        overlay_video=tmp_path / "overlay.mp4",
        prior_views=[],
        timeline_png=tmp_path / "timeline.png",
        palette_zip=tmp_path / "masks_palette.zip",
        rle_json=tmp_path / "masks_rle.json",
        masks_dir=tmp_path / "masks",
        summary_json=tmp_path / "summary.json",
        bundle_zip=tmp_path / "mpgsam2_results.zip",
        num_frames=60,
        fps=NTSC,
        width=640,
        height=360,
        expressions=["the yellow ball", "<b>the cup</b> on the right"],
        summaries=[
            _summary("the yellow ball", 48, ((0.8, 1.2),)),
            _summary("<b>the cup</b> on the right", 0),
        ],
        frames_requested=90,
        stopped=True,
    )
    text = space.summary_text(outputs)
    lines = text.splitlines()
    assert lines[0] == "60 frames x 2 expressions (640x360, 29.97 fps)."
    assert lines[1] == "Stopped early: the results cover the first 60 of 90 frames."
    assert lines[2] == (
        '[blue] "the yellow ball": in 48 of 60 frames, from 0.00 s to 1.90 s, 4.2% of the frame on average; '
        "not visible 0.80-1.20 s."
    )
    assert lines[3] == '[orange] No match for "<b>the cup</b> on the right" in any frame.'
    job = dataclasses.replace(_job(60, 2), expressions=tuple(outputs.expressions))
    data = space.result_json(outputs, job, 1.0, "the CPU", untrained=False)
    assert [e["no_match"] for e in data["expressions"]] == [False, True]
    assert data["messages"] == ['No match for "<b>the cup</b> on the right" in any frame.']
    assert data["expressions"][0]["absent_spans_s"] == [[0.8, 1.2]]


# ---------------------------------------------------------------------------------------------------------------
# Points that correct a target


def test_points_name_an_expression_a_frame_and_a_place():
    clicks = space.parse_points(
        "the yellow ball:3:320,180\n\n  The  Cup on the right:0:10.5,2:neg ",
        ["the yellow ball", "the cup on the right"],
        10,
        640,
        360,
    )
    assert [(k, c.frame_index, c.x, c.y, c.positive) for k, c in clicks] == [
        (0, 3, 320.0, 180.0, True),
        (1, 0, 10.5, 2.0, False),
    ]
    assert space.parse_points(" \n", ["the ball"], 10, 640, 360) == ()


@pytest.mark.parametrize(
    ("points", "message"),
    [
        ("the ball 3 320 180", "Point 1 is not written EXPRESSION:FRAME:X,Y"),
        ("the ball:1:1,1\nthe cat:1:1,1", "Point 2 names no expression of the form"),
        ("the ball:10:1,1", "Point 1: A point is on frame 10; the clip has frames 0 to 9."),
        ("the ball:1:641,1", "Point 1: The point (641, 1) on frame 1 is outside the 640x360 frame."),
    ],
)
def test_bad_points_say_which_line_and_what_to_change(points, message):
    with pytest.raises(space.PointError, match=message.replace("(", r"\(").replace(")", r"\)")):
        space.parse_points(points, ["the ball"], 10, 640, 360)


def test_plan_refuses_bad_points_in_the_points_field():
    with pytest.raises(space.InputError) as caught:
        space.plan_job(str(CUPS), "the ball", "test", 0, 1, 0, 10, 0.5, "the cup:1:1,1")
    assert set(caught.value.problems) == {"points"}
    # The frames are the processed ones: 10 of them here, whatever the video's length.
    with pytest.raises(space.InputError, match="the clip has frames 0 to 9"):
        space.plan_job(str(CUPS), "the ball", "test", 0, 0, 0, 10, 0.5, "the ball:10:1,1")
    # MeViS tracks clips of its own; a point corrects one whole track.
    with pytest.raises(space.InputError, match="tracks in separate clips of 24 frames"):
        space.plan_job(str(CUPS), "the ball", "mevis", 0, 0, 0, 10, 0.5, "the ball:1:1,1")


def test_re_tracked_frames_count_in_the_estimate_and_the_gpu_reservation():
    job = space.plan_job(str(CUPS), "the ball\nthe cup", "ytvos", 0, 0, 0, 100, 0.5)
    corrected = space.plan_job(
        str(CUPS),
        "the ball\nthe cup",
        "ytvos",
        0,
        0,
        0,
        100,
        0.5,
        "the ball:40:1,1\nthe ball:20:2,2\nthe cup:50:3,3",
    )
    assert job.retracked_frames == 0 and corrected.retracked_frames == (60 - 20) + (60 - 50)  # 60 frames
    model = space.cost_model("cuda", "large")
    extra = 50 * (model.per_frame_s + model.per_frame_expression_s)
    assert space.model_seconds(corrected, "cuda") == pytest.approx(space.model_seconds(job, "cuda") + extra)
    assert space.gpu_seconds_needed(corrected) > space.gpu_seconds_needed(job)


def test_a_click_on_a_frame_view_becomes_a_point_on_its_row_and_frame(tmp_path):
    from PIL import Image

    from mpgsam2 import render

    frame = np.zeros((270, 480, 3), dtype=np.uint8)  # 16:9, as the view scales it to rows of 360
    masks = [np.zeros((270, 480), dtype=bool)] * 3
    priors = [np.zeros((16, 16), dtype=np.float32)] * 3
    view = render.frame_view(frame, priors, masks, [(0, 0, 255), (255, 128, 0), (0, 200, 0)], height=360)
    path = tmp_path / "frame_00007.jpg"
    Image.fromarray(view).save(path)
    assert view.shape[:2] == (3 * 360, 3 * 640)
    expressions = ["the girl", "the boy", "the dog"]
    point = space.point_from_view
    # Row 1 (the boy), first panel: (320, 360 + 180) is the middle of the frame.
    assert point(path, expressions, 7, 480, 270, 320, 540) == "the boy:7:240,135"
    # The same place in the prior and final panels of that row, as a negative point.
    assert point(path, expressions, 7, 480, 270, 640 + 320, 540, positive=False) == "the boy:7:240,135:neg"
    assert point(path, expressions, 7, 480, 270, 2 * 640 + 320, 540) == "the boy:7:240,135"
    # Corners of the last row.
    assert point(path, expressions, 7, 480, 270, 0, 720) == "the dog:7:0,0"
    assert point(path, expressions, 7, 480, 270, 1919, 1079) == "the dog:7:480,270"
    # The line parses back to the same place.
    ((k, click),) = space.parse_points(
        point(path, expressions, 7, 480, 270, 100, 50), expressions, 8, 480, 270
    )
    assert (k, click.frame_index, click.x, click.y) == (0, 7, 75.0, 38.0)
    with pytest.raises(space.PointError, match="Click inside the frame view"):
        point(path, expressions, 7, 480, 270, 1920, 5)
