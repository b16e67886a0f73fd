import json
import subprocess
import sys

import numpy as np
import pytest
import tifffile

from cellcascade.cli import build_parser, main

from conftest import ellipse_labels

SUBCOMMANDS = ["train-masks", "sample-masks", "populate", "fit", "generate", "evaluate", "benchmark"]


def run_cli(*args):
    """Run the real console entry point in a subprocess: (exit code, stdout, stderr)."""
    proc = subprocess.run([sys.executable, "-m", "cellcascade", *map(str, args)], capture_output=True, text=True)
    return proc.returncode, proc.stdout, proc.stderr


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_subcommand_has_help_for_every_option(command, capsys):
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    parser = build_parser()
    sub = parser._subparsers._group_actions[0].choices[command]
    for action in sub._actions:
        assert action.help, f"{command}: option {action.dest} has no help"
        for flag in action.option_strings:
            assert flag in text


def test_generate_help_names_the_default_axial_psf():
    from cellcascade.imaging.psf import DEFAULT_AXIAL_PSF

    sub = build_parser()._subparsers._group_actions[0].choices["generate"]
    [action] = [a for a in sub._actions if "--axial-psf" in a.option_strings]
    assert f"default {DEFAULT_AXIAL_PSF}," in action.help


def test_populate_writes_labels_preview_and_manifest(tmp_path):
    """With the shipped default mask model: the README's main job in small."""
    out = tmp_path / "out"
    args = ["populate", "default", "--n", "2", "--size", "64", "80", "--cells", "3-5", "--steps", "10",
            "--shapes-per-image", "3", "--seed", "3", "--out", out, "--quiet"]
    assert main(list(map(str, args))) == 0
    labels = [tifffile.imread(out / "labels" / f"label_{i:04d}.tif") for i in range(2)]
    assert all(l.shape == (64, 80) and l.dtype == np.uint16 and l.max() >= 1 for l in labels)
    manifest = json.loads((out / "manifest.json").read_text())
    assert [s["file"] for s in manifest["samples"]] == ["labels/label_0000.tif", "labels/label_0001.tif"]
    assert len(manifest["samples"][0]["cells"]) == labels[0].max()
    assert (out / "preview.png").stat().st_size > 1000
    # Same seed, same files; image 0 does not depend on how many images are made.
    again = tmp_path / "again"
    args[args.index("--n") + 1] = "1"
    args[args.index("--out") + 1] = again
    assert main(list(map(str, args))) == 0
    np.testing.assert_array_equal(tifffile.imread(again / "labels" / "label_0000.tif"), labels[0])


@pytest.mark.parametrize("args, message", [
    (["train-masks", "/nowhere/at/all", "--out", "{tmp}/m"], "no such file or folder"),
    (["train-masks", "{float_data}", "--out", "{tmp}/m"], "integer instance labels"),
    (["train-masks", "{data3d}", "--out", "{tmp}/m"], "2D data is required"),
    (["populate", "{tmp}/no-model", "--out", "{tmp}/o"], "model folder not found"),
    (["populate", "default", "--clustering", "1.5", "--out", "{tmp}/o"], "within [0, 1]"),
    (["populate", "default", "--size", "-5", "64", "--out", "{tmp}/o"], "positive integer"),
    (["populate", "default", "--cells", "9-3", "--out", "{tmp}/o"], "MIN <= MAX"),
    (["populate", "default", "--overlap", "1.5", "--out", "{tmp}/o"], "--overlap"),
    (["populate", "default", "--density", "-2", "--out", "{tmp}/o"], "--density must be positive"),
    (["populate", "default", "--min-solidity", "1.5", "--out", "{tmp}/o"], "--min-solidity must be a number in [0, 1]"),
    (["sample-masks", "default", "--min-solidity", "nan", "--out", "{tmp}/o"], "--min-solidity must be a number in [0, 1]"),
    (["populate", "default", "--out", "{tmp}/missing-parent/o"], "does not exist"),
    (["sample-masks", "{model_no_weights}", "--out", "{tmp}/o"], "weights missing"),
])
def test_bad_input_one_line_no_traceback_no_output(tmp_path, tiny_mask_model, args, message):
    import shutil

    float_data = tmp_path / "float"
    float_data.mkdir()
    tifffile.imwrite(float_data / "a.tif", np.ones((32, 32), np.uint8))
    tifffile.imwrite(float_data / "a_masks.tif", ellipse_labels((32, 32), n=1).astype(np.float32) * 0.5)
    data3d = tmp_path / "d3"
    data3d.mkdir()
    labels = np.zeros((4, 16, 16), np.uint16)
    labels[1:3, 4:9, 4:9] = 1
    tifffile.imwrite(data3d / "a.tif", np.ones((4, 16, 16), np.uint16), photometric="minisblack")
    tifffile.imwrite(data3d / "a_masks.tif", labels, photometric="minisblack")
    model_no_weights = tmp_path / "broken"
    shutil.copytree(tiny_mask_model, model_no_weights)
    (model_no_weights / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    before = set(tmp_path.rglob("*"))
    filled = [a.format(tmp=tmp_path, float_data=float_data, data3d=data3d, model_no_weights=model_no_weights) for a in args]
    code, out, err = run_cli(*filled)
    assert code == 2
    assert message in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert set(tmp_path.rglob("*")) == before  # nothing written
