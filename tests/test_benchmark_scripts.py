"""The helper scripts in benchmarks/: pooling the seeds of several segmentation benchmark runs; resizing annotations."""

import importlib.util
import json
import shlex
from pathlib import Path

import numpy as np
import pytest
import tifffile

SCRIPTS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_script(name):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fake_run(seeds, seg_by_arm, steps=600, synthetic=("x",)):
    """A benchmark JSON reduced to what pooling reads: config and each arm's per-seed runs."""
    return {
        "config": {"data": "sample", "steps": steps, "seeds": seeds, "command": f"run {seeds}", "threads": 1,
                   "synthetic": list(synthetic), "arms": ["real" if arm == "real" else "mixed" for arm in seg_by_arm]},
        "arms": {arm: {"runs": [{"seed": s, "test_seg": v, "test_ap50": v + 0.1, "chosen_step": steps}
                                for s, v in zip(seeds, values)]}
                 for arm, values in seg_by_arm.items()},
    }


def test_pooling_gives_the_table_of_one_run_with_every_seed(tmp_path):
    pool_runs = load_script("pool_segmentation_runs")
    first = tmp_path / "segmentation_a.json"
    second = tmp_path / "segmentation_b.json"
    first.write_text(json.dumps(fake_run([0, 1, 2], {"real": [0.7, 0.8, 0.9], "real + x": [0.8, 0.9, 1.0]})))
    second.write_text(json.dumps(fake_run([3, 4], {"real": [0.7, 0.9], "real + x": [0.9, 0.9]})))
    assert pool_runs.main([str(first), str(second), "--tag", "pooled", "--out", str(tmp_path)]) == 0
    table = (tmp_path / "segmentation_pooled.md").read_text()
    # real: mean 0.8, std (ddof 1) of [0.7, 0.8, 0.9, 0.7, 0.9] = 0.1; real + x: mean 0.9, +12.5% over real
    assert "| real | 0, 1, 2, 3, 4 | 600, 600, 600, 600, 600 | 0.800 ± 0.100 |" in table
    assert "| real + x | 0, 1, 2, 3, 4 |" in table and "| +12.5% |" in table
    assert "0.900 ± 0.071" in table


def test_pooling_runs_split_by_arm_gives_the_gain_over_real(tmp_path):
    """`--arms real` in one run, `--arms mixed` (same seeds, a synthetic source the real arm ignores) in others."""
    pool_runs = load_script("pool_segmentation_runs")
    paths = [tmp_path / f"segmentation_{n}.json" for n in ("real", "mixed0", "mixed12")]
    paths[0].write_text(json.dumps(fake_run([0, 1, 2], {"real": [0.7, 0.8, 0.9]}, synthetic=())))
    paths[1].write_text(json.dumps(fake_run([0], {"real + x": [0.9]})))
    paths[2].write_text(json.dumps(fake_run([1, 2], {"real + x": [0.8, 1.0]})))
    assert pool_runs.main([str(p) for p in paths] + ["--tag", "pooled", "--out", str(tmp_path)]) == 0
    table = (tmp_path / "segmentation_pooled.md").read_text()
    assert "| real | 0, 1, 2 | 600, 600, 600 | 0.800 ± 0.100 | 0.700, 0.800, 0.900 |" in table
    # real + x: seeds 0, 1, 2 scored 0.9, 0.8, 1.0: mean 0.9, +12.5% over real's 0.8
    assert "| real + x | 0, 1, 2 | 600, 600, 600 | 0.900 ± 0.100 | 0.900, 0.800, 1.000 |" in table
    assert table.count("+12.5%") == 1
    assert "Seeds differ" not in table


def test_pooling_one_seed_says_so_instead_of_a_zero_std(tmp_path):
    """One seed has no spread: the table says "(1 seed)" where several seeds give mean ± std."""
    pool_runs = load_script("pool_segmentation_runs")
    paths = [tmp_path / f"segmentation_{n}.json" for n in ("real", "mixed")]
    paths[0].write_text(json.dumps(fake_run([0], {"real": [0.8]}, synthetic=())))
    paths[1].write_text(json.dumps(fake_run([0], {"real + x": [0.9]})))
    assert pool_runs.main([str(p) for p in paths] + ["--tag", "pooled", "--out", str(tmp_path)]) == 0
    table = (tmp_path / "segmentation_pooled.md").read_text()
    assert "| real | 0 | 600 | 0.800 (1 seed) | 0.800 | 0.900 (1 seed) |" in table
    assert "| real + x | 0 | 600 | 0.900 (1 seed) | 0.900 | 1.000 (1 seed) | +12.5% |" in table
    assert "± 0.000" not in table


def test_pooling_against_a_real_only_score_of_zero_says_so_instead_of_dividing(tmp_path):
    pool_runs = load_script("pool_segmentation_runs")
    paths = [tmp_path / f"segmentation_{n}.json" for n in ("real", "mixed")]
    paths[0].write_text(json.dumps(fake_run([0], {"real": [0.0]}, synthetic=())))
    paths[1].write_text(json.dumps(fake_run([0], {"real + x": [0.2]})))
    assert pool_runs.main([str(p) for p in paths] + ["--tag", "pooled", "--out", str(tmp_path)]) == 0
    assert "| 0.200 | 0.300 (1 seed) | n/a (real SEG 0) |" in (tmp_path / "segmentation_pooled.md").read_text()


def test_pooling_says_when_an_arm_has_other_seeds_than_real(tmp_path):
    pool_runs = load_script("pool_segmentation_runs")
    paths = [tmp_path / f"segmentation_{n}.json" for n in ("real", "mixed")]
    paths[0].write_text(json.dumps(fake_run([0, 1, 2, 3], {"real": [0.7, 0.8, 0.9, 0.8]}, synthetic=())))
    paths[1].write_text(json.dumps(fake_run([0, 1], {"real + x": [0.9, 0.9]})))
    assert pool_runs.main([str(p) for p in paths] + ["--tag", "pooled", "--out", str(tmp_path)]) == 0
    table = (tmp_path / "segmentation_pooled.md").read_text()
    assert "| +12.5% |" in table  # 0.9 over real's 0.8 (all four real seeds)
    assert "Seeds differ from real's (0, 1, 2, 3) for real + x" in table


def test_runs_recorded_before_a_segmenter_setting_existed_pool_with_its_default(tmp_path):
    """`decay_steps` joined the segmenter's settings later; older runs trained without a decay, i.e. with 0."""
    pool_runs = load_script("pool_segmentation_runs")
    older = fake_run([0], {"real": [0.8]}, synthetic=())
    older["config"]["segmenter"] = {"tile": 96, "ema": 0.98}
    newer, decayed = fake_run([1], {"real": [0.9]}, synthetic=()), fake_run([1], {"real": [0.9]}, synthetic=())
    newer["config"]["segmenter"] = {"tile": 96, "ema": 0.98, "decay_steps": 0}
    decayed["config"]["segmenter"] = {"tile": 96, "ema": 0.98, "decay_steps": 120}
    assert [r["seed"] for r in pool_runs.pool([older, newer])["real"]] == [0, 1]
    with pytest.raises(pool_runs.CellcascadeError, match="differ in more than their seeds and arms: segmenter"):
        pool_runs.pool([older, decayed])



def test_real_only_runs_pool_with_fine_tuned_mixed_runs_but_mixed_arms_must_agree(tmp_path):
    """`real_finetune_steps` changes only the arms with synthetic data; older runs had none (0)."""
    pool_runs = load_script("pool_segmentation_runs")
    real = fake_run([0, 1], {"real": [0.8, 0.8]}, synthetic=())  # recorded before the setting existed
    tuned = [fake_run([s], {"real + x": [0.9]}) for s in (0, 1)]
    for run in tuned:
        run["config"]["real_finetune_steps"] = 240
    assert [r["seed"] for r in pool_runs.pool([real, *tuned])["real + x"]] == [0, 1]
    plain = fake_run([1], {"real + x": [0.9]})
    with pytest.raises(pool_runs.CellcascadeError, match="different real_finetune_steps"):
        pool_runs.pool([real, tuned[0], plain])

def test_ensemble_rows_are_compared_with_real_onlys_ensemble_row(tmp_path):
    pool_runs = load_script("pool_segmentation_runs")
    real = fake_run([0, 1], {"real": [0.8, 0.8], "real (ensemble of 3)": [0.7, 0.9]}, synthetic=())
    mixed = fake_run([0, 1], {"real + x": [0.88, 0.88], "real + x (ensemble of 3)": [0.9, 0.9]})
    for run in (real, mixed):
        run["config"]["ensemble"] = 3
    paths = [tmp_path / "segmentation_real.json", tmp_path / "segmentation_mixed.json"]
    for path, run in zip(paths, (real, mixed)):
        path.write_text(json.dumps(run))
    assert pool_runs.main([str(p) for p in paths] + ["--tag", "pooled", "--out", str(tmp_path)]) == 0
    rows = {line.split(" | ")[0][2:]: line for line in (tmp_path / "segmentation_pooled.md").read_text().splitlines()
            if line.startswith("| real")}
    assert rows["real + x"].endswith("| +10.0% |")  # 0.88 over real's 0.8
    assert rows["real + x (ensemble of 3)"].endswith("| +12.5% |")  # 0.9 over real's ensemble row, 0.8
    assert rows["real"].endswith("|  |") and rows["real (ensemble of 3)"].endswith("|  |")
    single = fake_run([0], {"real": [0.8]}, synthetic=())  # recorded before ensembles: no ensemble (1)
    with pytest.raises(pool_runs.CellcascadeError, match="differ in more than their seeds and arms: ensemble"):
        pool_runs.pool([single, mixed])


def test_the_row_chosen_on_validation_takes_per_seed_the_single_or_ensemble_run_with_the_better_validation_score(tmp_path):
    pool_runs = load_script("pool_segmentation_runs")
    real = fake_run([0, 1], {"real": [0.8, 0.6], "real (ensemble of 3)": [0.7, 0.9]}, synthetic=())
    mixed = fake_run([0, 1], {"real + x": [0.88, 0.88], "real + x (ensemble of 3)": [0.9, 0.8]})
    validation = {"real": ([0.5, 0.6], [0.55, 0.7]), "real + x": ([0.7, 0.7], [0.7, 0.8])}  # single, ensemble
    for run in (real, mixed):
        run["config"]["ensemble"] = 3
        for arm, (single, ensemble) in validation.items():
            if arm in run["arms"]:
                for i, score in enumerate(single):  # the single run's best checkpoint scores `score` on validation
                    run["arms"][arm]["runs"][i]["learning_curve"] = [{"step": 300, "score": score - 0.1},
                                                                     {"step": 600, "score": score}]
                for i, score in enumerate(ensemble):
                    run["arms"][f"{arm} (ensemble of 3)"]["runs"][i]["ensemble_validation_score"] = score
    paths = [tmp_path / "segmentation_real.json", tmp_path / "segmentation_mixed.json"]
    for path, run in zip(paths, (real, mixed)):
        path.write_text(json.dumps(run))
    assert pool_runs.main([str(p) for p in paths] + ["--tag", "pooled", "--out", str(tmp_path)]) == 0
    text = (tmp_path / "segmentation_pooled.md").read_text()
    rows = {line.split(" | ")[0][2:]: line.split(" | ") for line in text.splitlines() if line.startswith("| real")}
    # real: the ensemble in both seeds (validation 0.55 > 0.5 and 0.7 > 0.6), though seed 0's single run tests higher
    assert rows["real (1 or 3 checkpoints, chosen on validation)"][4] == "0.700 (ens), 0.900 (ens)"
    # real + x: seed 0 a tie (0.7, 0.7) keeps the single run, seed 1 the ensemble (0.8 > 0.7)
    assert rows["real + x (1 or 3 checkpoints, chosen on validation)"][4] == "0.880, 0.800 (ens)"
    assert rows["real + x (1 or 3 checkpoints, chosen on validation)"][-1] == "+5.0% |"  # 0.84 over 0.8
    assert "the test image plays no part in the choice" in text
    # runs recorded without validation scores get no such row
    del mixed["arms"]["real + x (ensemble of 3)"]["runs"][0]["ensemble_validation_score"]
    assert "real + x (1 or 3 checkpoints, chosen on validation)" not in pool_runs.add_chosen_rows(
        pool_runs.pool([real, mixed]))


@pytest.mark.parametrize(
    "second, message",
    [
        (fake_run([3], {"real": [0.7]}, steps=300), "differ in more than their seeds and arms: steps"),
        (fake_run([2, 3], {"real": [0.7, 0.8]}), "share seeds for arm 'real'"),
        (fake_run([3], {"real + x": [0.9]}, synthetic=("other",)), "arm 'real + x' comes from runs with different synthetic"),
    ],
)
def test_pooling_refuses_runs_that_do_not_pool(tmp_path, capsys, second, message):
    pool_runs = load_script("pool_segmentation_runs")
    paths = [tmp_path / "segmentation_a.json", tmp_path / "segmentation_b.json"]
    paths[0].write_text(json.dumps(fake_run([0, 1, 2], {"real": [0.7, 0.8, 0.9], "real + x": [0.8, 0.8, 0.8]})))
    paths[1].write_text(json.dumps(second))
    with pytest.raises(SystemExit) as exit_info:
        pool_runs.main([str(p) for p in paths] + ["--tag", "pooled", "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_rescaling_annotations_gives_the_asked_cell_diameter_and_keeps_labels_and_dtype(tmp_path):
    from skimage.draw import disk

    from cellcascade.data.readers import read_pairs
    from cellcascade.evaluation.segmenters import label_diameter
    from cellcascade.io.tiff import write_tiff

    rescale = load_script("rescale_annotations")
    labels = np.zeros((200, 200), np.uint16)
    for index, (row, col) in enumerate([(50, 50), (50, 150), (150, 100)], start=1):
        labels[disk((row, col), 30)] = index  # discs of diameter 60
    image = np.where(labels > 0, 200, 10).astype(np.uint8)
    folder = tmp_path / "big"
    folder.mkdir()
    write_tiff(folder / "a.tif", image)
    write_tiff(folder / "a_masks.tif", labels)
    (folder / "budget.json").write_text(json.dumps({"budget": 3}))
    assert rescale.main([str(folder), "--out", str(tmp_path / "small"), "--diameter", "24"]) == 0
    (small,) = read_pairs(tmp_path / "small")
    assert small.image.shape == (80, 80) and small.image.dtype == np.uint8
    assert set(np.unique(small.labels)) == {0, 1, 2, 3}  # nearest neighbour: no new label values
    assert label_diameter(small.labels) == pytest.approx(24, abs=1)
    assert small.image[small.labels > 0].mean() > 150 > 50 > small.image[small.labels == 0].mean()
    info = json.loads((tmp_path / "small" / "budget.json").read_text())
    assert info["budget"] == 3 and info["rescaled"]["factor"] == pytest.approx(0.4, abs=0.01)


@pytest.mark.parametrize("args, message", [(["--diameter", "-2"], "positive"), ([], "no image/mask pair")])
def test_rescaling_refuses_bad_input_in_one_line_and_writes_nothing(tmp_path, capsys, args, message):
    rescale = load_script("rescale_annotations")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as stop:
        rescale.main([str(tmp_path / "empty"), "--out", str(tmp_path / "out"), *args])
    assert stop.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


class _ThresholdSegmenter:
    """Stands in for Cellpose: no training, segments by an intensity threshold (normalised images)."""

    name = "threshold"

    def __init__(self, threshold):
        self.threshold = threshold

    def train(self, images, labels, *, steps, seed, work_dir, checkpoints, probabilities=None):
        from cellcascade.evaluation.segmenters import Checkpoint

        Path(work_dir).mkdir(parents=True, exist_ok=True)
        out = []
        for step in sorted(set(checkpoints) | {steps}):
            (Path(work_dir) / f"{step}").write_text("")
            out.append(Checkpoint(step, Path(work_dir) / f"{step}"))
        return out

    def predict(self, checkpoint, images, *, diameter):
        from scipy import ndimage as ndi

        return [ndi.label(image > self.threshold)[0] for image in images]


def test_comparing_saved_predictions_lists_and_draws_the_cells_that_differ(tmp_path, capsys):
    from cellcascade.evaluation.benchmark import run_benchmark

    compare = load_script("compare_predictions")
    kwargs = dict(classic=False, seeds=(0,), steps=2, n_checkpoints=1, long_factor=1, save_predictions=True)
    tight = run_benchmark("sample", tmp_path / "tight", segmenter=_ThresholdSegmenter(0.5), **kwargs)
    loose = run_benchmark("sample", tmp_path / "loose", segmenter=_ThresholdSegmenter(0.1), **kwargs)
    args = [str(tmp_path / "tight" / "benchmark.json"), str(tmp_path / "tight" / "predictions"),
            str(tmp_path / "loose" / "benchmark.json"), str(tmp_path / "loose" / "predictions")]
    assert compare.main(args + ["--out", str(tmp_path / "cmp.png"), "--top", "2"]) == 0
    printed = capsys.readouterr().out
    cells = {c["label"]: (c["jaccard"], d["jaccard"]) for c, d in zip(
        tight["arms"]["real"]["runs"][0]["test_per_image"][0]["cells"],
        loose["arms"]["real"]["runs"][0]["test_per_image"][0]["cells"])}
    differing = [label for label, (a, b) in cells.items() if abs(a - b) > 0.05]
    assert differing  # the two thresholds draw some cells differently
    listed = [line for line in printed.splitlines() if line.startswith("stardist-img2d/right |")]
    assert sorted(int(line.split(" | ")[1]) for line in listed) == sorted(differing)
    assert (tmp_path / "cmp.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(SystemExit, match="no saved prediction"):
        compare.main([args[0], str(tmp_path), args[2], args[3], "--out", str(tmp_path / "x.png")])
    with pytest.raises(SystemExit):
        compare.main([str(tmp_path / "missing.json"), args[1], args[2], args[3], "--out", str(tmp_path / "x.png")])
    assert "missing.json: no such benchmark JSON file" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_saving_predictions_into_a_file_is_refused_before_any_work(tmp_path, capsys):
    benchmark = load_script("segmentation_benchmark")
    taken = tmp_path / "taken"
    taken.write_text("")
    with pytest.raises(SystemExit) as stop:
        benchmark.main(["--save-predictions", str(taken), "--out", str(tmp_path / "results")])
    assert stop.value.code == 2 and "exists and is not a folder" in capsys.readouterr().err
    assert not (tmp_path / "results").exists()


def test_touching_cells_table_for_the_sample_and_a_synthetic_folder(tmp_path, capsys):
    import tifffile

    touching = load_script("touching_cells")
    folder = tmp_path / "synthetic"
    folder.mkdir()
    labels = np.zeros((32, 48), np.uint16)
    labels[8:20, 6:16], labels[8:20, 16:26], labels[8:20, 34:44] = 1, 2, 3  # 1 and 2 touch, 3 alone
    tifffile.imwrite(folder / "a.tif", (10 + 100 * (labels > 0)).astype(np.uint16))
    tifffile.imwrite(folder / "a_masks.tif", labels)
    out = tmp_path / "touching.md"
    figure = tmp_path / "pairs.png"
    assert touching.main([str(folder), "--out", str(out), "--figure", str(figure)]) == 0
    text = capsys.readouterr().out
    command = f"python benchmarks/touching_cells.py {folder} --out {out} --figure {figure}"
    assert out.read_text() == f"# Touching cells\n\nCommand: `{command}`\n\n{text}"
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| real, training part | 1 | 73 |" in text and "| real, test part | 1 | 57 |" in text
    assert f"| {folder} | 1 | 3 | 0.333 | 1.000 (1.000-1.000, n=1) |" in text


def test_touching_cells_refuses_a_missing_folder_in_one_line(tmp_path, capsys):
    touching = load_script("touching_cells")
    assert touching.main([str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err.strip().count("\n") == 0


@pytest.mark.parametrize("args, message", [(["--pairs", "0"], "at least 1"), (["--max-images", "0"], "at least 1"),
                                           (["--out", "missing-folder/t.md"], "does not exist"),
                                           (["--figure", "missing-folder/t.png"], "does not exist")])
def test_touching_cells_refuses_bad_options_in_one_line_and_writes_nothing(tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)
    assert load_script("touching_cells").main(args) == 2
    error = capsys.readouterr().err
    assert message in error and error.strip().count("\n") == 0
    assert not list(tmp_path.iterdir())


def test_varying_brightness_of_a_generated_folder_keeps_labels_and_dtype_and_writes_nothing_on_bad_input(tmp_path, capsys):
    from cellcascade.imaging import ImagingModel
    from cellcascade.io.tiff import write_tiff

    vary = load_script("vary_brightness")
    cascade = tmp_path / "cascade"
    (cascade / "imaging").mkdir(parents=True)
    imaging = ImagingModel(dtype="uint16", background_level=20.0, psf_sigma=1.5, noise_gain=0.1, noise_offset=4.0)
    (cascade / "imaging" / "config.json").write_text(json.dumps(imaging.to_dict()))
    source = tmp_path / "generated"
    source.mkdir()
    labels = np.zeros((48, 48), np.uint16)
    labels[5:20, 5:20], labels[28:44, 26:44] = 1, 2
    for name in ("a", "b"):
        write_tiff(source / f"{name}.tif", np.where(labels > 0, 120, 20).astype(np.uint16))
        write_tiff(source / f"{name}_masks.tif", labels)
    out = tmp_path / "varied"
    assert vary.main([str(source), str(out), "--cascade", str(cascade), "--spread", "0.5"]) == 0
    for name in ("a", "b"):
        image, masks = tifffile.imread(out / f"{name}.tif"), tifffile.imread(out / f"{name}_masks.tif")
        np.testing.assert_array_equal(masks, labels)
        assert image.dtype == np.uint16
        cell_means = [image[labels == i].mean() for i in (1, 2)]
        assert not np.allclose(cell_means, 120, atol=2)  # the cells got their own brightness
    assert json.loads((out / "brightness.json").read_text())["spread"] == 0.5
    # a second run with the same seed gives the same files
    again = tmp_path / "again"
    assert vary.main([str(source), str(again), "--cascade", str(cascade), "--spread", "0.5"]) == 0
    np.testing.assert_array_equal(tifffile.imread(again / "a.tif"), tifffile.imread(out / "a.tif"))
    capsys.readouterr()
    for args, message in (([str(source), str(out)], "exists"), ([str(tmp_path / "none"), str(tmp_path / "x")], "no NAME_masks"),
                          ([str(source), str(tmp_path / "y"), "--spread", "-1"], "at least 0")):
        assert vary.main([*args, "--cascade", str(cascade)]) == 2
        assert message in capsys.readouterr().err
    assert vary.main([str(source), str(tmp_path / "z"), "--cascade", str(tmp_path)]) == 2
    assert "missing" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again", "cascade", "generated", "varied"]


def test_cutting_a_generated_folder_gives_the_field_of_view_and_writes_nothing_on_bad_input(tmp_path, capsys):
    from cellcascade.io.tiff import write_tiff
    from cellcascade.population.field_of_view import crop_field_of_view

    cut = load_script("cut_field_of_view")
    source = tmp_path / "generated"
    source.mkdir()
    labels = np.zeros((40, 40), np.uint16)
    labels[2:12, 2:12], labels[15:25, 15:25], labels[28:39, 4:12] = 1, 2, 3  # cells 1 and 3 cross a 6-px margin
    image = (np.arange(1600).reshape(40, 40) % 251).astype(np.uint16)
    write_tiff(source / "a.tif", image)
    write_tiff(source / "a_masks.tif", labels)
    out = tmp_path / "cut"
    assert cut.main([str(source), str(out), "--margin", "6"]) == 0
    assert "3 cells, 2 of them cut by the border (67%)" in capsys.readouterr().out
    np.testing.assert_array_equal(tifffile.imread(out / "a.tif"), image[6:34, 6:34])
    expected, _ = crop_field_of_view(labels, [{"id": 1}, {"id": 2}, {"id": 3}], 6)
    np.testing.assert_array_equal(tifffile.imread(out / "a_masks.tif"), expected)
    assert json.loads((out / "field_of_view.json").read_text())["cut_cells"] == 2
    for args, message in (([str(source), str(out), "--margin", "6"], "exists"),
                          ([str(source), str(tmp_path / "x"), "--margin", "0"], "at least 1"),
                          ([str(source), str(tmp_path / "y"), "--margin", "30"], "margin must be")):
        assert cut.main(args) == 2
        assert message in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut", "generated"]


@pytest.mark.slow
def test_headline_script_generates_benchmarks_both_arms_pools_and_resumes(tmp_path, capsys):
    """A tiny run of the whole headline comparison: generate, both arms, pooled report; a rerun redoes nothing."""
    headline = load_script("headline_gain")
    work = tmp_path / "work"
    options = ["--work", str(work), "--seeds", "0", "--jobs", "2", "--steps", "2", "--checkpoints", "1",
               "--folders", "1", "--images-per-folder", "2", "--size", "64", "64", "--device", "cpu"]
    assert headline.main(options) == 0
    synthetic = sorted(p.name for p in (work / "synthetic-ovl-2").glob("*.tif"))
    assert synthetic == ["s1_img_0000.tif", "s1_img_0000_masks.tif", "s1_img_0001.tif", "s1_img_0001_masks.tif"]
    runs = {arm: json.loads((work / "results" / f"segmentation_sample_headline_{arm}_seed0.json").read_text())
            for arm in ("real", "mixed")}
    assert list(runs["real"]["summary"]) == ["real"]
    assert list(runs["mixed"]["summary"]) == ["real + synthetic-ovl-2"]
    for run in runs.values():  # the recorded recipe, with this run's step budget
        config = run["config"]
        assert config["steps"] == 2 and config["border_paddings"] == [0, 32] and config["segmenter"]["tile"] == 96
        assert config["segmenter"]["device"] == "cpu" and config["n_synthetic"] == 2
    table = (work / "results" / "segmentation_sample_headline.md").read_text()
    assert "| real | 0 |" in table and "| real + synthetic-ovl-2 | 0 |" in table
    logs = sorted(p.name for p in (work / "logs").iterdir())
    assert logs == ["generate_seed_1.log", "mixed_seed_0.log", "real_seed_0.log"]
    # everything is there: a second call only pools again
    before = {p: p.stat().st_mtime_ns for p in (work / "results").glob("*.json")}
    assert headline.main(options) == 0
    assert {p: p.stat().st_mtime_ns for p in (work / "results").glob("*.json")} == before
    # a result made with other options is not taken for this one
    real = work / "results" / "segmentation_sample_headline_real_seed0.json"
    recorded = runs["real"]["config"]["command"].split(" ", 2)[2]
    assert headline._recorded_with(real, shlex.split(recorded))
    assert not headline._recorded_with(real, shlex.split(recorded) + ["--ensemble", "2"])


@pytest.mark.parametrize("args, message", [(["--jobs", "0"], "--jobs must be at least 1"),
                                           (["--size", "16", "64"], "--size must be at least 32 32"),
                                           (["--seeds", "1", "1"], "--seeds must be distinct"),
                                           (["--cascade", "nowhere"], "not a cascade folder")])
def test_headline_script_refuses_bad_options_in_one_line_and_writes_nothing(tmp_path, capsys, args, message):
    headline = load_script("headline_gain")
    with pytest.raises(SystemExit) as exit_info:
        headline.main(["--work", str(tmp_path / "work"), *args])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "work").exists()
