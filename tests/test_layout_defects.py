"""Defects found while reading the package, each with the test that showed it (issue: the layout).

Every test here failed on the code before its fix: masks placed by list position instead of frame index, a
predictor that changed its caller's tokenizer, ``clip_length=0`` taken for "the whole video", conditioning
frames assumed to be frame 0, expressions tokenised twice per run, expressions cleaned by different rules on
different surfaces.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mpgsam2 import VideoPredictor, build_model, get_config
from mpgsam2.expressions import ExpressionError, clean_expressions
from mpgsam2.inference.results import FrameResult
from mpgsam2.pipeline import ResultCollector, SegmentOptions, segment_video
from mpgsam2.video_io import read_video

ROOT = Path(__file__).resolve().parents[1]
BEDROOM = ROOT / "examples" / "short" / "bedroom_1s_270p.mp4"  # 480x270, 30 frames at 30 fps


def test_frames_are_placed_by_their_index_not_their_arrival(tmp_path):
    clip = read_video(BEDROOM, max_frames=3)
    collector = ResultCollector(clip, ["a", "b"], tmp_path)
    masks = {t: np.zeros((2, clip.height, clip.width), dtype=bool) for t in range(3)}
    for t in range(3):
        masks[t][0, t * 10 : t * 10 + 5] = True  # a band whose place says which frame it is
    priors = np.full((2, 14, 14), 0.5, dtype=np.float32)
    for t in (1, 0, 2):  # out of order
        collector.add(FrameResult.pack(t, masks[t], np.ones(2, np.float32), priors))
    result = collector.result()
    for t in range(3):
        np.testing.assert_array_equal(result.masks[:, t], masks[t])
    assert [p.name for p in result.frame_views] == ["frame_00000.jpg", "frame_00001.jpg", "frame_00002.jpg"]


def test_packed_frame_results_round_trip():
    rng = np.random.default_rng(0)
    masks = rng.random((3, 7, 13)) > 0.5  # H * W not a multiple of 8
    frame = FrameResult.pack(4, masks, np.array([1.0, -2.0, 0.5]), rng.random((3, 14, 14)))
    np.testing.assert_array_equal(frame.masks, masks)
    assert frame.packed_masks.nbytes == 3 * ((7 * 13 + 7) // 8)


def test_the_predictor_leaves_its_callers_tokenizer_alone(tokenizer):
    config = get_config("test")
    short = config.replace(beit3=__import__("dataclasses").replace(config.beit3, max_text_positions=12))
    assert tokenizer.max_tokens == 1022
    predictor = VideoPredictor(build_model(short, seed=0), tokenizer)
    assert predictor.tokenizer.max_tokens == 10 and tokenizer.max_tokens == 1022
    from mpgsam2.datasets import ClipTransform

    ClipTransform(short, tokenizer)
    assert tokenizer.max_tokens == 1022


@pytest.mark.parametrize("clip_length", [0, -3, 2.5])
def test_a_clip_length_that_is_not_a_positive_whole_number_is_refused(
    predictor, synthetic_frames, clip_length
):
    with pytest.raises(ValueError, match="clip_length must be a whole number of frames, at least 1"):
        list(predictor.iter_segment(synthetic_frames, ["the red square"], clip_length=clip_length))


def test_the_command_line_refuses_a_clip_length_of_zero(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "mpgsam2", "-q", "segment", str(BEDROOM), "-e", "x", "--out", str(tmp_path),
         "--model", "test", "--clip-length", "0"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "clip_length must be a whole number of frames, at least 1" in done.stderr


def test_tracking_may_start_at_any_frame(predictor, synthetic_frames):
    """The first frame tracked (an empty memory bank) is the conditioning frame, whatever its index; the
    frames after it read it as such."""
    session = predictor.init_session(synthetic_frames, ["the red square"])
    first, second = predictor.step(session, 2, logits=True), predictor.step(session, 3, logits=True)
    bank = session.memory_bank
    assert list(bank["cond_frame_outputs"]) == [2] and list(bank["non_cond_frame_outputs"]) == [3]
    assert np.isfinite(first.logits).all() and np.isfinite(second.logits).all()


def test_expressions_are_tokenised_once_per_run(predictor, tmp_path, monkeypatch):
    calls = []
    encode = type(predictor.tokenizer).encode

    def counting(self, text):
        calls.append(text)
        return encode(self, text)

    monkeypatch.setattr(type(predictor.tokenizer), "encode", counting)
    segment_video(predictor, BEDROOM, ["the girl", "the boy"], tmp_path, SegmentOptions(max_frames=2))
    assert sorted(calls) == ["the boy", "the girl"]


SAME_INPUT = "  the cup\t on   the right \n\nthe yellow ball\r\n"


def test_one_rule_cleans_expressions_on_every_surface(predictor, synthetic_frames, tmp_path):
    from mpgsam2 import space

    expected = ["the cup on the right", "the yellow ball"]
    assert clean_expressions(SAME_INPUT) == expected
    assert space.parse_expressions(SAME_INPUT) == expected
    assert [r.expression for r in predictor.segment(synthetic_frames[:1], SAME_INPUT)] == expected
    assert [
        r.expression for r in predictor.segment(synthetic_frames[:1], SAME_INPUT.splitlines())
    ] == expected
    # Repeats (ignoring case) are refused everywhere, with the same words.
    with pytest.raises(ExpressionError, match="Expression 2 repeats expression 1"):
        predictor.segment(synthetic_frames[:1], ["the dog", "The  Dog"])
    with pytest.raises(space.InputError, match="Expression 2 repeats expression 1"):
        space.parse_expressions("the dog\nThe  Dog")


def test_benchmark_lists_may_repeat_an_expression(predictor, synthetic_frames):
    """Benchmarks list the same words for several objects: each distinct expression is segmented once."""
    results = predictor.segment_each(synthetic_frames[:2], ["a square", "the wall", "A  square"])
    assert [r.expression for r in results] == ["a square", "the wall", "A square"]
    np.testing.assert_array_equal(results[0].logits, results[2].logits)
