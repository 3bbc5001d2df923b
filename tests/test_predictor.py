"""VideoPredictor on the test preset: shapes, streaming, shared features, clip-wise mode, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from mpgsam2 import FrameResult, VideoPredictor


def test_segment_returns_one_result_per_expression(predictor, synthetic_frames):
    results = predictor.segment(synthetic_frames, ["the red square", "  ", "the background"])
    assert [r.expression for r in results] == ["the red square", "the background"]
    for result in results:
        assert result.logits.shape == (4, 96, 128) and result.logits.dtype == np.float32
        assert result.masks.dtype == bool and result.masks.shape == (4, 96, 128)
        np.testing.assert_array_equal(result.masks, 1 / (1 + np.exp(-result.logits.astype(np.float64))) > 0.5)
        assert result.priors.shape == (4, 14, 14) and ((result.priors > 0) & (result.priors < 1)).all()
        assert result.object_scores.shape == (4,) and result.object_scores.dtype == np.float32
        assert result.masks.any()  # the random "test" weights keep objects present


def test_iterator_yields_frames_in_order_and_matches_segment(predictor, synthetic_frames):
    frames = list(synthetic_frames)  # a list of (H, W, 3) frames works too
    streamed = list(predictor.iter_segment(frames, ["the red square"], logits=True))
    assert [r.frame_index for r in streamed] == [0, 1, 2, 3]
    assert all(isinstance(r, FrameResult) and r.logits.shape == (1, 96, 128) for r in streamed)
    whole = predictor.segment(synthetic_frames, ["the red square"])[0]
    np.testing.assert_array_equal(np.stack([r.logits[0] for r in streamed]), whole.logits)
    # Without logits (the default when streaming), the same masks, priors and scores come back.
    lean = list(predictor.iter_segment(frames, ["the red square"]))
    assert all(r.logits is None for r in lean)
    for a, b in zip(lean, streamed):
        np.testing.assert_array_equal(a.masks, b.masks)
        np.testing.assert_array_equal(a.priors, b.priors)
        np.testing.assert_array_equal(a.object_scores, b.object_scores)


def test_several_expressions_equal_each_alone(predictor, synthetic_frames):
    """The expressions advance through the tracking step as one batch: the masks are those of each tracked
    alone, and the logits differ only by the order of float32 sums in batched kernels (up to 5e-5 here; 1e-5
    was the bound when the expressions were tracked one after the other)."""
    expressions = ["the red square", "the grey wall on the left", "nothing"]
    together = predictor.segment(synthetic_frames, expressions)
    for expression, joint in zip(expressions, together):
        alone = predictor.segment(synthetic_frames, [expression])[0]
        np.testing.assert_allclose(joint.logits, alone.logits, atol=1e-4)
        np.testing.assert_array_equal(joint.masks, alone.masks)
        np.testing.assert_allclose(joint.priors, alone.priors, atol=1e-6)


def test_clip_wise_mode_restarts_every_clip(predictor, synthetic_frames):
    frames = np.concatenate([synthetic_frames, synthetic_frames[:1]])  # 5 frames
    clipped = predictor.segment(frames, ["the red square"], clip_length=2)[0]
    assert clipped.logits.shape[0] == 5
    # Clip 2 starts at frame 2 as a fresh clip: it equals a separate run on frames 2-3.
    separate = predictor.segment(frames[2:4], ["the red square"])[0]
    np.testing.assert_allclose(clipped.logits[2:4], separate.logits, atol=1e-5)
    # The last clip has one frame: the same as running that frame alone.
    single = predictor.segment(frames[4:], ["the red square"])[0]
    np.testing.assert_allclose(clipped.logits[4:], single.logits, atol=1e-5)


def test_memory_bank_is_pruned_on_long_clips(predictor):
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 255, (20, 32, 32, 3), dtype=np.uint8)
    session = predictor.init_session(frames, ["a thing"])
    for _ in predictor.propagate(session):
        pass
    past = session.memory_bank["non_cond_frame_outputs"]
    with_features = [t for t, out in past.items() if "maskmem_features" in out]
    assert with_features == list(range(13, 20))  # only what the last frames' memory selection can read
    assert min(past) >= 19 - 16 and 0 in session.memory_bank["cond_frame_outputs"]


@pytest.mark.parametrize(
    ("frames", "expressions", "message"),
    [
        (np.zeros((2, 8, 8), np.uint8), ["x"], "RGB"),
        (np.zeros((0, 8, 8, 3), np.uint8), ["x"], "T >= 1"),
        (np.zeros((1, 8, 8, 3), np.float32), ["x"], "uint8"),
        (np.zeros((1, 8, 8, 3), np.uint8), ["", "  "], "at least one expression"),
        (np.zeros((1, 8, 8, 3), np.uint8), [f"e{i}" for i in range(51)], "at most 50"),
    ],
)
def test_bad_input_is_refused_clearly(predictor, frames, expressions, message):
    with pytest.raises(ValueError, match=message):
        predictor.segment(frames, expressions)


def test_single_image_is_a_one_frame_video(predictor, synthetic_frames):
    (result,) = predictor.segment(synthetic_frames[0], "the red square")
    assert result.masks.shape == (1, 96, 128)


@pytest.mark.slow
def test_base_configuration_runs_with_widths_from_its_checkpoint(tokenizer, tmp_path, synthetic_frames):
    """A BEiT-3-base model (768 wide, 12 layers, prior FFN 3072) is rebuilt from its checkpoint alone."""
    import dataclasses

    from mpgsam2 import build_model, get_config, load_model, save_pretrained
    from mpgsam2.modeling.config import HIERA_PRESETS

    base = get_config("base")
    config = base.replace(
        mask_prior=dataclasses.replace(base.mask_prior, ffn_dim=3072),
        sam2=dataclasses.replace(base.sam2, hiera=HIERA_PRESETS["tiny"], image_size=256),
    )
    model = build_model(config, seed=1)
    folder = save_pretrained(model, tmp_path / "tiny")
    # Only the image size (not fixed by any weight) is kept from the saved config; widths come from shapes.
    (folder / "config.json").write_text('{"mpgsam2": {"sam2": {"image_size": 256}}}')
    loaded = load_model(folder, device="cpu")
    assert loaded.config.beit3.embed_dim == 768 and loaded.config.beit3.depth == 12
    assert loaded.config.beit3.num_heads == 12 and loaded.config.mask_prior.ffn_dim == 3072
    assert loaded.config.sam2.hiera == HIERA_PRESETS["tiny"]
    (result,) = VideoPredictor(loaded, tokenizer).segment(synthetic_frames[:2], ["the red square"])
    (expected,) = VideoPredictor(model, tokenizer).segment(synthetic_frames[:2], ["the red square"])
    np.testing.assert_allclose(result.logits, expected.logits, atol=1e-5)


def test_cut_and_unknown_expressions_are_logged_once(predictor, synthetic_frames, caplog):
    predictor.segment(synthetic_frames[:1], ["the dog " * 700, "☃☃"])
    assert caplog.text.count("was cut") == 1
    assert caplog.text.count("No word of") == 1


def test_a_failing_compile_falls_back_to_eager(predictor, synthetic_frames, caplog):
    import torch

    from mpgsam2.inference.predictor import CompiledOrEager

    def no_compiler(graph, example_inputs):
        raise RuntimeError("no C++ compiler on this machine")

    guarded = CompiledOrEager(predictor.model.encode_frame, backend=no_compiler)
    image = predictor.sam_input(synthetic_frames[0])
    with torch.inference_mode():
        got, expected = guarded(image), predictor.model.encode_frame(image)
        again = guarded(image)  # eager from now on, without trying again
    assert guarded.failed and caplog.text.count("torch.compile failed") == 1
    torch.testing.assert_close(got.vision_feats[-1], expected.vision_feats[-1], rtol=0, atol=0)
    torch.testing.assert_close(again.high_res[0], expected.high_res[0], rtol=0, atol=0)


def test_tf32_is_a_scope(predictor, synthetic_frames):
    import torch

    from mpgsam2 import VideoPredictor
    from mpgsam2.devices import tf32

    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    with tf32(True):
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    with tf32(False):
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before
    tf32_predictor = VideoPredictor(predictor.model, predictor.tokenizer, precision="tf32")
    assert tf32_predictor.tf32 and tf32_predictor.precision is None
    # On the CPU TF32 changes nothing: the same masks as fp32.
    np.testing.assert_array_equal(
        tf32_predictor.segment(synthetic_frames[:2], "the red square")[0].masks,
        predictor.segment(synthetic_frames[:2], "the red square")[0].masks,
    )
