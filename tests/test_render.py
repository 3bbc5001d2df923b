"""Tests of mpgsam2.render: overlays, legends, plots and mask exports (round trips are exact)."""

from __future__ import annotations

import json
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from mpgsam2 import render
from mpgsam2.export import (
    DAVIS_PALETTE,
    load_coco_rle_json,
    load_palette_zip,
    save_binary_mask_pngs,
    save_coco_rle_json,
    save_palette_pngs_zip,
)
from mpgsam2.render import (
    PALETTE,
    color_for,
    draw_legend,
    overlay_frame,
    overlay_video_frames,
    prior_view,
)
from mpgsam2.timeline import presence_timeline_png
from mpgsam2.video_io import read_video

ROOT = Path(__file__).resolve().parents[1]
BEDROOM = ROOT / "examples" / "short" / "bedroom_1s_270p.mp4"


@pytest.fixture(scope="module")
def clip():
    return read_video(BEDROOM, max_frames=4)


def _square(h: int, w: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    m = np.zeros((h, w), dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


def _random_masks(rng: np.random.Generator, k: int, t: int, h: int, w: int) -> list[np.ndarray]:
    # Blocky random masks so that objects overlap in large patches, plus some single-pixel noise.
    masks = []
    for _ in range(k):
        coarse = rng.random((t, h // 4, w // 4)) < 0.35
        m = np.repeat(np.repeat(coarse, 4, axis=1), 4, axis=2)
        m ^= rng.random((t, h, w)) < 0.02
        masks.append(m)
    return masks


# ---------------------------------------------------------------------------------------------------------------
# Colours


def test_palette_is_distinct_and_starts_blue():
    assert PALETTE[0] == (30, 144, 255)
    assert color_for(0, 1) == (30, 144, 255)
    assert len(set(PALETTE)) == len(PALETTE)
    many = [color_for(i, 20) for i in range(20)]
    assert len(set(many)) == 20
    assert many[0][2] == 255 and many[0][0] < 100  # still blue first


def test_davis_palette_formula():
    assert DAVIS_PALETTE.shape == (256, 3)
    assert DAVIS_PALETTE[0].tolist() == [0, 0, 0]
    assert DAVIS_PALETTE[1].tolist() == [128, 0, 0]
    assert DAVIS_PALETTE[2].tolist() == [0, 128, 0]
    assert DAVIS_PALETTE[3].tolist() == [128, 128, 0]
    assert DAVIS_PALETTE[4].tolist() == [0, 0, 128]
    assert DAVIS_PALETTE[8].tolist() == [64, 0, 0]
    assert DAVIS_PALETTE[255].tolist() == [224, 224, 192]


# ---------------------------------------------------------------------------------------------------------------
# Overlays


def test_overlay_blends_inside_and_leaves_outside_untouched():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (720, 1280, 3), dtype=np.uint8)
    mask = _square(720, 1280, 100, 300, 200, 500)
    blue = np.array(PALETTE[0])
    out = overlay_frame(frame, [mask], [PALETTE[0]], opacity=0.5)
    assert out.shape == frame.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out[~mask], frame[~mask])
    # Every pixel inside moved toward blue.
    before = np.abs(frame[mask].astype(int) - blue).sum(axis=1)
    after = np.abs(out[mask].astype(int) - blue).sum(axis=1)
    assert (after <= before).all() and (after < before).mean() > 0.99
    # Deep inside: exactly the 50 % blend.
    expected = np.rint(frame[200, 350] * 0.5 + blue * 0.5)
    np.testing.assert_array_equal(out[200, 350], expected)
    # The outline is solid colour, 3 px wide at 720p, inside the mask.
    for y, x in [(100, 350), (102, 350), (299, 350), (200, 200), (200, 499)]:
        np.testing.assert_array_equal(out[y, x], blue)
    assert not (out[103, 350] == blue).all() or (frame[103, 350] == blue).all()


def test_overlay_options_and_validation():
    frame = np.full((40, 60, 3), 100, dtype=np.uint8)
    mask = _square(40, 60, 10, 30, 10, 30)
    same = overlay_frame(frame, [mask], [PALETTE[1]], opacity=0.0, outline=False)
    np.testing.assert_array_equal(same, frame)
    full = overlay_frame(frame, [mask], [PALETTE[1]], opacity=1.0, outline=False)
    assert (full[mask] == PALETTE[1]).all()
    # Later masks are drawn on top.
    both = overlay_frame(frame, [mask, mask], [PALETTE[1], PALETTE[2]], opacity=1.0, outline=False)
    assert (both[mask] == PALETTE[2]).all()
    with pytest.raises(ValueError):
        overlay_frame(frame, [mask[:10]], [PALETTE[0]])
    with pytest.raises(ValueError):
        overlay_frame(frame, [mask], [])


def test_legend_draws_colours_and_text_in_a_corner(clip):
    frame = clip.frames[0]
    labels = [
        "the girl in the blue skirt",
        "the boy jumping $on the bed$ with a very long description\nof him",
    ]
    colors = [color_for(0, 2), color_for(1, 2)]
    out = draw_legend(frame, labels, colors)
    assert out.shape == frame.shape
    for color in colors:
        assert np.all(out[:60, :270] == color, axis=-1).any(), color
    # Only the top-left corner changes.
    np.testing.assert_array_equal(out[100:], frame[100:])
    np.testing.assert_array_equal(out[:, 300:], frame[:, 300:])
    bottom_right = draw_legend(frame, labels, colors, corner="bottom-right")
    np.testing.assert_array_equal(bottom_right[:150], frame[:150])


def test_labels_are_cleaned_and_truncated():
    assert render.clean_label("a\nb\tc") == "a b c"
    long = "x" * 100
    assert len(render.clean_label(long)) == 40 and render.clean_label(long).endswith("...")


def test_overlay_video_frames_one_expression_is_blue_without_legend(clip):
    t, h, w = clip.frames.shape[:3]
    masks = np.zeros((t, h, w), dtype=bool)
    masks[:, 150:250, 300:400] = True
    frames = list(overlay_video_frames(iter(clip.frames), [masks], ["the girl"], opacity=0.5))
    assert len(frames) == t
    for src, out in zip(clip.frames, frames):
        np.testing.assert_array_equal(out[:100, :250], src[:100, :250])  # no legend
        np.testing.assert_array_equal(out[150, 350], PALETTE[0])  # top outline row is blue


def test_overlay_video_frames_two_expressions_get_a_legend(clip):
    t, h, w = clip.frames.shape[:3]
    a = np.zeros((t, h, w), dtype=bool)
    b = np.zeros((t, h, w), dtype=bool)
    a[:, 150:250, 300:400] = True
    b[:, 150:250, 100:200] = True
    frames = list(overlay_video_frames(clip.frames, [a, b], ["the girl", "the boy"]))
    assert len(frames) == t
    assert not np.array_equal(frames[0][:40, :150], clip.frames[0][:40, :150])
    np.testing.assert_array_equal(frames[0][150, 150], PALETTE[1])
    with pytest.raises(ValueError):
        list(overlay_video_frames(clip.frames, [a], ["one", "two"]))


def test_prior_view_shapes_and_heat(clip):
    frame = clip.frames[0]
    h, w = frame.shape[:2]
    prior = np.zeros((64, 64), dtype=np.float32)
    prior[32:64, 32:64] = 1.0  # bottom-right quarter certain
    mask = _square(h, w, 150, 250, 300, 400)
    view = prior_view(frame, prior, mask)
    assert view.shape == (h, 2 * w, 3) and view.dtype == np.uint8
    left, right = view[:, :w], view[:, w:]
    # Inferno is bright yellow at 1 and black at 0.
    assert left[200:, 300:].mean() > left[50:100, 50:200].mean() + 60
    expected_right = overlay_frame(frame, [mask], [PALETTE[0]])
    np.testing.assert_array_equal(right[60:], expected_right[60:])  # below the label
    assert not np.array_equal(right[:30, :120], expected_right[:30, :120])  # the label


def test_presence_timeline_png(tmp_path):
    t = np.arange(30) / 30.0
    path = presence_timeline_png(
        tmp_path / "plots" / "timeline.png",
        t,
        [np.sin(t * 6) * 3, np.full(30, -2.0)],
        [np.linspace(0, 0.2, 30), np.zeros(30)],
        ["_starts with underscore", "costs $5 and {braces}"],
    )
    with Image.open(path) as img:
        assert img.format == "PNG"
        assert img.size == (900, 500)
        pixels = np.asarray(img.convert("RGB"))
    # Both line colours are drawn.
    for color in (PALETTE[0], PALETTE[1]):
        assert np.all(pixels == color, axis=-1).sum() > 50
    assert [p.name for p in (tmp_path / "plots").iterdir()] == ["timeline.png"]
    with pytest.raises(ValueError):
        presence_timeline_png(tmp_path / "bad.png", t, [t], [t[:-1]], ["a"])


# ---------------------------------------------------------------------------------------------------------------
# Exports


def test_palette_zip_round_trip_with_overlaps(tmp_path):
    rng = np.random.default_rng(1)
    masks = _random_masks(rng, k=3, t=5, h=24, w=32)
    path = save_palette_pngs_zip(
        tmp_path / "masks.zip", masks, frame_names=[f"{i:05d}.jpg" for i in range(5)]
    )
    labels = load_palette_zip(path)
    expected = np.zeros((5, 24, 32), dtype=np.uint8)
    for k, m in enumerate(masks):
        expected[m] = k + 1  # later expressions win overlaps
    np.testing.assert_array_equal(labels, expected)
    assert (labels == 1).any() and (labels == 2).any() and (labels == 3).any()
    with zipfile.ZipFile(path) as zf:
        assert zf.namelist() == [f"{i:05d}.png" for i in range(5)]
        with Image.open(zf.open("00000.png")) as img:
            assert img.mode == "P"
            assert img.getpalette()[:9] == [0, 0, 0, 128, 0, 0, 0, 128, 0]


def test_palette_zip_names_cannot_escape(tmp_path):
    masks = [np.ones((1, 4, 4), dtype=bool)]
    path = save_palette_pngs_zip(tmp_path / "m.zip", masks, frame_names=["../../etc/evil.jpg"])
    with zipfile.ZipFile(path) as zf:
        assert zf.namelist() == ["evil.png"]


def test_coco_rle_round_trip(tmp_path):
    rng = np.random.default_rng(2)
    masks = _random_masks(rng, k=3, t=4, h=36, w=48)
    masks[1][2] = False  # an empty frame
    stamps = np.arange(4) / 10.0
    exprs = ["the dog", 'the woman\'s "red" hat', "le chien à gauche"]
    path = save_coco_rle_json(tmp_path / "rle.json", masks, exprs, stamps, 10.0, 48, 36)
    back = load_coco_rle_json(path)
    assert len(back) == 3
    for a, b in zip(masks, back):
        assert b.dtype == bool
        np.testing.assert_array_equal(a, b)
    doc = json.loads(path.read_text(encoding="utf-8"))
    assert (doc["width"], doc["height"], doc["num_frames"], doc["fps"]) == (48, 36, 4, 10.0)
    assert [e["text"] for e in doc["expressions"]] == exprs
    assert len(doc["annotations"]) == 12
    ann = doc["annotations"][5]
    assert (ann["expression_id"], ann["frame_index"], ann["timestamp_s"]) == (2, 1, 0.1)
    assert ann["expression"] == exprs[1]
    assert isinstance(ann["segmentation"]["counts"], str)
    assert ann["segmentation"]["size"] == [36, 48]
    # A plain pycocotools decode of the stored object gives the same mask.
    rle = {"size": ann["segmentation"]["size"], "counts": ann["segmentation"]["counts"].encode()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # pycocotools vs numpy 2, see export.py
        decoded = mask_utils.decode([rle])[:, :, 0]
    np.testing.assert_array_equal(decoded.astype(bool), masks[1][1])
    assert ann["area"] == int(masks[1][1].sum())


def test_coco_rle_validation(tmp_path):
    masks = [np.zeros((2, 8, 8), dtype=bool)]
    with pytest.raises(ValueError):
        save_coco_rle_json(tmp_path / "a.json", masks, ["x"], [0.0], 1.0, 8, 8)
    with pytest.raises(ValueError):
        save_coco_rle_json(tmp_path / "b.json", masks, ["x"], [0.0, 1.0], 1.0, 9, 8)
    assert list(tmp_path.iterdir()) == []


def test_binary_mask_pngs(tmp_path):
    rng = np.random.default_rng(3)
    masks = _random_masks(rng, k=2, t=3, h=16, w=20)
    folders = save_binary_mask_pngs(tmp_path / "out", masks, ["The Dog!", "../../escape"])
    assert [f.name for f in folders] == ["01_the_dog", "02_escape"]
    for folder, m in zip(folders, masks):
        assert folder.parent == tmp_path / "out"
        files = sorted(folder.iterdir())
        assert [f.name for f in files] == ["00000.png", "00001.png", "00002.png"]
        for t, f in enumerate(files):
            arr = np.asarray(Image.open(f))
            assert set(np.unique(arr)) <= {0, 255}
            np.testing.assert_array_equal(arr == 255, m[t])
