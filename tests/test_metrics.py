"""Tests of mpgsam2.metrics against hand-computed values and brute-force re-implementations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from mpgsam2.datasets.submission import evaluate_folders
from mpgsam2.export import DAVIS_PALETTE
from mpgsam2.metrics import (
    _bound_radius,
    _dilate_disk,
    db_eval_boundary,
    db_eval_iou,
    evaluate_sequences,
    f_measure,
    seg2bmap,
)


def square(h: int, w: int, y0: int, x0: int, n: int) -> np.ndarray:
    m = np.zeros((h, w), dtype=bool)
    m[y0 : y0 + n, x0 : x0 + n] = True
    return m


# ---------------------------------------------------------------------------------------------------------------
# Hand-computed cases


def test_empty_vs_empty():
    e = np.zeros((30, 40), dtype=bool)
    assert db_eval_iou(e, e) == 1.0
    assert db_eval_boundary(e, e) == 1.0


def test_empty_prediction_vs_object():
    gt = square(30, 40, 5, 5, 10)
    empty = np.zeros_like(gt)
    assert db_eval_iou(gt, empty) == 0.0
    assert db_eval_boundary(gt, empty) == 0.0  # precision 1, recall 0
    assert db_eval_boundary(empty, gt) == 0.0  # precision 0, recall 1


def test_empty_prediction_vs_full_frame_follows_davis():
    # seg2bmap finds no boundary in an all-foreground mask (nothing borders background), so DAVIS scores F = 1
    # here even though J = 0.
    full = np.ones((30, 40), dtype=bool)
    assert not seg2bmap(full).any()
    assert db_eval_iou(full, np.zeros_like(full)) == 0.0
    assert db_eval_boundary(full, np.zeros_like(full)) == 1.0


def test_identical_masks():
    m = square(50, 60, 10, 12, 20)
    assert db_eval_iou(m, m) == 1.0
    assert db_eval_boundary(m, m) == 1.0


def test_one_pixel_shift_within_tolerance():
    # 100x100 image: radius = ceil(0.008 * sqrt(100^2 + 100^2)) = ceil(1.13) = 2 px.
    # A 10x10 square shifted right by 1 px: intersection 10x9 = 90, union 100 + 100 - 90 = 110 -> J = 90/110.
    # Every boundary pixel moves by 1 px < 2 px, so all are matched -> F = 1.
    gt = square(100, 100, 40, 40, 10)
    pred = square(100, 100, 40, 41, 10)
    assert _bound_radius(gt.shape, 0.008) == 2
    assert db_eval_iou(gt, pred) == pytest.approx(90 / 110)
    assert db_eval_boundary(gt, pred) == pytest.approx(1.0)


def test_shift_beyond_tolerance():
    # 20x20 image: radius = ceil(0.008 * sqrt(800)) = ceil(0.226) = 1, a plus-shaped 5-pixel disk.
    # gt: 6x6 square at rows 5-10, cols 5-10; pred: the same square shifted right by 2 (cols 7-12).
    # J: intersection 6x4 = 24, union 36 + 36 - 24 = 48 -> J = 0.5.
    # seg2bmap of an n x n square is the outline of an (n+1) x (n+1) box shifted up-left by one pixel:
    #   gt box rows 4-10, cols 4-10; pred box rows 4-10, cols 6-12; 4 * 6 = 24 pixels each.
    # Precision (pred boundary pixels within 1 px, 4-connected, of the gt boundary):
    #   top row (row 4, cols 6-12): cols 6-10 lie on the gt top row, col 11 touches (4, 10) -> 6 of 7
    #   bottom row (row 10): likewise 6 of 7
    #   left column (col 6, rows 5-9): rows 5 and 9 touch (4, 6) and (10, 6) -> 2
    #   right column (col 12, rows 5-9): nearest gt column is 10, 2 px away -> 0
    #   -> 14 / 24. Recall is the mirror image -> 14 / 24. F = 2PR / (P + R) = 14/24 = 7/12.
    gt = square(20, 20, 5, 5, 6)
    pred = square(20, 20, 5, 7, 6)
    assert _bound_radius(gt.shape, 0.008) == 1
    assert seg2bmap(gt).sum() == 24
    assert db_eval_iou(gt, pred) == pytest.approx(0.5)
    assert db_eval_boundary(gt, pred) == pytest.approx(7 / 12)


def test_seg2bmap_square_outline():
    m = square(12, 12, 3, 4, 5)  # rows 3-7, cols 4-8
    b = seg2bmap(m)
    expected = np.zeros_like(m)
    expected[2:8, 3] = expected[2:8, 8] = True  # left outside, right inside
    expected[2, 3:9] = expected[7, 3:9] = True  # top outside, bottom inside
    np.testing.assert_array_equal(b, expected)
    with pytest.raises(ValueError, match="own size"):
        seg2bmap(m, width=24, height=24)


def test_bound_radius_on_davis_resolution():
    # 480p DAVIS frames: ceil(0.008 * sqrt(480^2 + 854^2)) = ceil(7.84) = 8.
    assert _bound_radius((480, 854), 0.008) == 8
    assert _bound_radius((480, 854), 3) == 3


# ---------------------------------------------------------------------------------------------------------------
# Against brute force


def _seg2bmap_loops(seg: np.ndarray) -> np.ndarray:
    """Straight from the definition, one pixel at a time."""
    h, w = seg.shape
    out = np.zeros_like(seg)

    def at(y: int, x: int) -> bool:
        return bool(seg[y, x]) if y < h and x < w else False

    for y in range(h):
        for x in range(w):
            if y == h - 1 and x == w - 1:
                continue
            if y == h - 1:
                out[y, x] = at(y, x) != at(y, x + 1)
            elif x == w - 1:
                out[y, x] = at(y, x) != at(y + 1, x)
            else:
                out[y, x] = (
                    at(y, x) != at(y, x + 1) or at(y, x) != at(y + 1, x) or at(y, x) != at(y + 1, x + 1)
                )
    return out


def _dilate_loops(mask: np.ndarray, r: int) -> np.ndarray:
    h, w = mask.shape
    out = np.zeros_like(mask)
    for y, x in zip(*np.nonzero(mask)):
        for dy in range(-r, r + 1):
            for dx in range(-r, r + 1):
                if dy * dy + dx * dx <= r * r and 0 <= y + dy < h and 0 <= x + dx < w:
                    out[y + dy, x + dx] = True
    return out


@pytest.mark.parametrize("seed", range(4))
def test_fast_boundary_ops_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    h, w = rng.integers(5, 30, 2)
    mask = rng.random((h, w)) < 0.4
    np.testing.assert_array_equal(seg2bmap(mask), _seg2bmap_loops(mask))
    sparse = rng.random((h, w)) < 0.05
    for r in (0, 1, 2, 3, 5):
        np.testing.assert_array_equal(_dilate_disk(sparse, r), _dilate_loops(sparse, r))


@pytest.mark.parametrize("seed", range(3))
def test_f_measure_matches_brute_force(seed):
    rng = np.random.default_rng(10 + seed)
    gt = np.zeros((60, 80), dtype=bool)
    pred = np.zeros((60, 80), dtype=bool)
    gt[rng.integers(0, 30) :, rng.integers(0, 40) : rng.integers(45, 80)] = True
    pred[rng.integers(0, 30) :, rng.integers(0, 40) : rng.integers(45, 80)] = True
    r = math.ceil(0.008 * math.hypot(60, 80))
    bg, bp = _seg2bmap_loops(gt), _seg2bmap_loops(pred)
    precision = (bp & _dilate_loops(bg, r)).sum() / bp.sum()
    recall = (bg & _dilate_loops(bp, r)).sum() / bg.sum()
    expected = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    assert f_measure(pred, gt) == pytest.approx(expected)


# ---------------------------------------------------------------------------------------------------------------
# Sequences, void pixels, folders


def test_per_frame_arrays_and_void():
    gt = np.stack([square(20, 20, 2, 2, 6), np.zeros((20, 20), bool)])
    pred = np.stack([square(20, 20, 2, 2, 6), square(20, 20, 2, 2, 6)])
    np.testing.assert_allclose(db_eval_iou(gt, pred), [1.0, 0.0])
    np.testing.assert_allclose(db_eval_boundary(gt, pred), [1.0, 0.0])
    # Marking the false positive as void makes the second frame empty vs empty.
    void = np.zeros_like(gt)
    void[1] = pred[1]
    np.testing.assert_allclose(db_eval_iou(gt, pred, void), [1.0, 1.0])
    np.testing.assert_allclose(db_eval_boundary(gt, pred, void), [1.0, 1.0])


def test_evaluate_sequences_label_maps():
    t, h, w = 4, 100, 100
    gt = np.zeros((t, h, w), dtype=np.uint8)
    pred = np.zeros((t, h, w), dtype=np.uint8)
    gt[:, 40:50, 40:50] = 1
    pred[:, 40:50, 41:51] = 1  # J = 90/110, F = 1 on every frame
    gt[:, 10:20, 10:20] = 2  # object 2 never predicted: J = 0, F = 0
    gt[0, 0:5, 0:5] = 255  # void, not an object
    res = evaluate_sequences(pred, gt)
    assert sorted(res["objects"]) == [1, 2]
    assert res["objects"][1]["J"] == pytest.approx(90 / 110)
    assert res["objects"][1]["F"] == pytest.approx(1.0)
    assert res["objects"][1]["J&F"] == pytest.approx((90 / 110 + 1) / 2)
    assert res["objects"][1]["J_recall"] == 1.0
    assert res["objects"][2]["J"] == 0.0 and res["objects"][2]["F"] == 0.0
    assert res["J"] == pytest.approx(90 / 110 / 2)
    assert res["F"] == pytest.approx(0.5)
    assert res["J&F"] == pytest.approx((res["J"] + res["F"]) / 2)
    assert res["num_frames"] == 4 and len(res["objects"][1]["J_per_frame"]) == 4
    # The same data as per-object boolean lists gives the same numbers.
    as_lists = evaluate_sequences([pred == 1, pred == 2], [gt == 1, gt == 2])
    assert as_lists["J"] == pytest.approx(res["J"]) and as_lists["F"] == pytest.approx(res["F"])


def test_evaluate_sequences_skip_first_last_and_hallucinations():
    t = 5
    gt = np.zeros((t, 20, 20), dtype=np.uint8)
    gt[:, 5:10, 5:10] = 1
    pred = gt.copy()
    pred[0] = 0  # wrong only on the first frame
    pred[:, 15:18, 15:18] = 3  # an object that is not in the ground truth
    res = evaluate_sequences(pred, gt, skip_first_last=True)
    assert res["num_frames"] == 3
    assert res["objects"][1]["J"] == 1.0
    assert res["objects"][3]["J"] == 0.0  # penalised
    only_gt = evaluate_sequences(pred, gt, object_ids=[1])
    assert list(only_gt["objects"]) == [1]
    assert only_gt["objects"][1]["J"] == pytest.approx(4 / 5)


def _write_palette_png(path, labels: np.ndarray) -> None:
    img = Image.fromarray(labels.astype(np.uint8))
    img.putpalette(DAVIS_PALETTE.reshape(-1).tolist())
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


def test_evaluate_folders(tmp_path):
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    for video, shift in (("dogs", 1), ("cups", 0)):
        for i in range(3):
            gt = np.zeros((100, 100), dtype=np.uint8)
            gt[40:50, 40:50] = 1
            pred = np.zeros_like(gt)
            pred[40:50, 40 + shift : 50 + shift] = 1
            _write_palette_png(gt_dir / video / f"{i:05d}.png", gt)
            _write_palette_png(pred_dir / video / f"{i:05d}.png", pred)
        # An extra predicted frame without ground truth is ignored.
        _write_palette_png(pred_dir / video / "00099.png", np.zeros((100, 100), np.uint8))
    res = evaluate_folders(pred_dir, gt_dir)
    assert res["num_videos"] == 2 and res["num_objects"] == 2
    assert res["videos"]["dogs"]["J"] == pytest.approx(90 / 110)
    assert res["videos"]["cups"]["J"] == 1.0
    assert res["J"] == pytest.approx((90 / 110 + 1) / 2)
    assert res["F"] == pytest.approx(1.0)
    (pred_dir / "cups" / "00001.png").unlink()
    with pytest.raises(FileNotFoundError, match="00001.png"):
        evaluate_folders(pred_dir, gt_dir)
