"""The helper scripts in benchmarks/: pooling the seeds of several segmentation benchmark runs."""

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_script(name):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fake_run(seeds, seg_by_arm, steps=600):
    """A benchmark JSON reduced to what pooling reads: config and each arm's per-seed runs."""
    return {
        "config": {"data": "sample", "steps": steps, "seeds": seeds, "command": f"run {seeds}", "threads": 1},
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


@pytest.mark.parametrize(
    "second, message",
    [
        (fake_run([3], {"real": [0.7]}, steps=300), "differ in more than their seeds: steps"),
        (fake_run([2, 3], {"real": [0.7, 0.8]}), "share seeds"),
    ],
)
def test_pooling_refuses_runs_that_do_not_pool(tmp_path, capsys, second, message):
    pool_runs = load_script("pool_segmentation_runs")
    paths = [tmp_path / "segmentation_a.json", tmp_path / "segmentation_b.json"]
    paths[0].write_text(json.dumps(fake_run([0, 1, 2], {"real": [0.7, 0.8, 0.9]})))
    paths[1].write_text(json.dumps(second))
    with pytest.raises(SystemExit) as exit_info:
        pool_runs.main([str(p) for p in paths] + ["--tag", "pooled", "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
