"""Instance-segmentation scores: the Cell Tracking Challenge SEG measure and detection AP at an IoU threshold.

All functions take two integer label images of the same shape, (Y, X) or (Z, Y, X), 0 = background, any ids
(they need not be consecutive). Overlaps come from one contingency table of the pixel pairs, never from a loop
over objects.

Conventions
-----------
- **SEG** (Cell Tracking Challenge): a reference object R is matched to the predicted object P that covers
  *strictly more than half* of R's pixels (at most one P can); its score is the Jaccard index |R∩P| / |R∪P|,
  0 if unmatched. SEG is the mean over reference objects. Predicted objects that match nothing cost nothing, so
  SEG suits sparse references. An empty reference has no object to score: SEG is NaN.
- **AP** (as in StarDist and Cellpose): a reference and a predicted object may match when IoU ≥ threshold; matches
  are one to one and as many as possible (for threshold > 0.5 the candidate pairs are unique anyway, otherwise
  ``scipy.optimize.linear_sum_assignment`` picks them, preferring higher IoU among equally many matches).
  AP = TP / (TP + FP + FN). Every unmatched prediction is a false positive, so AP needs a *dense* reference.
  Both images empty: AP is NaN (nothing to detect, nothing detected).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment
from skimage.segmentation import relabel_sequential

from cellcascade.errors import CellcascadeError

# Above this many table cells the contingency table is built from the sorted pixel pairs instead of a dense bincount.
_DENSE_TABLE_LIMIT = 20_000_000


@dataclass
class Overlaps:
    """Sparse contingency table of two label images.

    Attributes
    ----------
    reference_ids, prediction_ids : ndarray int64, shape (R,), (P,)
        The original ids, sorted ascending (index i stands for reference_ids[i]).
    reference_sizes, prediction_sizes : ndarray int64, shape (R,), (P,)
        Pixels per object.
    ref_index, pred_index : ndarray int64, shape (K,)
        Every pair of objects that share at least one pixel (indices into the id arrays).
    intersection : ndarray int64, shape (K,)
        Shared pixels of each pair.
    """

    reference_ids: np.ndarray
    prediction_ids: np.ndarray
    reference_sizes: np.ndarray
    prediction_sizes: np.ndarray
    ref_index: np.ndarray
    pred_index: np.ndarray
    intersection: np.ndarray

    @property
    def iou(self) -> np.ndarray:
        """float64, shape (K,): intersection over union of every overlapping pair."""
        union = self.reference_sizes[self.ref_index] + self.prediction_sizes[self.pred_index] - self.intersection
        return self.intersection / union


def _check_labels(array: np.ndarray, what: str) -> np.ndarray:
    array = np.asarray(array)
    if array.dtype == bool:
        array = array.astype(np.uint8)
    if array.dtype.kind not in "iu":
        raise CellcascadeError(f"the {what} must be an integer label image, found dtype {array.dtype}")
    if array.ndim not in (2, 3):
        raise CellcascadeError(f"the {what} must be 2D (Y, X) or 3D (Z, Y, X), found shape {array.shape}")
    if array.size and array.min() < 0:
        raise CellcascadeError(f"the {what} has negative labels")
    return array


def label_overlaps(reference: np.ndarray, prediction: np.ndarray) -> Overlaps:
    """Contingency table of two label images: object sizes and the pixel count of every overlapping pair.

    Parameters
    ----------
    reference, prediction : ndarray int, same shape (Y, X) or (Z, Y, X)
        Instance labels, 0 = background.

    Returns
    -------
    Overlaps

    Examples
    --------
    >>> a = np.array([[1, 1, 0], [0, 0, 0]])
    >>> b = np.array([[0, 7, 7], [0, 0, 0]])
    >>> table = label_overlaps(a, b)
    >>> table.intersection.tolist(), table.iou.tolist()
    ([1], [0.3333333333333333])
    """
    reference = _check_labels(reference, "reference")
    prediction = _check_labels(prediction, "prediction")
    if reference.shape != prediction.shape:
        raise CellcascadeError(f"reference shape {reference.shape} and prediction shape {prediction.shape} differ")
    ref, ref_map, _ = relabel_sequential(reference)
    pred, pred_map, _ = relabel_sequential(prediction)
    ref = ref.ravel().astype(np.int64)
    pred = pred.ravel().astype(np.int64)
    n_ref = int(ref.max(initial=0))
    n_pred = int(pred.max(initial=0))
    # relabel_sequential keeps the order of ids, so new id k stands for the k-th smallest original id
    reference_ids = np.asarray(ref_map.in_values, dtype=np.int64)
    prediction_ids = np.asarray(pred_map.in_values, dtype=np.int64)
    reference_ids = np.sort(reference_ids[reference_ids != 0])
    prediction_ids = np.sort(prediction_ids[prediction_ids != 0])
    reference_sizes = np.bincount(ref, minlength=n_ref + 1)[1:].astype(np.int64)
    prediction_sizes = np.bincount(pred, minlength=n_pred + 1)[1:].astype(np.int64)

    both = (ref > 0) & (pred > 0)
    codes = (ref[both] - 1) * n_pred + (pred[both] - 1)
    if n_ref * n_pred <= _DENSE_TABLE_LIMIT:
        counts = np.bincount(codes, minlength=n_ref * n_pred)
        pair_codes = np.flatnonzero(counts)
        intersection = counts[pair_codes]
    else:
        pair_codes, intersection = np.unique(codes, return_counts=True)
    return Overlaps(
        reference_ids=reference_ids,
        prediction_ids=prediction_ids,
        reference_sizes=reference_sizes,
        prediction_sizes=prediction_sizes,
        ref_index=(pair_codes // max(n_pred, 1)).astype(np.int64),
        pred_index=(pair_codes % max(n_pred, 1)).astype(np.int64),
        intersection=intersection.astype(np.int64),
    )


def _seg_matches(table: Overlaps) -> np.ndarray:
    """SEG's match rule per overlapping pair of `table`: the prediction covers more than half the reference object."""
    return 2 * table.intersection > table.reference_sizes[table.ref_index]


def seg_per_object(reference: np.ndarray, prediction: np.ndarray) -> dict[int, float]:
    """The SEG Jaccard index of every reference object (see the module notes).

    Parameters
    ----------
    reference, prediction : ndarray int, same shape (Y, X) or (Z, Y, X)
        Instance labels, 0 = background; the reference may be sparse.

    Returns
    -------
    dict
        Reference id -> Jaccard index in [0, 1] (0 when no predicted object covers more than half of it).
        Empty for an empty reference. Pool these values over images to get a dataset's SEG.

    Examples
    --------
    >>> ref = np.zeros((4, 4), int); ref[:2, :2] = 5
    >>> pred = np.zeros((4, 4), int); pred[:2, :3] = 1
    >>> seg_per_object(ref, pred)
    {5: 0.6666666666666666}
    """
    table = label_overlaps(reference, prediction)
    jaccard = np.zeros(len(table.reference_ids))
    matched = _seg_matches(table)
    jaccard[table.ref_index[matched]] = table.iou[matched]
    return {int(i): float(j) for i, j in zip(table.reference_ids, jaccard)}


def matched_size_ratios(reference: np.ndarray, prediction: np.ndarray) -> dict[int, float]:
    """Predicted over reference size of every reference object that SEG matches: are boundaries too wide or tight?

    Parameters
    ----------
    reference, prediction : ndarray int, same shape (Y, X) or (Z, Y, X)
        Instance labels, 0 = background.

    Returns
    -------
    dict
        Reference id -> size of the predicted object covering more than half of it / its own size (> 1: the
        prediction is larger). Objects without such a prediction are left out.

    Examples
    --------
    >>> ref = np.zeros((4, 4), int); ref[:2, :2] = 5
    >>> pred = np.zeros((4, 4), int); pred[:2, :3] = 1
    >>> matched_size_ratios(ref, pred)
    {5: 1.5}
    """
    table = label_overlaps(reference, prediction)
    matched = _seg_matches(table)
    ref_index, pred_index = table.ref_index[matched], table.pred_index[matched]
    ratios = table.prediction_sizes[pred_index] / table.reference_sizes[ref_index]
    return {int(table.reference_ids[i]): float(r) for i, r in zip(ref_index, ratios)}


def seg_per_cell_kind(reference: np.ndarray, prediction: np.ndarray, small_fraction: float = 1 / 3) -> list[dict]:
    """Where an image's SEG is lost: every reference object with its size, its kind and its SEG Jaccard index.

    Parameters
    ----------
    reference, prediction : ndarray int, same shape (Y, X) or (Z, Y, X)
        Instance labels, 0 = background.
    small_fraction : float
        A whole object is "small" below this fraction of the median size of the whole objects.

    Returns
    -------
    list of dict
        One per reference object, by id: ``label``, ``size`` (pixels), ``kind`` ("cut": touches the image edge;
        "small"; "whole": any other) and ``jaccard`` (as in :func:`seg_per_object`).

    Examples
    --------
    >>> ref = np.zeros((8, 8), int); ref[0:2, 0:2] = 1; ref[3:7, 3:7] = 2; ref[5, 1] = 3
    >>> [(c["label"], c["kind"], c["jaccard"]) for c in seg_per_cell_kind(ref, ref)]
    [(1, 'cut', 1.0), (2, 'whole', 1.0), (3, 'small', 1.0)]
    """
    reference = _check_labels(reference, "reference")
    jaccard = seg_per_object(reference, prediction)
    ids, sizes = np.unique(reference[reference > 0], return_counts=True)
    faces = [np.take(reference, index, axis=axis).ravel() for axis in range(reference.ndim) for index in (0, -1)]
    cut = np.isin(ids, np.concatenate(faces))
    small = small_fraction * np.median(sizes[~cut]) if (~cut).any() else 0.0
    return [{"label": int(i), "size": int(n), "jaccard": jaccard[int(i)],
             "kind": "cut" if c else ("small" if n < small else "whole")} for i, n, c in zip(ids, sizes, cut)]


def seg_score(reference: np.ndarray, prediction: np.ndarray) -> float:
    """The Cell Tracking Challenge SEG measure of one image: mean Jaccard index over reference objects.

    Parameters
    ----------
    reference, prediction : ndarray int, same shape (Y, X) or (Z, Y, X)
        Instance labels, 0 = background.

    Returns
    -------
    float
        In [0, 1]; 0 for an empty prediction; NaN for an empty reference (no object to score).

    Examples
    --------
    >>> ref = np.zeros((4, 4), int); ref[:2, :2] = 1; ref[2:, 2:] = 2
    >>> seg_score(ref, ref * 3)
    1.0
    """
    per_object = seg_per_object(reference, prediction)
    if not per_object:
        return float("nan")
    return float(np.mean(list(per_object.values())))


def _match(table: Overlaps, iou_threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One-to-one matches with IoU ≥ threshold, as many as possible: (ref_index, pred_index, iou) of the matches."""
    iou = table.iou
    keep = iou >= iou_threshold
    rows, cols, values = table.ref_index[keep], table.pred_index[keep], iou[keep]
    if len(np.unique(rows)) == len(rows) and len(np.unique(cols)) == len(cols):
        return rows, cols, values  # the candidates already form a matching (always so above IoU 0.5)
    # Assignment on the objects that have a candidate: maximise the number of matches, then their summed IoU.
    row_ids, row_pos = np.unique(rows, return_inverse=True)
    col_ids, col_pos = np.unique(cols, return_inverse=True)
    costs = np.zeros((len(row_ids), len(col_ids)))
    n_min = min(len(row_ids), len(col_ids))
    costs[row_pos, col_pos] = -1.0 - values / (2 * n_min)
    chosen_rows, chosen_cols = linear_sum_assignment(costs)
    ok = costs[chosen_rows, chosen_cols] < 0
    chosen_rows, chosen_cols = chosen_rows[ok], chosen_cols[ok]
    lookup = {(r, c): v for r, c, v in zip(row_pos, col_pos, values)}
    matched_values = np.array([lookup[(r, c)] for r, c in zip(chosen_rows, chosen_cols)], dtype=float)
    return row_ids[chosen_rows], col_ids[chosen_cols], matched_values


def detection_scores(reference: np.ndarray, prediction: np.ndarray, iou_threshold: float = 0.5) -> dict:
    """Object detection counts and scores at one IoU threshold (one-to-one matching, see the module notes).

    Parameters
    ----------
    reference, prediction : ndarray int, same shape (Y, X) or (Z, Y, X)
        Instance labels, 0 = background; the reference must be dense (every cell annotated).
    iou_threshold : float
        A pair may match when its IoU is at least this, in (0, 1].

    Returns
    -------
    dict
        tp, fp, fn (int); precision = TP/(TP+FP), recall = TP/(TP+FN), f1, ap = TP/(TP+FP+FN),
        mean_matched_iou (floats; NaN where the denominator is 0).

    Examples
    --------
    >>> ref = np.zeros((4, 4), int); ref[:2, :2] = 1; ref[2:, 2:] = 2
    >>> detection_scores(ref, (ref == 1).astype(int))["ap"]
    0.5
    """
    if not 0 < iou_threshold <= 1:
        raise CellcascadeError(f"iou_threshold must be in (0, 1], not {iou_threshold}")
    table = label_overlaps(reference, prediction)
    _, _, matched_iou = _match(table, iou_threshold)
    tp = len(matched_iou)
    fp = len(table.prediction_ids) - tp
    fn = len(table.reference_ids) - tp

    def ratio(a: float, b: float) -> float:
        return float(a / b) if b else float("nan")

    return {
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "precision": ratio(tp, tp + fp),
        "recall": ratio(tp, tp + fn),
        "f1": ratio(2 * tp, 2 * tp + fp + fn),
        "ap": ratio(tp, tp + fp + fn),
        "mean_matched_iou": float(np.mean(matched_iou)) if tp else float("nan"),
    }


def average_precision(reference: np.ndarray, prediction: np.ndarray, iou_threshold: float = 0.5) -> float:
    """Detection AP = TP / (TP + FP + FN) at an IoU threshold (see :func:`detection_scores`).

    Examples
    --------
    >>> ref = np.zeros((4, 4), int); ref[:2, :2] = 1
    >>> average_precision(ref, ref)
    1.0
    """
    return detection_scores(reference, prediction, iou_threshold)["ap"]
