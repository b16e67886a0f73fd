"""Segmentation benchmark: splits, annotation budget, the Cellpose segmenter, and the benchmark's outputs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import tifffile
from scipy import ndimage as ndi
from skimage.segmentation import expand_labels

from cellcascade.data import AnnotatedImage, load_sample
from cellcascade.errors import CellcascadeError
from cellcascade.evaluation.benchmark import MASK_THRESHOLD_GRID, RESULT_FILES, run_benchmark, threshold_grid
from cellcascade.evaluation.segmenters import (
    Checkpoint,
    CellposeSegmenter,
    apply_normalization,
    label_diameter,
    normalize_percentile,
    relabel,
    unpad_masks,
)
from cellcascade.evaluation.splits import choose_budget, choose_patch, fill_unannotated, split_train_test


def discs(shape, centres, radius, start=1):
    """Label image with one disc per centre (ids start, start+1, …)."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    labels = np.zeros(shape, np.int32)
    for i, (r, c) in enumerate(centres):
        labels[(yy - r) ** 2 + (xx - c) ** 2 <= radius**2] = start + i
    return labels


def grid_item(shape=(96, 192), spacing=16, radius=5, dense=True, name="grid"):
    """A dense grid of bright, blurred, noisy discs on a dim background."""
    centres = [(r, c) for r in range(spacing // 2, shape[0], spacing) for c in range(spacing // 2, shape[1], spacing)]
    labels = discs(shape, centres, radius)
    clean = ndi.gaussian_filter(10 + 100 * (labels > 0).astype(np.float32), 1.0)
    image = np.random.default_rng(0).poisson(clean).astype(np.float32)
    return AnnotatedImage(image, labels, name=name, dense=dense)


# ------------------------------------------------------------------ splits


def test_right_half_split_keeps_test_pixels_out_of_training():
    shape = (64, 128)
    labels = discs(shape, [(20, 20), (40, 60), (30, 100), (50, 110)], 6)
    columns = np.broadcast_to(np.arange(shape[1], dtype=np.float32), shape).copy()  # value = column index
    split = split_train_test([AnnotatedImage(columns, labels, "img", dense=True)], "auto")
    assert split.train[0].image.max() < 64 <= split.test[0].image.min()
    assert split.train[0].labels.shape == split.test[0].labels.shape == (64, 64)
    # the disc at column 60 (radius 6) is cut by the split line: each part keeps its own pixels, relabelled 1..N
    assert split.train[0].labels.max() == 2 and split.test[0].labels.max() == 3


def test_frame_split_by_count_names_and_auto():
    items = [grid_item(name=f"t{i}") for i in range(6)]
    assert [i.name for i in split_train_test(items, "auto").train] == ["t0", "t1"]
    assert [i.name for i in split_train_test(items, 2).test] == ["t4", "t5"]
    split = split_train_test(items, ["t1", "t3"])
    assert [i.name for i in split.test] == ["t1", "t3"] and len(split.train) == 4
    with pytest.raises(CellcascadeError, match="not among"):
        split_train_test(items, ["t9"])
    with pytest.raises(CellcascadeError, match="at least one"):
        split_train_test(items, 6)
    with pytest.raises(CellcascadeError, match="test must be"):
        split_train_test(items, "left")


# ------------------------------------------------------------------ budget


def test_choose_patch_finds_the_smallest_square_with_k_whole_cells():
    labels = np.zeros((40, 40), int)
    labels[2:6, 2:6], labels[2:6, 10:14], labels[30:34, 30:34] = 1, 2, 3
    row, col, side, whole, cut = choose_patch(labels, 2)
    assert side == 12 and whole == 2 and cut == 0
    window = labels[row : row + side, col : col + side]
    assert set(np.unique(window)) == {0, 1, 2}
    row, col, side, whole, cut = choose_patch(labels, 2, margin=2)  # 2 px of context around whole cells
    assert (row, col, side, whole) == (0, 0, 16, 2)


def test_budget_on_the_sample_holds_about_k_cells_and_validation_is_held_back():
    split = split_train_test(load_sample())
    budget = choose_budget(split.train, k=15)
    assert 15 <= budget.n_whole <= 17
    assert budget.image.shape == budget.labels.shape == (budget.box[2],) * 2
    assert budget.image.dtype == np.float32 and not budget.filled.any()  # dense: nothing filled
    row, col, side = budget.box
    (validation,) = budget.validation
    # no validation cell touches the patch, and the ignore mask covers the patch
    assert not validation.labels[row : row + side, col : col + side].any()
    assert budget.validation_ignore[0][row : row + side, col : col + side].all()
    n_train = split.train[0].labels.max()
    assert validation.labels.max() == n_train - budget.n_whole - budget.n_cut
    assert 15 < budget.diameter < 30


def test_budget_too_large_for_validation_is_refused():
    item = AnnotatedImage(np.ones((40, 40), np.float32), discs((40, 40), [(10, 10), (30, 30)], 4), "two", dense=True)
    with pytest.raises(CellcascadeError, match="validation"):
        choose_budget([item], k=2)
    with pytest.raises(CellcascadeError, match="at least 1"):
        choose_budget([item], k=0)


def test_fill_replaces_unannotated_cells_only():
    shape = (80, 80)
    both = discs(shape, [(20, 20), (55, 55)], 8)
    rng = np.random.default_rng(0)
    image = (0.05 * rng.standard_normal(shape) + (both > 0)).astype(np.float32)
    annotated = np.where(both == 1, 1, 0)  # the second disc is an unannotated cell
    filled_image, filled = fill_unannotated(image, annotated, diameter=16, rng=rng)
    assert filled[both == 2].all() and not filled[annotated > 0].any()
    assert filled_image[both == 2].mean() < 0.2  # now looks like background
    np.testing.assert_array_equal(filled_image[annotated > 0], image[annotated > 0])


def test_sparse_budget_fills_unannotated_cells_in_the_patch():
    item = grid_item(dense=False)
    labels = item.labels.copy()
    per_row = 192 // 16
    row, col = np.divmod(labels - 1, per_row)
    labels[(labels > 0) & ((row + col) % 2 == 1)] = 0  # checkerboard: half the cells are not annotated
    sparse = AnnotatedImage(item.image, labels, "sparse", dense=False)
    budget = choose_budget([sparse], k=4)
    assert budget.filled.any() and budget.notes
    row, col, side = budget.box
    unannotated = (item.labels[row : row + side, col : col + side] > 0) & (budget.labels == 0)
    # only whole unannotated cells are certain to be detected; most of their pixels are filled
    assert budget.filled[unannotated].mean() > 0.8
    assert budget.image[unannotated].mean() < 0.3


# ------------------------------------------------------------------ segmenter


def test_normalisation_and_helpers():
    lo_hi = normalize_percentile(np.arange(101.0))
    assert lo_hi == (1.0, 99.0)
    assert apply_normalization(np.array([1.0, 99.0]), lo_hi).tolist() == [0.0, 1.0]
    assert normalize_percentile(np.zeros(10))[1] > normalize_percentile(np.zeros(10))[0]
    assert relabel(np.array([[0, 7], [183, 7]])).tolist() == [[0, 1], [2, 1]]
    assert label_diameter(discs((50, 50), [(25, 25)], 10)) == pytest.approx(20, abs=1)


def normalized_grid():
    """A 64² grid item's image, normalised as the benchmark does (float32), and its labels (int32)."""
    item = grid_item(shape=(64, 64))
    return apply_normalization(item.image, normalize_percentile(item.image)), item.labels


@pytest.mark.slow
def test_cellpose_segmenter_trains_deterministically_and_predicts_labels(tmp_path):
    image, labels = normalized_grid()
    segmenter = CellposeSegmenter(tile=32, batch_size=2, diam_mean=17.0)
    first = segmenter.train([image], [labels], steps=3, seed=0, work_dir=tmp_path / "a", checkpoints=[1])
    again = segmenter.train([image], [labels], steps=3, seed=0, work_dir=tmp_path / "b", checkpoints=[1])
    other = segmenter.train([image], [labels], steps=3, seed=1, work_dir=tmp_path / "c", checkpoints=[])
    assert [c.step for c in first] == [1, 3] and all(c.path.exists() for c in first)
    assert first[-1].path.read_bytes() == again[-1].path.read_bytes()
    assert first[-1].path.read_bytes() != other[-1].path.read_bytes()
    (masks,) = segmenter.predict(first[-1], [image], diameter=label_diameter(labels))
    assert masks.shape == image.shape and masks.dtype == np.int32
    assert set(np.unique(masks)) == set(range(masks.max() + 1))  # consecutive ids
    # Cellpose's mask thresholds reach it: at logit -20 every pixel may seed a cell (and flow threshold 0 drops no
    # mask), so some masks survive its minimum size; at +20 no pixel is a cell
    (loose,) = segmenter.predict(first[-1], [image], diameter=label_diameter(labels), cellprob_threshold=-20.0,
                                 flow_threshold=0.0)
    (strict,) = segmenter.predict(first[-1], [image], diameter=label_diameter(labels), cellprob_threshold=20.0)
    assert loose.max() > 0 and strict.max() == 0
    with pytest.raises(CellcascadeError, match="flow_threshold"):
        segmenter.predict(first[-1], [image], diameter=10.0, flow_threshold=-1.0)


@pytest.mark.slow
def test_predict_each_gives_cellposes_own_masks_for_every_threshold_pair(tmp_path):
    from cellcascade.evaluation.segmenters import _load_weights

    image, labels = normalized_grid()
    diameter = label_diameter(labels)
    segmenter = CellposeSegmenter(tile=32, batch_size=2)
    (checkpoint,) = segmenter.train([image], [labels], steps=3, seed=0, work_dir=tmp_path, checkpoints=[])
    pairs = [(-20.0, 0.0), (-2.0, 0.8), (0.0, 0.4)]
    options = [dict(cellprob_threshold=c, flow_threshold=f) for c, f in pairs]
    each = segmenter.predict_each(checkpoint, [image, image[:, ::-1].copy()], diameter=diameter, mask_options=options)
    assert len(each) == len(pairs) and all(len(per_option) == 2 for per_option in each)
    assert each[0][0].max() > 0  # at logit -20 some masks survive, so the comparison below is not of empty images
    model = segmenter._new_model()  # Cellpose's own eval, with the same weights
    _load_weights(model.net, checkpoint.path)
    for (cellprob, flow), per_option in zip(pairs, each):
        for picture, masks in zip([image, image[:, ::-1].copy()], per_option):
            expected = model.eval(picture, channels=None, normalize={"normalize": False}, diameter=diameter,
                                  cellprob_threshold=cellprob, flow_threshold=flow)[0]
            np.testing.assert_array_equal(masks, relabel(expected))
    # predict is predict_each with one pair; test-time augmentation changes the flows, deterministically
    (single,) = segmenter.predict(checkpoint, [image], diameter=diameter, cellprob_threshold=-20.0, flow_threshold=0.0)
    np.testing.assert_array_equal(single, each[0][0])
    augmented = CellposeSegmenter(tile=32, batch_size=2, test_augment=True)
    (tta,) = augmented.predict(checkpoint, [image], diameter=diameter, cellprob_threshold=-20.0, flow_threshold=0.0)
    (again,) = augmented.predict(checkpoint, [image], diameter=diameter, cellprob_threshold=-20.0, flow_threshold=0.0)
    assert tta.shape == image.shape and not np.array_equal(tta, single)
    np.testing.assert_array_equal(tta, again)
    with pytest.raises(CellcascadeError, match="unknown mask option"):
        segmenter.predict_each(checkpoint, [image], diameter=diameter, mask_options=[dict(niter=5)])
    # a mirror margin: Cellpose's masks of the mirrored image, cut back to the image (one more network pass)
    # (at 1.5 × the diameter this 3-step network draws separate cells rather than one mask over everything)
    mirrored = dict(cellprob_threshold=0.0, flow_threshold=0.0, border_padding=8)
    plain, padded = segmenter.predict_each(checkpoint, [image], diameter=1.5 * diameter,
                                           mask_options=[dict(cellprob_threshold=0.0, flow_threshold=0.0), mirrored])
    expected = model.eval(np.pad(image, 8, mode="reflect"), channels=None, normalize={"normalize": False},
                          diameter=1.5 * diameter, cellprob_threshold=0.0, flow_threshold=0.0)[0]
    assert padded[0].shape == image.shape and padded[0].max() > 1 and plain[0].max() > 1
    np.testing.assert_array_equal(padded[0], unpad_masks(expected, 8))
    for bad in (-1, 2.5, min(image.shape)):
        with pytest.raises(CellcascadeError, match="border_padding"):
            segmenter.predict_each(checkpoint, [image], diameter=diameter, mask_options=[dict(border_padding=bad)])


def test_unpadding_keeps_border_and_corner_cells_and_drops_mirror_images():
    labels = np.zeros((20, 20), np.int32)
    labels[5:12, 0:3] = 1  # cut by the left border
    labels[0:3, 16:20] = 2  # cut by the top-right corner
    labels[8:14, 8:14] = 3  # whole, inside
    labels[15:19, 4:9] = 4  # whole, 1 px from the bottom border: its mirror image lies in the margin
    # what a segmenter finds in the image mirrored 6 px: cells 1 and 2 whole, and a mirror image of every cell
    mirrored = np.pad(labels, 6, mode="reflect")
    copies = ndi.label(np.isin(mirrored, [3, 4]))[0]
    found = np.where(np.isin(mirrored, [1, 2]), mirrored, np.where(copies > 0, copies + 10, 0))
    mirror_of_4 = found[27, 12]
    assert mirror_of_4 > 10 and found[23, 12] != mirror_of_4  # the copy beyond the bottom border, another object
    found[25, 10:15] = mirror_of_4  # which bleeds 1 row into the image (a segmentation error)
    out = unpad_masks(found, 6)
    assert out.shape == labels.shape and out.max() == 4  # the four cells, no mirror image
    np.testing.assert_array_equal(out > 0, labels > 0)
    np.testing.assert_array_equal(unpad_masks(labels, 0), labels)


@pytest.mark.slow
def test_an_ensemble_of_checkpoints_averages_their_flows_and_cell_probabilities(tmp_path):
    from cellpose import dynamics

    from cellcascade.evaluation.segmenters import _load_weights

    image, labels = normalized_grid()
    diameter = label_diameter(labels)
    segmenter = CellposeSegmenter(tile=32, batch_size=2)
    first, last = segmenter.train([image], [labels], steps=3, seed=0, work_dir=tmp_path, checkpoints=[1])
    options = [dict(cellprob_threshold=-20.0, flow_threshold=0.0), dict(cellprob_threshold=0.0, flow_threshold=0.4)]
    (alone,), _ = segmenter.predict_each(last, [image], diameter=diameter, mask_options=options)
    (twice,), _ = segmenter.predict_each([last, last], [image], diameter=diameter, mask_options=options)
    np.testing.assert_array_equal(twice, alone)  # two copies of one network: the same outputs
    (both,), _ = segmenter.predict_each([first, last], [image], diameter=diameter, mask_options=options)
    outputs = []
    for checkpoint in (first, last):  # the known answer: Cellpose's masks from the two networks' mean outputs
        model = segmenter._new_model()
        _load_weights(model.net, checkpoint.path)
        outputs.append(model.eval(image, channels=None, normalize={"normalize": False}, diameter=diameter,
                                  compute_masks=False)[1])
    expected = dynamics.resize_and_compute_masks(
        np.mean([o[1] for o in outputs], axis=0), np.mean([o[2] for o in outputs], axis=0),
        niter=diameter / segmenter.diam_mean * 200, cellprob_threshold=-20.0, flow_threshold=0.0, interp=True,
        min_size=15, max_size_fraction=0.4)
    assert both.max() > 0
    np.testing.assert_array_equal(both, relabel(expected))
    with pytest.raises(CellcascadeError, match="at least one checkpoint"):
        segmenter.predict_each([], [image], diameter=diameter, mask_options=options)


@pytest.mark.slow
def test_weight_averaged_checkpoints_do_not_depend_on_the_steps_that_follow(tmp_path):
    image, labels = normalized_grid()
    averaged = CellposeSegmenter(tile=32, batch_size=2, ema=0.9)
    long = averaged.train([image], [labels], steps=3, seed=0, work_dir=tmp_path / "long", checkpoints=[2])
    short = averaged.train([image], [labels], steps=2, seed=0, work_dir=tmp_path / "short", checkpoints=[])
    raw = CellposeSegmenter(tile=32, batch_size=2).train(
        [image], [labels], steps=2, seed=0, work_dir=tmp_path / "raw", checkpoints=[]
    )
    assert long[0].step == 2 and long[0].path.read_bytes() == short[-1].path.read_bytes()
    assert short[-1].path.read_bytes() != raw[-1].path.read_bytes()  # the average, not the last weights


def test_final_decay_follows_cellposes_schedule_counted_in_steps():
    segmenter = CellposeSegmenter(learning_rate=0.004, warmup=4, decay_steps=10)
    rates = [segmenter.learning_rate_at(step, 30) for step in range(1, 31)]
    # warm-up 1/4 .. 4/4, constant to step 20, then one halving per step (10 halvings over 10 steps)
    assert rates[:4] == pytest.approx([0.001, 0.002, 0.003, 0.004])
    assert rates[3:20] == [0.004] * 17
    assert rates[20:] == pytest.approx([0.004 / 2**k for k in range(1, 11)])
    constant = CellposeSegmenter(learning_rate=0.004, warmup=4)
    assert [constant.learning_rate_at(step, 30) for step in range(1, 31)] == rates[:20] + [0.004] * 10
    # a decay of 20 steps halves every second step
    slower = CellposeSegmenter(learning_rate=1.0, warmup=1, decay_steps=20)
    assert [slower.learning_rate_at(step, 30) for step in (10, 11, 12, 13, 30)] == [1.0, 0.5, 0.5, 0.25, 2.0**-10]


@pytest.mark.slow
def test_final_decay_changes_only_the_checkpoints_inside_it(tmp_path):
    image, labels = normalized_grid()
    decayed = CellposeSegmenter(tile=32, batch_size=2, decay_steps=2)
    constant = CellposeSegmenter(tile=32, batch_size=2)
    first = decayed.train([image], [labels], steps=4, seed=0, work_dir=tmp_path / "decayed", checkpoints=[2])
    second = constant.train([image], [labels], steps=4, seed=0, work_dir=tmp_path / "constant", checkpoints=[2])
    assert first[0].path.read_bytes() == second[0].path.read_bytes()  # step 2: before the decay
    assert first[-1].path.read_bytes() != second[-1].path.read_bytes()  # step 4: inside it
    with pytest.raises(CellcascadeError, match="longer than the run"):
        decayed.train([image], [labels], steps=1, seed=0, work_dir=tmp_path / "short", checkpoints=[])


@pytest.mark.slow
def test_final_draw_changes_only_the_checkpoints_after_it_starts(tmp_path):
    image, labels = normalized_grid()
    other, other_labels = np.zeros_like(image), labels * 0
    other_labels[:8, :8] = 1
    segmenter = CellposeSegmenter(tile=32, batch_size=2)
    kwargs = dict(steps=4, seed=0, checkpoints=[2], probabilities=[0.5, 0.5])
    plain = segmenter.train([image, other], [labels, other_labels], work_dir=tmp_path / "plain", **kwargs)
    tuned = segmenter.train([image, other], [labels, other_labels], work_dir=tmp_path / "tuned", final_steps=2,
                            final_probabilities=[1.0, 0.0], **kwargs)
    assert tuned[0].path.read_bytes() == plain[0].path.read_bytes()  # step 2: before the final draw
    assert tuned[-1].path.read_bytes() != plain[-1].path.read_bytes()  # step 4: the first image only
    with pytest.raises(CellcascadeError, match="final_probabilities"):
        segmenter.train([image, other], [labels, other_labels], work_dir=tmp_path / "bad", final_steps=2, **kwargs)
    with pytest.raises(CellcascadeError, match="final_probabilities must be"):
        segmenter.train([image, other], [labels, other_labels], work_dir=tmp_path / "bad", final_steps=2,
                        final_probabilities=[0.0, 0.0], **kwargs)
    with pytest.raises(CellcascadeError, match="final_steps"):
        segmenter.train([image, other], [labels, other_labels], work_dir=tmp_path / "bad", final_steps=5,
                        final_probabilities=[1.0, 0.0], **kwargs)

def test_weight_average_is_a_running_mean_then_an_exponential_average():
    import torch

    from cellcascade.evaluation.segmenters import _weight_average

    net = torch.nn.Sequential(torch.nn.Linear(1, 1, bias=False), torch.nn.BatchNorm1d(1))
    averaged = _weight_average(net, decay=0.5)  # running mean for the first 1 / (1 - 0.5) = 2 updates
    history = []
    for value in (1.0, 3.0, 8.0, 0.0):
        with torch.no_grad():
            net[0].weight.fill_(value)
        net[1].num_batches_tracked.fill_(int(value))
        averaged.update_parameters(net)
        history.append(averaged.module[0].weight.item())
        assert averaged.module[1].num_batches_tracked.item() == int(value)  # integer buffers follow the network
    # 1; mean(1, 3) = 2; then EMA with decay 0.5: 2 + (8 - 2) / 2 = 5; 5 + (0 - 5) / 2 = 2.5
    assert history == pytest.approx([1.0, 2.0, 5.0, 2.5])


def test_cellpose_segmenter_rejects_bad_settings(tmp_path):
    with pytest.raises(CellcascadeError, match="multiple of 16"):
        CellposeSegmenter(tile=40)
    with pytest.raises(CellcascadeError, match="ema"):
        CellposeSegmenter(ema=1.0)
    with pytest.raises(CellcascadeError, match="decay_steps"):
        CellposeSegmenter(decay_steps=-1)
    segmenter = CellposeSegmenter(tile=32, batch_size=1)
    item = grid_item(shape=(32, 32))
    with pytest.raises(CellcascadeError, match="checkpoints"):
        segmenter.train([item.image], [item.labels], steps=2, seed=0, work_dir=tmp_path, checkpoints=[5])
    with pytest.raises(CellcascadeError, match="as many"):
        segmenter.train([item.image], [], steps=2, seed=0, work_dir=tmp_path, checkpoints=[])


# ------------------------------------------------------------------ benchmark orchestration (fake segmenter)


class ThresholdSegmenter:
    """Stands in for Cellpose: records every training call and segments by thresholding."""

    name = "threshold"

    def __init__(self):
        self.calls = []

    def train(self, images, labels, *, steps, seed, work_dir, checkpoints, probabilities=None):
        self.calls.append({"images": [np.array(i) for i in images], "steps": steps, "seed": seed,
                           "probabilities": list(probabilities)})
        work_dir = Path(work_dir)
        work_dir.mkdir(parents=True, exist_ok=True)
        out = []
        for step in sorted(set(checkpoints) | {steps}):
            path = work_dir / f"{step}.txt"
            path.write_text(str(step))
            out.append(Checkpoint(step, path))
        return out

    def predict(self, checkpoint, images, *, diameter):
        # later checkpoints segment better: a threshold that falls with the step
        threshold = 0.5 if checkpoint.step >= 2 else 5.0
        return [relabel(ndi.label(image > threshold)[0]) for image in images]


class MaskOptionSegmenter(ThresholdSegmenter):
    """Segments well only with flow_threshold 0.8, and records the mask thresholds of every predict call."""

    def __init__(self):
        super().__init__()
        self.options = []

    def predict(self, checkpoint, images, *, diameter, cellprob_threshold=0.0, flow_threshold=0.4):
        self.options.append((cellprob_threshold, flow_threshold))
        threshold = 0.5 if flow_threshold == 0.8 else 5.0
        return [relabel(ndi.label(image > threshold)[0]) for image in images]


def test_tuned_mask_thresholds_are_chosen_on_validation_and_used_on_test(tmp_path):
    item = grid_item(shape=(96, 384))
    kwargs = dict(budget=8, classic=False, seeds=(0,), steps=4, n_checkpoints=2, long_factor=1)
    fake = MaskOptionSegmenter()
    tuned = run_benchmark([item], tmp_path / "tuned", tune_masks=True, segmenter=fake, **kwargs)
    # 2 checkpoints × the 6 pairs on validation, then the chosen pair once on the test half
    assert fake.options[:12] == [p for _ in range(2) for p in MASK_THRESHOLD_GRID] and fake.options[12:] == [(0.0, 0.8)]
    (run,) = tuned["arms"]["real"]["runs"]
    assert run["chosen_mask_options"] == {"cellprob_threshold": 0.0, "flow_threshold": 0.8}  # first of the ties
    assert tuned["config"]["mask_threshold_grid"] == [list(p) for p in MASK_THRESHOLD_GRID]
    assert "| real | 1 | 4 | 2 (0.0, 0.8) |" in (tmp_path / "tuned" / "benchmark.md").read_text()
    default = run_benchmark([item], tmp_path / "default", segmenter=MaskOptionSegmenter(), **kwargs)
    assert "chosen_mask_options" not in default["arms"]["real"]["runs"][0]
    assert default["config"]["mask_threshold_grid"] is None
    assert tuned["summary"]["real"]["seg_mean"] > 0.8 > default["summary"]["real"]["seg_mean"]


def test_a_custom_threshold_grid_is_searched_in_its_order_and_recorded(tmp_path):
    kwargs = dict(budget=8, classic=False, seeds=(0,), steps=4, n_checkpoints=2, long_factor=1)
    grid = threshold_grid([-1.0, 0.0], [0.8, 0.4])
    assert grid == [(0.0, 0.4), (-1.0, 0.4), (-1.0, 0.8), (0.0, 0.8)]
    fake = MaskOptionSegmenter()
    tuned = run_benchmark([grid_item(shape=(96, 384))], tmp_path / "tuned", tune_masks=True,
                          mask_threshold_grid=grid, segmenter=fake, **kwargs)
    assert fake.options[:8] == grid * 2 and fake.options[8:] == [(-1.0, 0.8)]  # the first pair with flow 0.8
    assert tuned["config"]["mask_threshold_grid"] == [list(p) for p in grid]


def test_threshold_grid_fills_a_missing_axis_from_the_default_grid():
    assert threshold_grid() is None
    assert threshold_grid(flow_thresholds=[0.6]) == [(0.0, 0.6), (0.5, 0.6), (1.0, 0.6)]
    assert threshold_grid(cellprob_thresholds=[0.0]) == [(0.0, 0.4), (0.0, 0.8)]


@pytest.mark.parametrize("grid, message", [
    ([], "distinct"), ([(0.0, 0.4), (0.0, 0.4)], "distinct"), ([(0.0, -0.1)], "flow >= 0"),
])
def test_a_bad_threshold_grid_is_refused_before_any_work(tmp_path, grid, message):
    with pytest.raises(CellcascadeError, match=message):
        run_benchmark([grid_item(shape=(96, 384))], tmp_path / "out", tune_masks=True, mask_threshold_grid=grid,
                      segmenter=MaskOptionSegmenter(), budget=8, classic=False, seeds=(0,), steps=4, n_checkpoints=2)
    assert not (tmp_path / "out").exists()


def test_a_threshold_grid_without_tune_masks_is_refused(tmp_path):
    with pytest.raises(CellcascadeError, match="only used with tune_masks"):
        run_benchmark([grid_item(shape=(96, 384))], tmp_path / "out", mask_threshold_grid=[(0.0, 0.4)],
                      segmenter=MaskOptionSegmenter(), budget=8, classic=False, seeds=(0,), steps=4, n_checkpoints=2)


class OnePassSegmenter(MaskOptionSegmenter):
    """Offers predict_each, and records how many network passes (calls) the benchmark makes."""

    def __init__(self):
        super().__init__()
        self.passes = []

    def predict_each(self, checkpoint, images, *, diameter, mask_options):
        self.passes.append(len(mask_options))
        return [self.predict(checkpoint, images, diameter=diameter, **option) for option in mask_options]


def test_threshold_search_makes_one_pass_per_checkpoint_when_the_segmenter_can(tmp_path):
    kwargs = dict(budget=8, classic=False, seeds=(0,), steps=4, n_checkpoints=2, long_factor=1)
    fake = OnePassSegmenter()
    tuned = run_benchmark([grid_item(shape=(96, 384))], tmp_path / "tuned", tune_masks=True, segmenter=fake, **kwargs)
    # validation: one pass per checkpoint with all 6 pairs; test: the chosen pair only
    assert fake.passes == [len(MASK_THRESHOLD_GRID)] * 2 + [1] and len(fake.options) == 12 + 1
    assert tuned["arms"]["real"]["runs"][0]["chosen_mask_options"] == {"cellprob_threshold": 0.0, "flow_threshold": 0.8}


class EnsembleSegmenter(OnePassSegmenter):
    """Takes a list of checkpoints in predict_each (an ensemble segments like its latest member) and records the
    steps of every call."""

    def __init__(self):
        super().__init__()
        self.members = []

    def predict_each(self, checkpoint, images, *, diameter, mask_options):
        members = [checkpoint] if isinstance(checkpoint, Checkpoint) else list(checkpoint)
        self.members.append([c.step for c in members])
        latest = max(members, key=lambda c: c.step)
        return [self.predict(latest, images, diameter=diameter, **option) for option in mask_options]

    def predict(self, checkpoint, images, *, diameter, cellprob_threshold=0.0, flow_threshold=0.4):
        # step 1 finds nothing, steps 2 and 3 find every cell, step 4 only with flow_threshold 0.8
        threshold = 5.0 if checkpoint.step == 1 or (checkpoint.step == 4 and flow_threshold != 0.8) else 0.5
        return [relabel(ndi.label(image > threshold)[0]) for image in images]


def test_an_ensemble_row_uses_the_best_validation_checkpoints_and_chooses_its_own_thresholds(tmp_path):
    kwargs = dict(budget=8, classic=False, seeds=(0,), steps=4, n_checkpoints=4, long_factor=1, tune_masks=True,
                  mask_threshold_grid=[(0.0, 0.4), (0.0, 0.8)])
    fake = EnsembleSegmenter()
    result = run_benchmark([grid_item(shape=(96, 384))], tmp_path / "out", ensemble=3, segmenter=fake, **kwargs)
    assert list(result["arms"]) == ["real", "real (ensemble of 3)"] and result["config"]["ensemble"] == 3
    single, ensemble = (result["arms"][name]["runs"][0] for name in result["arms"])
    assert single["chosen_step"] == 2 and "ensemble_steps" not in single  # the earliest of the equal best
    # steps 2, 3 and 4 score alike (4 with flow 0.8); the ensemble of them segments like step 4, on validation
    # and on test, so it needs flow 0.8 where the single checkpoint kept the defaults
    assert ensemble["ensemble_steps"] == [2, 3, 4] and ensemble["chosen_step"] == 4
    # validation of every checkpoint, the single row's test, then the ensemble's validation and test
    assert fake.members == [[1], [2], [3], [4], [2], [2, 3, 4], [2, 3, 4]]
    assert single["chosen_mask_options"]["flow_threshold"] == 0.4
    assert ensemble["chosen_mask_options"]["flow_threshold"] == 0.8
    assert ensemble["test_seg"] == pytest.approx(single["test_seg"]) and single["test_seg"] > 0.8
    assert "| real (ensemble of 3) | 1 | 4 | 2+3+4 (0.0, 0.8) |" in (tmp_path / "out" / "benchmark.md").read_text()
    plain = run_benchmark([grid_item(shape=(96, 384))], tmp_path / "plain", segmenter=EnsembleSegmenter(), **kwargs)
    assert list(plain["arms"]) == ["real"] and plain["arms"]["real"]["runs"][0]["test_seg"] == single["test_seg"]


@pytest.mark.parametrize("ensemble, kwargs, message", [
    (5, {}, "ensemble must be in 1..n_checkpoints"),
    (0, {}, "ensemble must be in 1..n_checkpoints"),
    (2, {"long_factor": 4}, "needs long_factor 1"),
    (2, {"segmenter": MaskOptionSegmenter()}, "has no predict_each"),
])
def test_a_bad_ensemble_is_refused_before_any_work(tmp_path, ensemble, kwargs, message):
    settings = dict(budget=8, classic=False, seeds=(0,), steps=4, n_checkpoints=4, long_factor=1,
                    segmenter=EnsembleSegmenter())
    settings.update(kwargs)
    with pytest.raises(CellcascadeError, match=message):
        run_benchmark([grid_item(shape=(96, 384))], tmp_path / "out", ensemble=ensemble, **settings)
    assert not (tmp_path / "out").exists()


class GrowingSegmenter(OnePassSegmenter):
    """Draws every cell 2 px wider than the image shows it, as a segmenter with a boundary bias would."""

    def predict(self, checkpoint, images, *, diameter, cellprob_threshold=0.0, flow_threshold=0.4):
        self.options.append((cellprob_threshold, flow_threshold))
        return [expand_labels(relabel(ndi.label(image > 0.5)[0]), 2) for image in images]


def test_a_shrink_fraction_is_chosen_on_validation_without_more_network_passes(tmp_path):
    kwargs = dict(budget=8, classic=False, seeds=(0,), steps=4, n_checkpoints=2, long_factor=1)
    fake = GrowingSegmenter()
    grid = [(0.0, 0.4), (0.0, 0.8)]
    tuned = run_benchmark([grid_item(shape=(96, 384))], tmp_path / "tuned", tune_masks=True, mask_threshold_grid=grid,
                          shrink_fractions=[0.3, 0.0, 0.15], segmenter=fake, **kwargs)
    assert fake.passes == [len(grid)] * 2 + [1]  # shrinking reuses the masks of each pair
    (run,) = tuned["arms"]["real"]["runs"]
    assert run["chosen_mask_options"] == {"cellprob_threshold": 0.0, "flow_threshold": 0.4, "shrink": 0.3}
    assert tuned["config"]["shrink_fractions"] == [0.0, 0.15, 0.3]
    report = (tmp_path / "tuned" / "benchmark.md").read_text()
    assert "(0.0, 0.4, -30%)" in report and "[0.0, 0.15, 0.3]" in report
    unshrunk = run_benchmark([grid_item(shape=(96, 384))], tmp_path / "unshrunk", tune_masks=True,
                             mask_threshold_grid=grid, segmenter=GrowingSegmenter(), **kwargs)
    assert tuned["summary"]["real"]["seg_mean"] > unshrunk["summary"]["real"]["seg_mean"] + 0.1
    assert unshrunk["config"]["shrink_fractions"] == [0.0]


@pytest.mark.parametrize("options, message", [
    (dict(tune_masks=True, shrink_fractions=[0.5]), r"\[0, 0.5\)"),
    (dict(tune_masks=True, shrink_fractions=[-0.1]), r"\[0, 0.5\)"),
    (dict(shrink_fractions=[0.1]), "only used with tune_masks"),
])
def test_bad_shrink_fractions_are_refused_before_any_work(tmp_path, options, message):
    with pytest.raises(CellcascadeError, match=message):
        run_benchmark([grid_item(shape=(96, 384))], tmp_path / "out", segmenter=GrowingSegmenter(), budget=8,
                      classic=False, seeds=(0,), steps=4, n_checkpoints=2, **options)
    assert not (tmp_path / "out").exists()


class BorderBlindSegmenter(OnePassSegmenter):
    """Misses every cell that touches the image border unless the image is mirrored beyond it first."""

    def predict(self, checkpoint, images, *, diameter, cellprob_threshold=0.0, flow_threshold=0.4, border_padding=0):
        self.options.append((cellprob_threshold, flow_threshold, border_padding))
        out = []
        for image in images:
            labels = ndi.label(image > 0.5)[0]
            if not border_padding:
                edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
                labels[np.isin(labels, edge[edge > 0])] = 0
            out.append(relabel(labels))
        return out


def test_a_border_padding_is_chosen_on_validation_with_one_more_pass_per_padding(tmp_path):
    kwargs = dict(budget=8, classic=False, seeds=(0,), steps=4, n_checkpoints=2, long_factor=1, tune_masks=True,
                  mask_threshold_grid=[(0.0, 0.4), (0.0, 0.8)])
    item = grid_item(shape=(96, 376))  # the right half starts at x = 188, through a column of cells
    fake = BorderBlindSegmenter()
    padded = run_benchmark([item], tmp_path / "padded", border_paddings=[16, 0], segmenter=fake, **kwargs)
    assert fake.passes == [4, 4, 1]  # 2 pairs × 2 paddings per checkpoint on validation; the chosen one on test
    (run,) = padded["arms"]["real"]["runs"]
    assert run["chosen_mask_options"] == {"cellprob_threshold": 0.0, "flow_threshold": 0.4, "border_padding": 16}
    assert padded["config"]["border_paddings"] == [0, 16]
    assert "(0.0, 0.4, mirror 16 px)" in (tmp_path / "padded" / "benchmark.md").read_text()
    plain = run_benchmark([item], tmp_path / "plain", segmenter=BorderBlindSegmenter(), **kwargs)
    assert plain["config"]["border_paddings"] is None
    assert padded["summary"]["real"]["seg_mean"] > plain["summary"]["real"]["seg_mean"]
    cut, cut_plain = (r["arms"]["real"]["runs"][0]["test_per_image"][0]["cells_by_kind"]["cut"] for r in (padded, plain))
    assert cut["missed"] < cut_plain["missed"] == cut_plain["n"]  # unpadded, every cut cell is missed


@pytest.mark.parametrize("options, message", [
    (dict(tune_masks=True, border_paddings=[-4]), "whole numbers of pixels"),
    (dict(tune_masks=True, border_paddings=[2.5]), "whole numbers of pixels"),
    (dict(border_paddings=[16]), "only used with tune_masks"),
    (dict(tune_masks=True, border_paddings=[16], segmenter=MaskOptionSegmenter()), "cannot pad the image border"),
])
def test_bad_border_paddings_are_refused_before_any_work(tmp_path, options, message):
    settings = dict(segmenter=BorderBlindSegmenter(), budget=8, classic=False, seeds=(0,), steps=4, n_checkpoints=2)
    settings.update(options)
    with pytest.raises(CellcascadeError, match=message):
        run_benchmark([grid_item(shape=(96, 384))], tmp_path / "out", **settings)
    assert not (tmp_path / "out").exists()


def write_pairs(folder: Path, n: int) -> None:
    folder.mkdir()
    for i in range(n):
        item = grid_item(shape=(64, 64), name=f"s{i}")
        tifffile.imwrite(folder / f"s{i}.tif", item.image)
        tifffile.imwrite(folder / f"s{i}_masks.tif", item.labels.astype(np.uint16))


def test_every_arm_gets_the_same_steps_and_only_budget_data(tmp_path):
    write_pairs(tmp_path / "synth", 3)
    fake = ThresholdSegmenter()
    result = run_benchmark(
        [grid_item(shape=(96, 384))], tmp_path / "out", budget=8, synthetic=[tmp_path / "synth"], classic=True,
        seeds=(0, 1), steps=4, n_checkpoints=2, long_factor=4, n_synthetic=2, segmenter=fake,
    )
    names = list(result["arms"])
    assert names == ["real", "real (4× steps)", "classic", "real + classic", "synth", "real + synth"]
    # per seed: one real run of 4×4 steps (it also gives the real row), every other arm exactly 4 steps
    assert [c["steps"] for c in fake.calls] == [16, 4, 4, 4, 4] * 2
    assert all(math.isclose(sum(c["probabilities"]), 1) for c in fake.calls)
    real_call = fake.calls[0]
    assert len(real_call["images"]) == 1 and real_call["images"][0].shape[1] < 192  # a patch of the left half
    mixed = fake.calls[2]
    assert mixed["probabilities"][0] == pytest.approx(0.5) and len(mixed["images"]) == 3
    # the real row chose among checkpoints ≤ 4 steps, the long row among all
    for run in result["arms"]["real"]["runs"]:
        assert max(p["step"] for p in run["learning_curve"]) == 4 and run["chosen_step"] == 2
    assert max(p["step"] for p in result["arms"]["real (4× steps)"]["runs"][0]["learning_curve"]) == 16
    assert result["summary"]["real"]["seg_mean"] > 0.8  # thresholding the blurred discs
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(RESULT_FILES)


def test_a_run_can_train_only_some_kinds_of_arm_with_the_same_data(tmp_path):
    write_pairs(tmp_path / "synth", 3)
    kwargs = dict(budget=8, synthetic=[tmp_path / "synth"], classic=False, seeds=(0,), steps=4, n_checkpoints=2,
                  long_factor=4, n_synthetic=2)
    full, part = ThresholdSegmenter(), ThresholdSegmenter()
    run_benchmark([grid_item(shape=(96, 384))], tmp_path / "full", segmenter=full, **kwargs)
    result = run_benchmark([grid_item(shape=(96, 384))], tmp_path / "part", segmenter=part, arms=["mixed"], **kwargs)
    assert list(result["arms"]) == ["real + synth"] and result["config"]["arms"] == ["mixed"]
    (call,) = part.calls  # no real run (nor its long row), no synthetic-only run
    same = full.calls[-1]  # the full run's mixed arm: same images, probabilities and seed
    assert call["steps"] == same["steps"] == 4 and call["seed"] == same["seed"]
    assert call["probabilities"] == same["probabilities"]
    assert all(np.array_equal(a, b) for a, b in zip(call["images"], same["images"], strict=True))


def test_kept_checkpoints_are_reused_only_by_a_run_that_would_train_the_same_weights(tmp_path):
    write_pairs(tmp_path / "synth", 3)
    kwargs = dict(budget=8, synthetic=[tmp_path / "synth"], classic=False, seeds=(0, 1), steps=4, n_checkpoints=2,
                  long_factor=1, n_synthetic=2, checkpoint_dir=tmp_path / "ckpt")
    first, again, other = ThresholdSegmenter(), ThresholdSegmenter(), ThresholdSegmenter()
    trained = run_benchmark([grid_item(shape=(96, 384))], tmp_path / "a", segmenter=first, **kwargs)
    assert len(first.calls) == 6  # 3 arms × 2 seeds, each kept in its own folder with its stamp
    stamps = sorted((tmp_path / "ckpt").glob("*/training.json"))
    assert len(stamps) == 6 and all(json.loads(s.read_text())["files"] == {"2": "2.txt", "4": "4.txt"} for s in stamps)
    reused = run_benchmark([grid_item(shape=(96, 384))], tmp_path / "b", segmenter=again, **kwargs)
    assert again.calls == []  # nothing trained again; the same scores
    assert reused["summary"] == trained["summary"]
    assert all(r["train_seconds"] is None and r["reused_checkpoints"] for e in reused["arms"].values() for r in e["runs"])
    # another seed, step count or real fraction changes the weights: trained, not taken from the folder
    run_benchmark([grid_item(shape=(96, 384))], tmp_path / "c", segmenter=other, real_fraction=0.25, arms=["mixed"],
                  **kwargs)
    assert len(other.calls) == 2
    # a stopped training leaves no stamp: the next run trains that arm again
    (stamps[0]).unlink()
    redo = ThresholdSegmenter()
    run_benchmark([grid_item(shape=(96, 384))], tmp_path / "d", segmenter=redo, **kwargs)
    assert len(redo.calls) == 1


def test_a_checkpoint_dir_that_is_a_file_is_refused_before_any_work(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(CellcascadeError, match="exists and is not a folder"):
        run_benchmark([grid_item(shape=(96, 384))], tmp_path / "out", budget=8, classic=False, seeds=(0,), steps=4,
                      n_checkpoints=2, segmenter=ThresholdSegmenter(), checkpoint_dir=tmp_path / "file")
    assert not (tmp_path / "out").exists()


def test_the_default_segmenter_runs_on_the_asked_device(tmp_path, monkeypatch):
    import torch

    import cellcascade.evaluation.benchmark as benchmark

    made = []

    def recording_cellpose(**settings):  # stands in for CellposeSegmenter, remembering its settings
        made.append(settings)
        return ThresholdSegmenter()

    monkeypatch.setattr(benchmark, "CellposeSegmenter", recording_cellpose)
    kwargs = dict(budget=8, classic=False, seeds=(0,), steps=4, n_checkpoints=2, long_factor=1)
    run_benchmark([grid_item(shape=(96, 384))], tmp_path / "auto", device="auto", **kwargs)
    assert made[-1]["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    run_benchmark([grid_item(shape=(96, 384))], tmp_path / "cpu", **kwargs)
    assert made[-1]["device"] == "cpu"  # the library's default
    with pytest.raises(CellcascadeError, match="device must be auto, cpu or cuda"):
        run_benchmark([grid_item(shape=(96, 384))], tmp_path / "bad", device="gpu", **kwargs)
    assert not (tmp_path / "bad").exists()


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a CUDA GPU")
def test_benchmark_on_cuda_without_a_gpu_is_a_one_line_error_before_any_work(tmp_path, capsys):
    from cellcascade.cli import main

    assert main(["benchmark", "sample", "--out", str(tmp_path / "out"), "--device", "cuda", "--quick", "--quiet"]) == 2
    assert capsys.readouterr().err == "cellcascade: error: device 'cuda' was asked for but no CUDA GPU is available\n"
    assert not (tmp_path / "out").exists()


class FinetuneRecordingSegmenter(ThresholdSegmenter):
    """Also takes the fine-tuning draw, and records it."""

    def train(self, images, labels, *, final_steps=0, final_probabilities=None, **kwargs):
        out = super().train(images, labels, **kwargs)
        self.calls[-1].update(final_steps=final_steps, final_probabilities=final_probabilities)
        return out


def test_real_finetune_steps_draw_only_the_real_patch_at_the_end_of_mixed_arms(tmp_path):
    write_pairs(tmp_path / "synth", 3)
    fake = FinetuneRecordingSegmenter()
    result = run_benchmark([grid_item(shape=(96, 384))], tmp_path / "out", segmenter=fake, budget=8,
                           synthetic=[tmp_path / "synth"], classic=False, seeds=(0,), steps=4, n_checkpoints=2,
                           long_factor=1, n_synthetic=2, real_finetune_steps=2)
    by_arm = dict(zip(result["arms"], fake.calls, strict=True))
    assert by_arm["real + synth"]["final_steps"] == 2
    assert by_arm["real + synth"]["final_probabilities"] == [1.0, 0.0, 0.0]  # the budget patch, then 2 synthetic
    assert by_arm["real"]["final_steps"] == by_arm["synth"]["final_steps"] == 0  # the other arms as before
    assert result["config"]["real_finetune_steps"] == 2
    assert "only it over their last 2 steps (fine-tuning)" in (tmp_path / "out" / "benchmark.md").read_text()
    with pytest.raises(CellcascadeError, match="real_finetune_steps must be in"):
        run_benchmark([grid_item(shape=(96, 384))], tmp_path / "bad", segmenter=fake, steps=4, n_checkpoints=2,
                      real_finetune_steps=4)
    assert not (tmp_path / "bad").exists()

@pytest.mark.parametrize("arms, message", [([], "arms must be"), (["everything"], "arms must be"),
                                           (["synthetic"], "need synthetic data")])
def test_bad_arm_kinds_are_refused_before_any_work(tmp_path, arms, message):
    with pytest.raises(CellcascadeError, match=message):
        run_benchmark([grid_item(shape=(96, 384))], tmp_path / "out", arms=arms, classic=False, budget=8,
                      segmenter=ThresholdSegmenter(), seeds=(0,), steps=4, n_checkpoints=2)
    assert not (tmp_path / "out").exists()


def test_bad_input_writes_nothing(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(CellcascadeError):
        run_benchmark("sample", out, budget=0, segmenter=ThresholdSegmenter())
    with pytest.raises(CellcascadeError, match="no such"):
        run_benchmark("sample", out, synthetic=[tmp_path / "missing"], segmenter=ThresholdSegmenter())
    with pytest.raises(CellcascadeError, match="real_fraction"):
        run_benchmark("sample", out, real_fraction=1.0, segmenter=ThresholdSegmenter())
    with pytest.raises(CellcascadeError, match="needs long_factor 1"):
        run_benchmark("sample", out, decay_steps=10, steps=100, long_factor=4, segmenter=ThresholdSegmenter())
    with pytest.raises(CellcascadeError, match="decay_steps must be in"):
        run_benchmark("sample", out, decay_steps=200, steps=100, long_factor=1, segmenter=ThresholdSegmenter())
    assert not out.exists() and list(tmp_path.iterdir()) == []


def check_outputs(out: Path, result: dict) -> None:
    assert sorted(p.name for p in out.iterdir()) == sorted(RESULT_FILES)
    stored = json.loads((out / "benchmark.json").read_text())
    assert stored["summary"] == result["summary"]
    for name, summary in stored["summary"].items():
        for key in ("seg_mean", "ap50_mean", "seg_std", "ap50_std"):
            assert summary[key] is not None and 0.0 <= summary[key] <= 1.0, (name, key)
    for entry in stored["arms"].values():
        for run in entry["runs"]:
            assert all(0.0 <= p["score"] <= 1.0 for p in run["learning_curve"])
            assert all(0.0 <= im["seg"] <= 1.0 for im in run["test_per_image"])
            assert all(im["tp"] == 0 or im["matched_size_ratio"] > 0 for im in run["test_per_image"])
            assert all(sum(k["n"] for k in im["cells_by_kind"].values()) == im["reference_cells"]
                       for im in run["test_per_image"])
    table = (out / "benchmark.md").read_text()
    assert "| real |" in table and "SEG" in table
    assert (out / "benchmark.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_quick_benchmark_end_to_end_with_cellpose(tmp_path):
    result = run_benchmark("sample", tmp_path / "out", quick=True, threads=1)
    assert set(result["summary"]) == {"real", "real (4× steps)", "classic", "real + classic"}
    check_outputs(tmp_path / "out", result)
    assert result["config"]["steps"] == 4 and result["config"]["seeds"] == [0]


def test_budget_export_is_exactly_the_benchmark_budget(tmp_path, capsys):
    """`cellcascade budget` writes the patch run_benchmark trains on (raw intensities), so a generator can fit it."""
    from cellcascade.cli import main
    from cellcascade.data import read_pairs

    out = tmp_path / "budget"
    assert main(["budget", "sample", "--out", str(out), "--quiet"]) == 0
    assert "--dense" in capsys.readouterr().out  # the sample is dense, so the next command says so
    expected = choose_budget(split_train_test(load_sample()).train, 15, seed=0)
    info = json.loads((out / "budget.json").read_text())
    assert info["box_row_col_side"] == list(expected.box) and info["n_whole_cells"] == expected.n_whole
    (item,) = read_pairs(out, dense=True)
    np.testing.assert_array_equal(item.labels, expected.labels)
    np.testing.assert_array_equal(item.image, expected.annotated.image)
    assert item.image.dtype == load_sample()[0].image.dtype
    # an existing folder is refused and left as it was; --overwrite replaces it
    assert main(["budget", "sample", "--out", str(out), "--budget", "10", "--quiet"]) == 2
    assert json.loads((out / "budget.json").read_text())["budget"] == 15
    assert main(["budget", "sample", "--out", str(out), "--budget", "10", "--overwrite", "--quiet"]) == 0
    assert json.loads((out / "budget.json").read_text())["n_whole_cells"] == 10


def test_per_image_scores_say_which_kind_of_cell_lost_seg():
    """A cut cell found exactly, a small one missed, two whole ones found (one at 60% of its area)."""
    from cellcascade.evaluation.benchmark import _pooled

    reference = np.zeros((40, 40), np.int32)
    reference[0:6, 10:18] = 1  # touches the top edge: cut
    reference[20:22, 20:22] = 2  # 4 px, below a third of the whole cells' median: small
    reference[10:20, 25:35] = 3
    reference[25:35, 5:15] = 4
    prediction = reference.copy()
    prediction[prediction == 2] = 0
    prediction[25:35, 11:15] = 0  # cell 4 keeps 60% of its pixels: Jaccard 0.6
    scored = _pooled([reference], [prediction], ["image"])
    kinds = scored.per_image[0]["cells_by_kind"]
    assert kinds["cut"] == {"n": 1, "mean_jaccard": 1.0, "missed": 0}
    assert kinds["small"] == {"n": 1, "mean_jaccard": 0.0, "missed": 1}
    assert kinds["whole"]["n"] == 2 and kinds["whole"]["missed"] == 0
    assert kinds["whole"]["mean_jaccard"] == pytest.approx(0.8)
    assert scored.seg == pytest.approx((1 + 0 + 1 + 0.6) / 4)
    cells = scored.per_image[0]["cells"]
    assert [(c["label"], c["size"], c["kind"]) for c in cells] == [(1, 48, "cut"), (2, 4, "small"), (3, 100, "whole"),
                                                                    (4, 100, "whole")]
    assert [c["jaccard"] for c in cells] == pytest.approx([1.0, 0.0, 1.0, 0.6])


def test_saved_test_predictions_are_the_scored_ones(tmp_path):
    """With save_predictions, every arm's test prediction at its chosen step lands in predictions/ and scores as
    the JSON says; without, no predictions folder."""
    from cellcascade.evaluation.segmentation_metrics import seg_score

    item = grid_item(shape=(96, 384))
    kwargs = dict(budget=8, classic=False, seeds=(0, 1), steps=4, n_checkpoints=2, long_factor=1)
    result = run_benchmark([item], tmp_path / "out", save_predictions=True, segmenter=ThresholdSegmenter(), **kwargs)
    (test_item,) = split_train_test([item]).test
    saved = sorted(p.name for p in (tmp_path / "out" / "predictions").iterdir())
    assert saved == ["real_seed0_grid_right.tif", "real_seed1_grid_right.tif"]
    for run in result["arms"]["real"]["runs"]:
        labels = tifffile.imread(tmp_path / "out" / "predictions" / f"real_seed{run['seed']}_grid_right.tif")
        assert labels.shape == test_item.labels.shape and labels.dtype == np.int32 and labels.max() > 0
        assert seg_score(test_item.labels, labels) == pytest.approx(run["test_seg"])
    run_benchmark([item], tmp_path / "plain", segmenter=ThresholdSegmenter(), **kwargs)
    assert not (tmp_path / "plain" / "predictions").exists()
