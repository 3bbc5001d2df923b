"""Clicks that correct an expression: re-tracking from the clicked frame (the untrained test model)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mpgsam2.inference.clicks import Click, parse_click

TEXTS = ["the red square", "the grey wall"]


def propagated(predictor, frames, texts=TEXTS):
    session = predictor.init_session(frames, texts, keep_memories=True)
    return session, list(predictor.propagate(session, logits=True))


@pytest.fixture
def frames(synthetic_frames):
    return np.concatenate([synthetic_frames, synthetic_frames[::-1]])  # 8 frames


def test_keeping_memories_changes_no_result(predictor, frames):
    kept = propagated(predictor, frames)[1]
    plain = list(predictor.iter_segment(frames, TEXTS, logits=True))
    for a, b in zip(kept, plain):
        np.testing.assert_array_equal(a.logits, b.logits)


def test_clicks_re_track_from_the_clicked_frame_on(predictor, frames):
    session, before = propagated(predictor, frames)
    prompts = []

    def record(module, args, kwargs, output):
        prompts.append((kwargs["points"][1].clone(), output[0].clone()))

    hook = predictor.model.sam2.sam_prompt_encoder.register_forward_hook(record, with_kwargs=True)
    banks = []
    prepare = predictor.model.sam2._prepare_memory_conditioned_features

    def watched(*args, **kwargs):
        banks.append((kwargs["frame_idx"], sorted(kwargs["output_dict"]["cond_frame_outputs"])))
        return prepare(*args, **kwargs)

    predictor.model.sam2._prepare_memory_conditioned_features = watched
    try:
        after = list(predictor.refine(session, 1, [Click(5, 40.0, 45.0)], logits=True))
    finally:
        hook.remove()
        del predictor.model.sam2._prepare_memory_conditioned_features
    # Frames 5 to 7 are re-tracked, for the clicked expression only; earlier frames keep their results.
    assert [r.frame_index for r in after] == [5, 6, 7] and all(r.masks.shape[0] == 1 for r in after)
    # Frame 5 is decoded with the point (label 1) where the official model puts "no point" (-1) tokens...
    labels, sparse = prompts[0]
    assert labels.tolist() == [[1]] and sparse.shape[1] == 2  # the point and SAM 2's padding token
    assert not torch.equal(sparse[0, 0], prompts[1][1][0, 0])  # frame 6 has no point
    assert not np.array_equal(after[0].logits[0], before[5].logits[1])
    # ...and its memory conditions every later frame, beside the initial frame's.
    assert banks == [(5, [0]), (6, [0, 5]), (7, [0, 5])]


def test_a_negative_point_is_not_a_positive_one(predictor, frames):
    results = {}
    for positive in (True, False):
        session, _ = propagated(predictor, frames)
        (first, *_) = predictor.refine(session, 0, [Click(6, 30.0, 40.0, positive)])
        results[positive] = first.masks[0]
    assert (results[True] != results[False]).any()


def test_refinements_build_on_each_other(predictor, frames):
    """A second click later in the clip keeps the first in force: re-tracking from it gives what one
    refinement with both clicks gives from the second's frame on."""
    session, _ = propagated(predictor, frames)
    list(predictor.refine(session, 0, [Click(2, 30.0, 40.0)]))
    second = list(predictor.refine(session, 0, [Click(5, 60.0, 20.0, positive=False)], logits=True))
    fresh, _ = propagated(predictor, frames)
    both = list(
        predictor.refine(fresh, 0, [Click(2, 30.0, 40.0), Click(5, 60.0, 20.0, positive=False)], True)
    )
    np.testing.assert_allclose(second[0].logits, both[3].logits, atol=1e-5)
    assert [c.frame_index for c in session.clicks[0]] == [2, 5]


def test_bad_clicks_are_refused_clearly(predictor, frames):
    session, _ = propagated(predictor, frames)
    with pytest.raises(ValueError, match="outside the 128x96 frame"):
        list(predictor.refine(session, 0, [Click(1, 500.0, 10.0)]))
    with pytest.raises(ValueError, match="the clip has frames 0 to 7"):
        list(predictor.refine(session, 0, [Click(9, 5.0, 5.0)]))
    plain = predictor.init_session(frames, TEXTS)
    with pytest.raises(ValueError, match="keep_memories=True"):
        list(predictor.refine(plain, 0, [Click(1, 5.0, 5.0)]))


def test_points_are_written_expression_frame_x_y():
    assert parse_click("the ball: it rolls:12:320,180.5") == ("the ball: it rolls", Click(12, 320.0, 180.5))
    assert parse_click("the cup:0:1,2:neg") == ("the cup", Click(0, 1.0, 2.0, positive=False))
    with pytest.raises(ValueError, match="EXPRESSION:FRAME:X,Y"):
        parse_click("the cup at 3,4")


BEDROOM = (
    __import__("pathlib").Path(__file__).resolve().parents[1] / "examples" / "short" / "bedroom_1s_270p.mp4"
)


def test_points_through_the_pipeline_change_only_the_frames_from_the_click_on(predictor, tmp_path):
    import json

    from mpgsam2.export import load_coco_rle_json
    from mpgsam2.pipeline import SegmentOptions, segment_video

    options = SegmentOptions(max_frames=5)
    plain = segment_video(predictor, BEDROOM, ["the girl", "the boy"], tmp_path / "plain", options)
    clicks = {"The  girl": [Click(3, 240.0, 135.0), Click(3, 60.0, 200.0, positive=False)]}
    corrected = segment_video(
        predictor, BEDROOM, ["the girl", "the boy"], tmp_path / "clicked", options, clicks=clicks
    )
    before, after = load_coco_rle_json(plain.rle_json), load_coco_rle_json(corrected.rle_json)
    np.testing.assert_array_equal(after[0][:3], before[0][:3])  # frames before the click
    np.testing.assert_array_equal(after[1], before[1])  # the other expression
    assert (after[0][3:] != before[0][3:]).any()
    summary = json.loads(corrected.summary_json.read_text())
    assert summary["clicks"] == [
        {"expression": "the girl", "frame": 3, "x": 240.0, "y": 135.0, "positive": True},
        {"expression": "the girl", "frame": 3, "x": 60.0, "y": 200.0, "positive": False},
    ]
    from mpgsam2 import space

    text = space.summary_text(corrected)
    assert (
        'Corrected with points: [blue] "the girl": frame 3 at (240, 135) +, frame 3 at (60, 200) -.' in text
    )
    with pytest.raises(
        ValueError, match='Points are given for "the cat", which is not one of the expressions'
    ):
        segment_video(
            predictor, BEDROOM, ["the girl"], tmp_path / "x", options, clicks={"the cat": [Click(0, 1, 1)]}
        )


def test_points_on_the_command_line(tmp_path):
    import json
    import subprocess
    import sys

    root = BEDROOM.parents[2]
    done = subprocess.run(
        [sys.executable, "-m", "mpgsam2", "-q", "segment", str(BEDROOM), "-e", "the girl", "--out", str(tmp_path),
         "--model", "test", "--max-frames", "3", "--point", "the girl:1:100,120", "--point", "the girl:2:50,60:neg"],
        cwd=root, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    clicks = json.loads((tmp_path / "summary.json").read_text())["clicks"]
    assert [(c["frame"], c["positive"]) for c in clicks] == [(1, True), (2, False)]
    bad = subprocess.run(
        [sys.executable, "-m", "mpgsam2", "-q", "segment", str(BEDROOM), "-e", "the girl", "--out", str(tmp_path / "b"),
         "--model", "test", "--max-frames", "3", "--point", "the girl:7:1,1"],
        cwd=root, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert (
        bad.returncode == 2 and "the clip has frames 0 to 2" in bad.stderr and "Traceback" not in bad.stderr
    )


def test_a_saved_session_is_corrected_in_another_process_as_in_the_same_one(predictor, frames, tmp_path):
    """A ZeroGPU Space runs the clip and each correction in different workers: the run saves its session,
    the correction loads it; the corrected frames are exactly those of a correction in the same session,
    and a second correction builds on the first."""
    from mpgsam2.inference.snapshots import SnapshotError, load_session
    from mpgsam2.pipeline.run import frame_results

    first, second = {1: [Click(5, 40.0, 45.0)]}, {0: [Click(3, 10.0, 12.0, positive=False)]}
    saved, corrected = tmp_path / "run.safetensors", tmp_path / "corrected.safetensors"
    plain = list(frame_results(predictor, frames, TEXTS, save_to=saved))
    assert [r.frame_index for r in plain] == list(range(8)) and saved.is_file()
    once = list(frame_results(predictor, frames, TEXTS, clicks=first, resume_from=saved, save_to=corrected))
    twice = list(frame_results(predictor, frames, TEXTS, clicks=second, resume_from=corrected))

    session, _ = propagated(predictor, frames)
    same_once = list(predictor.refine(session, 1, first[1]))
    same_twice = list(predictor.refine(session, 0, second[0]))
    # Only the re-tracked frames of the clicked expression come back, equal to the bit.
    assert [(r.frame_index, r.expressions) for r in once] == [(t, (1,)) for t in (5, 6, 7)]
    assert [(r.frame_index, r.expressions) for r in twice] == [(t, (0,)) for t in range(3, 8)]
    for got, want in [*zip(once, same_once), *zip(twice, same_twice)]:
        np.testing.assert_array_equal(got.masks, want.masks)
        np.testing.assert_array_equal(got.object_scores, want.object_scores)
    assert not np.array_equal(once[0].masks[0], plain[5].masks[1]) or not np.array_equal(
        once[0].object_scores[0], plain[5].object_scores[1]
    )
    # The earlier clicks stay in force in the saved session.
    assert load_session(corrected, frames).clicks == {1: first[1]}
    with pytest.raises(SnapshotError, match="covers 8 frames; these frames are 3"):
        load_session(saved, frames[:3])


def test_the_app_corrects_its_last_run_by_re_tracking_only_what_new_points_change(predictor, tmp_path):
    """The Space's Re-track: the same clip and expressions with more points than the run shown is a
    correction of that run (its saved session resumed): only the frames from the new click on are tracked,
    for the clicked expression, and the outputs equal those of a whole run with all the points."""
    from mpgsam2 import space
    from mpgsam2.export import load_coco_rle_json

    store = space.ModelStore(lambda source, device=None: predictor)
    calls = []

    def loop(job, frames_file, expressions, stop_flag):
        calls.append((job.resume_from is not None, [k for k, _ in job.pending_clicks]))
        return space.device_loop(
            predictor, frames_file, expressions, None, stop_flag, job.pending_clicks, job.resume_from
        )

    runner = space.Runner(store, space.RunFolders(tmp_path / "sessions"), space.TimingLog(), "cpu", loop)

    def plan(points=None):
        return space.plan_job(str(BEDROOM), "the girl\nthe boy", "test", 0, 0, 0, 6, 0.5, points)

    def finish(job, session="visitor"):
        events = list(runner.run(job, session))
        return events[:-1], events[-1]

    _, shown = finish(plan())
    before = load_coco_rle_json(shown.outputs.rle_json)  # (a session keeps its last two runs' files)
    assert shown.correctable and space.as_correction(plan(), shown).resume_from is None  # nothing new
    one = "the girl:2:240,135"
    two = one + "\nthe boy:4:60,200:neg"
    correction = space.as_correction(plan(one), shown)
    assert correction.resume_from == str(shown.outputs.folder) and correction.retracked_frames == 4
    # Right after the click, the clicked frame alone (the preview keeps nothing)...
    preview = runner.preview(correction, "visitor", 2)
    assert calls[-1] == (True, [0]) and shown.correctable
    frames, corrected = finish(correction)
    # ...is the frame that Re-track then gives.
    from PIL import Image

    np.testing.assert_array_equal(preview, np.asarray(Image.open(corrected.outputs.prior_views[2])))
    with pytest.raises(space.RunError, match="Run the clip first"):
        runner.preview(plan(one), "visitor", 2)
    assert [(f.frame_index, f.done, f.total) for f in frames] == [(t, t - 1, 4) for t in range(2, 6)]
    again = space.as_correction(plan(two), corrected)  # builds on the corrected run
    assert again.resumed_clicks == 1 and again.retracked_frames == 2
    frames, twice = finish(again)
    assert [f.frame_index for f in frames] == [4, 5]
    assert calls == [(False, []), (True, [0]), (True, [0]), (True, [1])]

    _, whole = finish(plan(two), "another visitor")  # every point in one whole run
    after, reference = load_coco_rle_json(twice.outputs.rle_json), load_coco_rle_json(whole.outputs.rle_json)
    np.testing.assert_array_equal(after, reference)
    np.testing.assert_array_equal(after[0][:2], before[0][:2])
    np.testing.assert_array_equal(after[1][:4], before[1][:4])
    assert [c["expression"] for c in twice.outputs.clicks] == ["the girl", "the boy"]
    # Another opacity is still a correction (the outputs are drawn again anyway); another clip setting is a
    # new run.
    assert space.as_correction(
        space.plan_job(str(BEDROOM), "the girl\nthe boy", "test", 0, 0, 0, 6, 0.8, two + "\nthe boy:5:1,1"),
        twice,
    ).resume_from == str(twice.outputs.folder)
    assert (
        space.as_correction(
            space.plan_job(str(BEDROOM), "the girl\nthe boy", "test", 0, 0, 0, 5, 0.5, two), twice
        ).resume_from
        is None
    )
