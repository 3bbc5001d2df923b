"""What the outputs mean: on generated toy clips whose ground truth is known, what the model says about each
frame must reach every output unchanged, for the right expression, frame and colour.

The model here is a stand-in that answers with the ground truth (it finds each frame it is given among the
clip's frames by its pixels, so frames handed over out of order or shifted would show). Everything after it
is the real code: decoding, the run, the frame views, the overlay, the exports and the summaries of the
library (:func:`mpgsam2.segment_video`, what the CLI runs) and of the app's runner (what ``/segment``
returns). A mask on the wrong frame, a colour given to the wrong expression, a flipped resize, a prior view of
another expression or a hidden target reported as present fails here. (The untrained test model cannot show
any of that: its masks mean nothing.)
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mpgsam2 import render
from mpgsam2.datasets.toy import ToyClip, generate_toy_clip
from mpgsam2.export import load_coco_rle_json, load_palette_zip
from mpgsam2.inference.results import FrameResult
from mpgsam2.pipeline import SegmentOptions, segment_video
from mpgsam2.video_io import read_video, write_video

SCALE = 2  # toy frames are 128 px; the video is written at 256 px so that H.264 keeps the colours
PRIOR_GRID = 14
VISIBLE, HIDDEN = 5.0, -5.0  # object-score logits


class GroundTruthModel:
    """Answers with a toy clip's ground truth: the targets' visible masks, their areas on the prior grid as
    priors, and an object score saying whether each is visible. ``encode`` and ``tokenizer`` are a real
    predictor's (only the answers are made up)."""

    def __init__(self, clip: ToyClip, predictor):
        self.clip, self.predictor = clip, predictor
        self.tokenizer = predictor.tokenizer
        self.frames = upscale(clip.frames).astype(np.float32)
        self.seen: list[int] = []

    def encode(self, expressions):
        return self.predictor.encode(expressions)

    def identify(self, frame: np.ndarray) -> int:
        """The clip's frame closest to ``frame`` (decoded from H.264)."""
        errors = ((self.frames - frame.astype(np.float32)) ** 2).mean(axis=(1, 2, 3))
        return int(np.argmin(errors))

    def iter_segment(self, frames, expressions, clip_length=None, logits=False):
        targets = {e.text: e for e in self.clip.expressions}
        for index, frame in enumerate(frames):
            source = self.identify(frame)
            self.seen.append(source)
            masks = np.stack([upscale(self.clip.target_masks(targets[e.text])[source]) for e in expressions])
            yield FrameResult.pack(index, masks, np.where(masks.any((1, 2)), VISIBLE, HIDDEN), grid(masks))


def upscale(array: np.ndarray) -> np.ndarray:
    """(..., H, W[, 3]) -> (..., 2H, 2W[, 3]), each pixel repeated."""
    axes = (-3, -2) if array.ndim >= 3 and array.shape[-1] == 3 else (-2, -1)
    return np.repeat(np.repeat(array, SCALE, axis=axes[0]), SCALE, axis=axes[1])


def grid(masks: np.ndarray) -> np.ndarray:
    """(K, H, W) bool -> (K, g, g) the share of each prior cell that the target covers."""
    count, height, width = masks.shape
    cells = masks[:, : height // PRIOR_GRID * PRIOR_GRID, : width // PRIOR_GRID * PRIOR_GRID]
    cells = cells.reshape(count, PRIOR_GRID, height // PRIOR_GRID, PRIOR_GRID, width // PRIOR_GRID)
    return cells.mean(axis=(2, 4)).astype(np.float32)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """A held-out toy clip with three expressions (one target partly hidden), as an mp4."""
    clip = next(
        c
        for c in map(generate_toy_clip, range(950_000, 950_100))
        if len(c.expressions) == 3
        and any(not c.target_masks(e).reshape(len(c.frames), -1).any(1).all() for e in c.expressions)
    )
    video = tmp_path_factory.mktemp("toy") / "toy.mp4"
    write_video(video, upscale(clip.frames), fps=10, crf=12)
    return clip, video


def truths(clip: ToyClip) -> list[np.ndarray]:
    return [upscale(clip.target_masks(e)) for e in clip.expressions]


def legend_boxes(overlay: np.ndarray, source: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """(T, H, W) bool: per frame, the box around what the overlay drew away from every target (the legend;
    elsewhere outside the masks the overlay keeps the frame's pixels)."""
    near = targets.copy()
    for shift in (-6, 6):
        near |= np.roll(targets, shift, axis=-1) | np.roll(targets, shift, axis=-2)
    drawn = (np.abs(overlay - source).max(-1) > 60) & ~near
    boxes = np.zeros(targets.shape, dtype=bool)
    for t, frame in enumerate(drawn):
        rows, columns = np.nonzero(frame)
        if len(rows):
            boxes[t, rows.min() : rows.max() + 1, columns.min() : columns.max() + 1] = True
    return boxes


def check_outputs(outputs, clip: ToyClip) -> None:
    """Every output of a run against the clip's ground truth."""
    expected = truths(clip)
    count = len(expected)
    # Masks: the RLE JSON per expression, and the palette PNGs with index k + 1 for expression k.
    for got, want in zip(load_coco_rle_json(outputs.rle_json), expected):
        np.testing.assert_array_equal(got, want)
    labels = np.zeros(expected[0].shape, dtype=np.uint8)
    for k, want in enumerate(expected):
        labels[want] = k + 1
    np.testing.assert_array_equal(load_palette_zip(outputs.palette_zip), labels)
    # The overlay: inside each target, the frame is tinted with that expression's colour, not another's.
    colors = [np.array(render.color_for(k, count), dtype=np.float32) for k in range(count)]
    overlay = read_video(outputs.overlay_video).frames.astype(np.float32)
    source = upscale(clip.frames).astype(np.float32)
    legend = legend_boxes(overlay, source, np.any(expected, axis=0))
    for k, want in enumerate(expected):
        # Away from the outline, and not under the legend.
        inside = want & ~np.roll(want, 4, axis=-1) & ~np.roll(want, -4, axis=-1) & ~legend
        tinted = [0.5 * source[inside] + 0.5 * color for color in colors]
        distances = [np.linalg.norm(overlay[inside] - t, axis=-1) for t in tinted]
        nearest = np.argmin(np.stack(distances), axis=0)
        assert (nearest == k).mean() > 0.8, (k, np.bincount(nearest, minlength=count))
    # Presence: a target is present exactly on the frames where it is visible; hidden frames are absent.
    summary = json.loads(outputs.summary_json.read_text())
    for item, want in zip(summary["expressions"], expected):
        visible = want.reshape(len(want), -1).any(1)
        assert item["frames_with_mask"] == item["frames_with_object"] == int(visible.sum())
        spans = item["absent_spans_s"]
        assert sum(round((end - start) * 10) for start, end in spans) == int((~visible).sum())
    # Frame views: in row k, the prior panel differs from the frame panel where expression k's target is.
    for t in range(len(clip.frames)):
        view = np.asarray(Image.open(outputs.prior_views[t]).convert("RGB")).astype(np.float32)
        rows = np.split(view, count, axis=0)
        for k, (row, want) in enumerate(zip(rows, expected)):
            if not want[t].any():
                continue
            frame_panel, prior_panel, _ = np.split(row, 3, axis=1)
            # The panel is 0.4 frame + 0.6 heat colour (inferno: black at 0, light yellow at 1).
            heat = ((prior_panel - 0.4 * frame_panel) / 0.6).mean(-1)
            cells = np.asarray(
                Image.fromarray(grid(want[t][None])[0] > 0.5).resize(
                    heat.shape[::-1], Image.Resampling.NEAREST
                )
            )
            if cells.any() and (~cells).any():
                assert heat[cells].mean() > heat[~cells].mean() + 60, (t, k)


def test_the_library_outputs_say_what_the_model_said(toy, predictor, tmp_path):
    clip, video = toy
    model = GroundTruthModel(clip, predictor)
    texts = [e.text for e in clip.expressions]
    outputs = segment_video(model, video, texts, tmp_path / "out", SegmentOptions(max_frames=50))
    assert model.seen == list(range(len(clip.frames)))  # every frame, in order, recognisable
    assert outputs.expressions == texts and outputs.num_frames == len(clip.frames)
    check_outputs(outputs, clip)


def test_the_apps_outputs_say_what_the_model_said(toy, predictor, tmp_path):
    """The app's runner (what ``/segment`` returns): the video decoded in its process, the model's answers
    packed across the (here local) process boundary, the outputs written as frames arrive."""
    from mpgsam2 import space

    clip, video = toy
    model = GroundTruthModel(clip, predictor)

    def loop(job, frames_file, expressions, stop_flag):
        return model.iter_segment(np.load(frames_file), expressions)

    runner = space.Runner(
        space.ModelStore(lambda source, device=None: model),
        space.RunFolders(tmp_path / "sessions"),
        space.TimingLog(),
        "cpu",
        loop,
    )
    texts = "\n".join(e.text for e in clip.expressions)
    job = space.plan_job(str(video), texts, "test", 0, 0, 0, 50, 0.5)
    finished = list(runner.run(job, "visitor"))[-1]
    assert model.seen == list(range(len(clip.frames)))
    check_outputs(finished.outputs, clip)
    # The summary names each expression with its overlay colour's name.
    text = space.summary_text(finished.outputs)
    count = len(clip.expressions)
    for k, expression in enumerate(clip.expressions):
        assert f'[{space.limits.color_name(k, count)}] "{expression.text}"' in text


class LateModel(GroundTruthModel):
    """Answers one frame late."""

    def identify(self, frame):
        return max(0, super().identify(frame) - 1)


class SwappedModel(GroundTruthModel):
    """Answers the first two expressions with each other's targets."""

    def iter_segment(self, frames, expressions, clip_length=None, logits=False):
        order = [1, 0, *range(2, len(expressions))]
        for result in super().iter_segment(frames, expressions, clip_length, logits):
            yield FrameResult.pack(
                result.frame_index, result.masks[order], result.object_scores[order], result.priors[order]
            )


@pytest.mark.parametrize("wrong", [LateModel, SwappedModel])
def test_a_wrong_answer_is_caught(toy, predictor, tmp_path, wrong):
    """The checks above are not vacuous: answers a frame late, or for the wrong expression, fail them."""
    clip, video = toy
    texts = [e.text for e in clip.expressions]
    outputs = segment_video(
        wrong(clip, predictor), video, texts, tmp_path / "out", SegmentOptions(max_frames=50)
    )
    with pytest.raises(AssertionError):
        check_outputs(outputs, clip)


def test_the_ground_truth_clip_is_what_the_checks_need(toy):
    clip, video = toy
    assert Path(video).stat().st_size > 0
    expected = truths(clip)
    assert len(expected) == 3 and any(not m.reshape(len(m), -1).any(1).all() for m in expected)
    # Different expressions name different targets, whose visible parts never overlap.
    assert not np.logical_and.reduce([m.any(0) for m in expected[:2]]).all()
    assert (np.sum(expected, axis=0) <= 1).all()
