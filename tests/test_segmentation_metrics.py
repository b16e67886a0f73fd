"""Known answers for SEG and AP, and agreement with Cellpose's and py-ctcmetrics' implementations."""

import math

import numpy as np
import pytest
import tifffile
from skimage.segmentation import expand_labels, relabel_sequential

from cellcascade.errors import CellcascadeError
from cellcascade.evaluation.segmentation_metrics import (
    average_precision,
    detection_scores,
    label_overlaps,
    matched_size_ratios,
    seg_per_cell_kind,
    seg_per_object,
    seg_score,
)


def disc(shape, centre, radius):
    yy, xx = np.indices(shape)
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2


def square(shape, top, left, side, height=None):
    out = np.zeros(shape, dtype=bool)
    out[top : top + (height or side), left : left + side] = True
    return out


def test_shifted_discs_jaccard_from_pixel_counts():
    a = disc((64, 64), (32, 30), 12)
    b = disc((64, 64), (32, 35), 12)  # shifted by 5 px
    expected = (a & b).sum() / (a | b).sum()
    assert 0.5 < expected < 0.8  # the shift keeps more than half of the disc covered
    ref, pred = a.astype(np.int32), b.astype(np.int32) * 4
    assert seg_score(ref, pred) == pytest.approx(expected, abs=1e-12)
    assert detection_scores(ref, pred)["mean_matched_iou"] == pytest.approx(expected, abs=1e-12)
    assert average_precision(ref, pred) == 1.0


def test_shifted_squares_exact_fractions():
    ref = square((40, 40), 5, 5, 10).astype(np.uint16)
    shifted3 = square((40, 40), 5, 8, 10).astype(np.uint16)  # overlap 70, union 130
    shifted4 = square((40, 40), 5, 9, 10).astype(np.uint16)  # overlap 60, union 140: SEG matches, AP@0.5 does not
    assert seg_score(ref, shifted3) == pytest.approx(7 / 13, abs=1e-12)
    assert seg_score(ref, shifted4) == pytest.approx(60 / 140, abs=1e-12)
    assert detection_scores(ref, shifted4) == pytest.approx(
        {"tp": 0, "fp": 1, "fn": 1, "precision": 0.0, "recall": 0.0, "f1": 0.0, "ap": 0.0, "mean_matched_iou": math.nan},
        nan_ok=True,
    )
    assert average_precision(ref, shifted4, iou_threshold=0.4) == 1.0
    shifted6 = square((40, 40), 5, 11, 10).astype(np.uint16)  # covers 40 % of the reference: unmatched
    assert seg_score(ref, shifted6) == 0.0


def test_split_object():
    ref = square((30, 30), 5, 5, 20, height=10).astype(np.int32)  # 200 px
    halves = np.zeros_like(ref)
    halves[5:15, 5:15] = 1
    halves[5:15, 15:25] = 2
    assert seg_score(ref, halves) == 0.0  # each half covers exactly half: not strictly more
    uneven = np.zeros_like(ref)
    uneven[5:15, 5:17] = 1  # 120 px
    uneven[5:15, 17:25] = 2
    assert seg_score(ref, uneven) == pytest.approx(0.6)
    scores = detection_scores(ref, uneven)
    assert (scores["tp"], scores["fp"], scores["fn"], scores["ap"]) == (1, 1, 0, 0.5)


def test_merged_objects_match_one_to_one():
    ref = np.zeros((30, 30), np.int32)
    ref[5:15, 5:15] = 1
    ref[5:15, 15:25] = 2
    merged = (ref > 0).astype(np.int32)
    assert seg_per_object(ref, merged) == {1: 0.5, 2: 0.5}
    scores = detection_scores(ref, merged)  # both pairs have IoU exactly 0.5; only one may count
    assert (scores["tp"], scores["fp"], scores["fn"], scores["ap"]) == (1, 0, 1, 0.5)


def test_optimal_matching_below_half():
    # Greedy by IoU would pair A with X (0.43) and leave Y and B unmatched; the optimal matching pairs A-Y, B-X.
    ref = np.zeros((1, 30), np.int32)
    ref[0, 0:10] = 1  # A
    ref[0, 10:20] = 2  # B
    pred = np.zeros_like(ref)
    pred[0, 4:14] = 8  # X: IoU 6/14 with A, 4/16 with B
    pred[0, 0:4] = 3  # Y: IoU 4/10 with A
    scores = detection_scores(ref, pred, iou_threshold=0.2)
    assert (scores["tp"], scores["fp"], scores["fn"], scores["ap"]) == (2, 0, 0, 1.0)
    assert scores["mean_matched_iou"] == pytest.approx((0.4 + 0.25) / 2)
    assert detection_scores(ref, pred, iou_threshold=0.5)["tp"] == 0
    assert seg_score(ref, pred) == pytest.approx((6 / 14 + 0) / 2)


def test_matched_size_ratios_tell_wide_from_tight_boundaries_and_skip_misses():
    ref = np.zeros((40, 40), np.int32)
    ref[disc(ref.shape, (10, 10), 6)] = 4
    ref[disc(ref.shape, (28, 28), 6)] = 9
    ref[square(ref.shape, 0, 30, 4)] = 2
    wide = expand_labels(ref, 1)
    assert all(r > 1 for r in matched_size_ratios(ref, wide).values())
    assert matched_size_ratios(ref, ref * 3) == {2: 1.0, 4: 1.0, 9: 1.0}
    prediction = np.zeros_like(ref)
    prediction[ref == 2] = 1
    prediction[disc(ref.shape, (10, 10), 5)] = 6  # tighter than cell 4
    prediction[square(ref.shape, 26, 26, 4)] = 7  # 16 of cell 9's pixels: fewer than half, a miss
    ratios = matched_size_ratios(ref, prediction)
    assert set(ratios) == {2, 4} and ratios[2] == 1.0
    assert ratios[4] == pytest.approx(disc(ref.shape, (10, 10), 5).sum() / disc(ref.shape, (10, 10), 6).sum())


def test_seg_per_cell_kind_sorts_cells_and_keeps_the_seg_jaccards():
    ref = np.zeros((30, 30), np.int32)
    ref[square(ref.shape, 0, 10, 6)] = 7  # touches the top edge: cut
    ref[square(ref.shape, 10, 10, 8)] = 3  # 64 px, whole
    ref[square(ref.shape, 20, 2, 8)] = 12  # 64 px, whole
    ref[square(ref.shape, 22, 20, 3)] = 40  # 9 px < 64 / 3: small
    pred = np.zeros_like(ref)
    pred[square(ref.shape, 10, 10, 8, height=4)] = 1  # half of cell 3 only: not "more than half", Jaccard 0
    pred[square(ref.shape, 20, 2, 8)] = 2
    pred[square(ref.shape, 0, 10, 6, height=4)] = 5  # 24 of 36 px of the cut cell
    cells = seg_per_cell_kind(ref, pred)
    assert [(c["label"], c["size"], c["kind"]) for c in cells] == [
        (3, 64, "whole"), (7, 36, "cut"), (12, 64, "whole"), (40, 9, "small")]
    assert {c["label"]: c["jaccard"] for c in cells} == pytest.approx(seg_per_object(ref, pred))
    assert [c["jaccard"] for c in cells] == pytest.approx([0.0, 24 / 36, 1.0, 0.0])
    # a 3D volume: faces on every axis count as the edge
    volume = np.zeros((5, 6, 6), np.int32)
    volume[0, 2:4, 2:4] = 1
    volume[2:4, 2:4, 2:4] = 2
    assert [c["kind"] for c in seg_per_cell_kind(volume, volume)] == ["cut", "whole"]


def test_empty_prediction_and_empty_reference():
    ref = np.zeros((20, 20), np.int32)
    ref[2:8, 2:8] = 1
    ref[10:18, 10:18] = 2
    empty = np.zeros_like(ref)
    assert seg_score(ref, empty) == 0.0
    assert seg_per_object(ref, empty) == {1: 0.0, 2: 0.0}
    assert average_precision(ref, empty) == 0.0
    assert detection_scores(ref, empty)["fn"] == 2
    assert math.isnan(seg_score(empty, ref))
    assert seg_per_object(empty, ref) == {}
    assert average_precision(empty, ref) == 0.0  # two false positives
    assert math.isnan(average_precision(empty, empty))


def test_3d_cubes():
    ref = np.zeros((20, 20, 20), np.int32)
    ref[2:12, 2:12, 2:12] = 1
    pred = np.zeros_like(ref)
    pred[2:12, 2:12, 5:15] = 9  # overlap 700, union 1300
    assert seg_score(ref, pred) == pytest.approx(7 / 13)
    assert average_precision(ref, pred) == 1.0


def test_ids_need_not_be_consecutive_and_order_does_not_matter():
    ref = np.zeros((40, 40), np.int64)
    ref[2:10, 2:10] = 1
    ref[20:30, 5:15] = 2
    ref[5:15, 25:35] = 3
    pred = np.zeros_like(ref)
    pred[2:10, 3:11] = 1  # IoU 56/72
    pred[20:30, 5:13] = 2  # IoU 80/100
    renamed_ref = np.choose(ref, [0, 60000, 7, 1234]).astype(np.uint16)
    renamed_pred = np.choose(pred, [0, 5, 99999]).astype(np.int64)
    assert seg_score(renamed_ref, renamed_pred) == pytest.approx(seg_score(ref, pred))
    assert seg_score(ref, pred) == pytest.approx((56 / 72 + 0.8 + 0) / 3)
    assert seg_per_object(renamed_ref, renamed_pred) == pytest.approx({60000: 56 / 72, 7: 0.8, 1234: 0.0})
    assert detection_scores(renamed_ref, renamed_pred) == detection_scores(ref, pred)
    table = label_overlaps(renamed_ref, renamed_pred)
    assert table.reference_ids.tolist() == [7, 1234, 60000]
    assert table.prediction_ids.tolist() == [5, 99999]


def test_bad_inputs_raise_clear_errors():
    ref = np.zeros((8, 8), np.int32)
    with pytest.raises(CellcascadeError, match="shape"):
        seg_score(ref, np.zeros((8, 9), np.int32))
    with pytest.raises(CellcascadeError, match="integer"):
        seg_score(ref, np.zeros((8, 8), np.float32))
    with pytest.raises(CellcascadeError, match="negative"):
        seg_score(ref - 1, ref)
    with pytest.raises(CellcascadeError, match="2D"):
        seg_score(np.zeros(8, np.int32), np.zeros(8, np.int32))
    with pytest.raises(CellcascadeError, match="iou_threshold"):
        average_precision(ref, ref, iou_threshold=0.0)


def random_pair(seed, shape=(96, 96)):
    """A reference of touching blobs and a prediction that shifts, drops, renames and adds objects."""
    rng = np.random.default_rng(seed)
    seeds = np.zeros(shape, np.int32)
    n = 25
    seeds[rng.integers(0, shape[0], n), rng.integers(0, shape[1], n)] = rng.permutation(np.arange(1, n + 1)) * 3
    ref = expand_labels(seeds, distance=int(rng.integers(4, 8)))
    moved = np.roll(seeds, tuple(rng.integers(-2, 3, 2)), axis=(0, 1))
    pred = expand_labels(moved, distance=int(rng.integers(3, 8)))
    dropped = rng.choice(np.unique(pred)[1:], 3, replace=False)
    pred[np.isin(pred, dropped)] = 0
    extra = disc(shape, rng.integers(0, shape[0], 2), 5) & (pred == 0)
    pred[extra] = 500
    return ref, pred


@pytest.mark.slow  # importing cellpose.metrics takes ~8 s (numba)
def test_agrees_with_cellpose_average_precision():
    metrics = pytest.importorskip("cellpose.metrics", reason="cellpose is not installed: no cross-check of AP")
    thresholds = [0.3, 0.5, 0.75]
    for seed in range(6):
        ref, pred = random_pair(seed)
        # Cellpose counts the largest id as the number of objects: relabel to consecutive ids first
        ap, tp, fp, fn = metrics.average_precision(relabel_sequential(ref)[0], relabel_sequential(pred)[0], thresholds)
        for k, th in enumerate(thresholds):
            ours = detection_scores(ref, pred, iou_threshold=th)
            assert ours["ap"] == pytest.approx(float(ap[k]), abs=1e-6)
            assert (ours["tp"], ours["fp"], ours["fn"]) == (tp[k], fp[k], fn[k])


def test_agrees_with_py_ctcmetrics_seg(tmp_path):
    pytest.importorskip("sklearn", reason="py-ctcmetrics needs scikit-learn: no cross-check of SEG")
    pytest.importorskip("pandas", reason="py-ctcmetrics needs pandas: no cross-check of SEG")
    representations = pytest.importorskip(
        "ctc_metrics.utils.representations", reason="py-ctcmetrics is not installed: no cross-check of SEG"
    )
    from ctc_metrics.metrics.technical.seg import seg

    for seed in range(6):
        ref, pred = random_pair(seed)
        tifffile.imwrite(tmp_path / "ref.tif", ref.astype(np.uint16))
        tifffile.imwrite(tmp_path / "pred.tif", pred.astype(np.uint16))
        labels_ref, _, mapped_ref, _, iou = representations.match(str(tmp_path / "ref.tif"), str(tmp_path / "pred.tif"))
        theirs = seg([labels_ref], [iou])
        assert seg_score(ref, pred) == pytest.approx(theirs, abs=1e-6)
        ours = seg_per_object(ref, pred)
        assert {k for k, v in ours.items() if v > 0} == set(mapped_ref)
        assert [ours[k] for k in mapped_ref] == pytest.approx(iou, abs=1e-12)
