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
