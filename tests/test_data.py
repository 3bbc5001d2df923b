"""Training data: readers of the three video layouts and RefCOCO, clip sampling, augmentation, model inputs.

Every dataset here is synthetic, written into a temporary folder by :mod:`mpgsam2.datasets.synthetic`.
"""

from __future__ import annotations

import dataclasses
import json
import random

import numpy as np
import pytest
import torch

from mpgsam2 import get_config, load_tokenizer
from mpgsam2.datasets import (
    BenchmarkSplit,
    ClipAugmentation,
    ClipTransform,
    DatasetSpec,
    MeViS,
    RawClip,
    RefCOCO,
    RefDAVIS17,
    RefYouTubeVOS,
    anchor_frames,
    build_dataset,
    build_training_set,
    horizontal_flip,
    photometric_distort,
    sample_clip_frames,
    swap_left_right,
    write_synthetic_refcoco,
    write_synthetic_videos,
)
from mpgsam2.tokenizer import TEST_TOKENIZER

NUM_VIDEOS, NUM_FRAMES = 2, 6


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    base = tmp_path_factory.mktemp("data")
    for layout in ("ytvos", "mevis", "davis"):
        write_synthetic_videos(base / layout, layout, num_videos=NUM_VIDEOS, num_frames=NUM_FRAMES)
    write_synthetic_refcoco(base / "coco", names=("refcoco", "refcocog"), num_images=4)
    return base


@pytest.fixture(scope="module")
def transform():
    return ClipTransform(get_config("test"), load_tokenizer(TEST_TOKENIZER))


def red(frames: np.ndarray) -> np.ndarray:
    """Where the synthetic red square is painted (JPEG-tolerant)."""
    f = frames.astype(int)
    return (f[..., 0] > 160) & (f[..., 1] < 100) & (f[..., 2] < 100)


# --- frame sampling ------------------------------------------------------------------------------------------


def test_clip_sampling_follows_the_official_anchor_local_global_scheme():
    rng = random.Random(0)
    for _ in range(400):
        length = rng.randint(1, 40)
        frames = rng.randint(1, 9)
        anchor = rng.randrange(length)
        indices = sample_clip_frames(length, anchor, frames, rng)
        assert len(indices) == frames and indices == sorted(indices)
        assert all(0 <= i < length for i in indices)
        if frames == 1:
            assert indices == [anchor]
        elif frames >= 3:
            assert anchor in indices
            # One neighbour on each side within 3 frames (clamped at the ends of the video).
            assert any(anchor - 3 <= i <= max(anchor - 1, 0) for i in indices)
            assert any(min(anchor + 1, length - 1) <= i <= anchor + 3 for i in indices)
        if frames > 3 and length > frames + 6:
            assert len(set(indices)) >= frames - 2  # global frames come from outside the local window
    # A video shorter than the clip repeats frames; the same seed gives the same clip.
    assert sorted(set(sample_clip_frames(2, 1, 8, random.Random(1)))) == [0, 1]
    assert sample_clip_frames(30, 10, 5, random.Random(7)) == sample_clip_frames(30, 10, 5, random.Random(7))
    assert anchor_frames(11, 5) == [0, 5, 10]
    with pytest.raises(ValueError):
        sample_clip_frames(5, 5, 3, rng)


# --- augmentation ----------------------------------------------------------------------------------------------


def test_flip_swaps_left_and_right_and_mirrors_frames_and_masks():
    assert swap_left_right("the man on the left, right of the leftmost car") == (
        "the man on the right, left of the rightmost car"
    )
    frames = np.arange(2 * 3 * 4 * 3, dtype=np.uint8).reshape(2, 3, 4, 3)
    masks = np.zeros((2, 3, 4), dtype=bool)
    masks[:, :, 0] = True
    clip = RawClip(frames, masks, "dog on the left", (0, 1), "x")
    flipped = horizontal_flip(clip)
    np.testing.assert_array_equal(flipped.frames, frames[:, :, ::-1])
    assert flipped.masks[:, :, -1].all() and not flipped.masks[:, :, 0].any()
    assert flipped.expression == "dog on the right"
    again = horizontal_flip(flipped)
    np.testing.assert_array_equal(again.frames, frames)
    assert again.expression == clip.expression


def test_photometric_distortion_is_reproducible_and_stays_in_range():
    frame = np.random.default_rng(0).integers(0, 256, (16, 20, 3), dtype=np.uint8)
    outputs = [photometric_distort(frame, random.Random(seed)) for seed in range(12)]
    assert all(o.shape == frame.shape and o.dtype == np.uint8 for o in outputs)
    assert sum(not np.array_equal(o, frame) for o in outputs) >= 8
    np.testing.assert_array_equal(photometric_distort(frame, random.Random(3)), outputs[3])


def test_augmented_frames_feed_both_model_inputs(roots, transform):
    """Unlike the official code, BEiT-3's input is flipped with SAM 2's (and the expression)."""
    dataset = RefYouTubeVOS(roots / "ytvos", num_frames=2)
    raw = dataset.load_clip("vid000", "0", [0, 1])
    flipped = ClipAugmentation(flip_probability=1.0, photometric=False)(raw, random.Random(0))
    model_inputs = transform(flipped)
    reference = transform(horizontal_flip(raw))
    for name in ("sam_images", "beit_images", "masks"):
        torch.testing.assert_close(getattr(model_inputs, name), getattr(reference, name))
    plain = transform(raw)
    # Mirroring commutes with the squash resize: both images are the mirrors of the unflipped inputs.
    torch.testing.assert_close(model_inputs.beit_images, plain.beit_images.flip(-1), atol=0.05, rtol=0)
    torch.testing.assert_close(model_inputs.sam_images, plain.sam_images.flip(-1), atol=0.05, rtol=0)
    torch.testing.assert_close(model_inputs.masks, plain.masks.flip(-1))
    assert flipped.expression == "the red square on the right"


# --- readers ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout, cls, expressions", [("ytvos", RefYouTubeVOS, 2), ("davis", RefDAVIS17, 2), ("mevis", MeViS, 3)])  # fmt: skip
def test_video_readers_enumerate_anchors_and_read_masks(roots, layout, cls, expressions):
    dataset = cls(roots / layout, split="train", num_frames=3)
    assert len(dataset) == NUM_VIDEOS * expressions * len(anchor_frames(NUM_FRAMES, 3))
    clip = dataset.load_clip("vid001", "0", [0, 2, 5])
    assert clip.frames.shape == (3, 48, 64, 3) and clip.masks.shape == (3, 48, 64)
    assert clip.expression == "the red square on the left" and clip.source == f"{layout}:vid001/0"
    # The ground truth of "the red square" is where the frames are red.
    agreement = (clip.masks == red(clip.frames)).mean()
    assert agreement > 0.98 and clip.masks.sum() > 50
    disc = dataset.load_clip("vid000", "1", [0, 5])
    assert disc.visible.tolist() == [True, False]  # the disc left the picture in the last frame
    item = dataset[0]
    assert isinstance(item, RawClip) and item.visible.any() and len(item.frame_indices) == 3


def test_mevis_expressions_can_refer_to_several_objects(roots):
    dataset = MeViS(roots / "mevis", num_frames=1)
    both = dataset.load_clip("vid000", "2", [1]).masks
    square = dataset.load_clip("vid000", "0", [1]).masks
    disc = dataset.load_clip("vid000", "1", [1]).masks
    np.testing.assert_array_equal(both, square | disc)
    assert square.any() and disc.any()


def test_items_without_a_visible_target_are_replaced(roots):
    # One-frame clips of the disc at its last (empty) frame are resampled to another item.
    dataset = RefYouTubeVOS(roots / "ytvos", num_frames=1)
    empty = [i for i, (v, e, a) in enumerate(dataset.items) if e == "1" and a == NUM_FRAMES - 1]
    assert empty
    for index in empty:
        clip = dataset[index]
        assert clip.visible.all()


def test_sampling_and_augmentation_are_reproducible_per_epoch(roots):
    dataset = RefYouTubeVOS(roots / "ytvos", num_frames=4, augment=ClipAugmentation(), seed=5)
    first = dataset[3]
    again = dataset[3]
    np.testing.assert_array_equal(first.frames, again.frames)
    assert first.frame_indices == again.frame_indices
    changed = []
    for epoch in range(1, 6):
        dataset.set_epoch(epoch)
        clip = dataset[3]
        changed.append(
            clip.frame_indices != first.frame_indices or not np.array_equal(clip.frames, first.frames)
        )
    assert any(changed)


def test_readers_and_inference_listing_agree(roots):
    """The CLI's ``infer-dataset`` reads the same folders as the training readers."""
    for layout in ("ytvos", "mevis", "davis"):
        listed = list(BenchmarkSplit(roots / layout, "train"))
        dataset = build_dataset(DatasetSpec(format=layout, root=str(roots / layout)), augment=False)
        assert [v.video for v in listed] == sorted(dataset.meta)
        videos = list(dataset.iter_eval_videos())
        truth = videos[0].ground_truth("0")
        assert (
            truth.shape == (NUM_FRAMES, 48, 64)
            and truth.all(axis=(1, 2)).sum() == 0
            and truth.any(axis=(1, 2)).all()
        )
        assert videos[0].load_frames().shape == (NUM_FRAMES, 48, 64, 3)


def test_refcoco_reads_polygons_and_rles_as_one_frame_image_clips(roots):
    dataset = RefCOCO(roots / "coco", names=("refcoco", "refcocog"))
    assert len(dataset) == 8
    square, disc = dataset.load_item(0), dataset.load_item(1)
    assert square.kind == "image" and square.frames.shape == (1, 48, 64, 3)
    assert square.expression == "the red square on the left" and disc.expression == "the blue circle"
    assert (square.masks[0] == red(square.frames)[0]).mean() > 0.98  # a polygon annotation
    blue = (disc.frames[0, ..., 2].astype(int) > 150) & (disc.frames[0, ..., 0].astype(int) < 100)
    assert (disc.masks[0] == blue).mean() > 0.98  # an RLE annotation
    augmented = RefCOCO(roots / "coco", names=("refcoco",), augment=ClipAugmentation(1.0, photometric=False))
    assert augmented[0].expression == "the red square on the right"


def test_refcoco_skips_crowd_and_empty_annotations(roots, tmp_path):
    data = json.loads((roots / "coco" / "refcoco" / "instances_refcoco_train.json").read_text())
    for annotation in data["annotations"]:
        annotation["iscrowd"] = 1
    (tmp_path / "refcoco").mkdir()
    (tmp_path / "refcoco" / "instances_refcoco_train.json").write_text(json.dumps(data))
    (tmp_path / "train2014").symlink_to(roots / "coco" / "train2014")
    dataset = RefCOCO(tmp_path, names=("refcoco",))
    assert not dataset.load_item(0).visible.any()
    with pytest.raises(RuntimeError, match="No visible target"):
        dataset[0]


def test_model_inputs_have_the_official_sizes(roots, transform):
    dataset = RefYouTubeVOS(roots / "ytvos", num_frames=3, transform=transform)
    clip = dataset[0]
    size = get_config("test").sam2.image_size
    assert clip.sam_images.shape == (3, 3, size, size) and clip.beit_images.shape == (3, 3, 224, 224)
    assert clip.masks.shape == (3, size, size) and set(clip.masks.unique().tolist()) <= {0.0, 1.0}
    assert clip.input_ids[0] == 0 and clip.input_ids[-1] == 2 and clip.visible.dtype == torch.bool
    # Nearest-neighbour resizing keeps the area fraction of the mask.
    raw = dataset.raw_item(0)
    assert clip.masks.mean().item() == pytest.approx(raw.masks.mean(), abs=0.01)
    moved = clip.to("cpu")
    assert dataclasses.replace(moved, expression="x").expression == "x"


def test_training_set_concatenates_with_repeats(roots, transform):
    specs = [
        DatasetSpec(format="ytvos", root=str(roots / "ytvos"), num_frames=2, repeat=2),
        DatasetSpec(format="refcoco", root=str(roots / "coco"), names=("refcoco",)),
    ]
    dataset = build_training_set(specs, transform, augment=True, seed=0)
    videos = len(RefYouTubeVOS(roots / "ytvos", num_frames=2))
    assert len(dataset) == 2 * videos + 4
    assert dataset[0].kind == "video" and dataset[len(dataset) - 1].kind == "image"
    dataset.set_epoch(3)
    assert {d.epoch for d in dataset.datasets} == {3}
    with pytest.raises(ValueError, match="Unknown dataset format"):
        DatasetSpec(format="a2d", root=".")
    with pytest.raises(ValueError, match="Unknown dataset option"):
        DatasetSpec.from_dict({"format": "ytvos", "root": ".", "frames": 3})
