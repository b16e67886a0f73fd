"""fit -> generate on tiny configs: every output format, determinism, resume, bad input."""

import json

import numpy as np
import pytest
import tifffile

from cellcascade.cli import main
from cellcascade.data import load_sample, read_ctc, read_pairs
from cellcascade.errors import CellcascadeError
from cellcascade.pipelines.cascade import Cascade, fit_cascade, finish_image
from cellcascade.imaging import ImagingModel
from cellcascade.training.loop import TrainConfig

TINY = dict(crop_size=16, patch_size=16, preset="tiny", device="cpu", progress=False)


def tiny_configs():
    return TrainConfig(steps=4, batch_size=4, checkpoint_every=2), TrainConfig(steps=4, batch_size=4, checkpoint_every=2)


@pytest.fixture(scope="module")
def tiny_cascade(tmp_path_factory):
    masks, texture = tiny_configs()
    return fit_cascade(load_sample(), tmp_path_factory.mktemp("cascade") / "model", mask_config=masks,
                       texture_config=texture, **TINY)


GENERATE = ["--n", "2", "--size", "40", "48", "--cells", "2-3", "--shapes-per-image", "2", "--steps", "2",
            "--texture-steps", "2", "--seed", "5", "--quiet"]


def test_cascade_folder_layout(tiny_cascade):
    info = json.loads((tiny_cascade / "cascade.json").read_text())
    assert info["format"] == "cellcascade-cascade-2d" and info["dtype"] == "uint16"
    for part in ("masks/model_index.json", "texture/model_index.json", "imaging/config.json"):
        assert (tiny_cascade / part).is_file()
    assert not list(tiny_cascade.rglob("*.bin")) and list(tiny_cascade.rglob("*.safetensors"))
    assert not tiny_cascade.with_name("model.partial").exists()


@pytest.mark.parametrize("fmt", ["tiff", "ctc", "ome-zarr"])
def test_generate_every_format_round_trips(tiny_cascade, tmp_path, fmt):
    out = tmp_path / fmt
    assert main(["generate", str(tiny_cascade), *GENERATE, "--format", fmt, "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert [s["index"] for s in manifest["samples"]] == [0, 1]
    assert (out / "preview.png").stat().st_size > 1000
    if fmt == "tiff":
        items = read_pairs(out)
    elif fmt == "ctc":
        items = read_ctc(out)
    else:
        import zarr

        items = []
        for s in manifest["samples"]:
            image = np.asarray(zarr.open_group(str(out / s["image"]), mode="r")["s0"])
            labels = np.asarray(zarr.open_group(str(out / s["labels"]), mode="r")["s0"])
            items.append((image, labels))
    for item, sample in zip(items, manifest["samples"]):
        image, labels = (item.image, item.labels) if hasattr(item, "image") else item
        assert image.shape == labels.shape == (40, 48)
        assert image.dtype == np.uint16  # the real data's dtype
        assert labels.max() == len(sample["cells"])


def test_same_seed_same_files_and_sample_independent_of_n(tiny_cascade, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["generate", str(tiny_cascade), *GENERATE, "--out", str(a)]) == 0
    args = list(GENERATE)
    args[args.index("--n") + 1] = "1"
    assert main(["generate", str(tiny_cascade), *args, "--out", str(b)]) == 0
    for name in ("img_0000.tif", "img_0000_masks.tif"):
        np.testing.assert_array_equal(tifffile.imread(a / name), tifffile.imread(b / name))
    assert not np.array_equal(tifffile.imread(a / "img_0000.tif"), tifffile.imread(a / "img_0001.tif"))


def test_border_margin_cuts_a_larger_scene_to_the_image(tiny_cascade):
    """The field of view is the window of the scene made with the margin: same labels (cut), same pixels."""
    from cellcascade.population.field_of_view import crop_field_of_view

    cascade = Cascade.load(tiny_cascade)
    options = dict(seed=3, density=40.0, shapes_per_image=2, mask_steps=2, texture_steps=2)
    window = cascade.generate(0, (40, 48), border_margin=6, **options)
    scene = cascade.generate(0, (52, 60), **options)
    assert window.image.shape == window.labels.shape == (40, 48)
    np.testing.assert_array_equal(window.image, scene.image[6:46, 6:54])
    labels, table = crop_field_of_view(scene.labels, scene.cells, 6)
    np.testing.assert_array_equal(window.labels, labels)
    assert window.cells == table and window.labels.max() == len(window.cells)
    border = np.concatenate([window.labels[0], window.labels[-1], window.labels[:, 0], window.labels[:, -1]])
    cut_ids = {c["id"] for c in window.cells if c["cut"]}
    assert cut_ids and cut_ids <= set(border[border > 0].tolist())  # cut cells touch the border
    again = cascade.generate(0, (40, 48), border_margin=6, **options)
    np.testing.assert_array_equal(again.image, window.image)
    with pytest.raises(CellcascadeError, match="border margin"):
        cascade.generate(0, (40, 48), border_margin=-1, **options)


def test_generate_refuses_a_bad_border_margin_before_writing(tiny_cascade, tmp_path, capsys):
    for extra, message in ((["--border-margin", "-2"], "at least 0"), (["--dim", "3", "--size", "8", "40", "48"], "--dim 2")):
        args = [a for a in GENERATE if a not in ("--size", "40", "48")] if "--dim" in extra else GENERATE
        assert main(["generate", str(tiny_cascade), *args, "--border-margin", "4", *extra, "--out", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_resumed_fit_equals_uninterrupted(tmp_path):
    masks, texture = tiny_configs()
    items = load_sample()
    work = fit_cascade(items, tmp_path / "a", mask_config=masks, texture_config=texture, stop_after={"texture": 2}, **TINY)
    assert work.name == "a.partial" and (work / "masks").is_dir() and not (tmp_path / "a").exists()
    resumed = fit_cascade(items, tmp_path / "a", mask_config=masks, texture_config=texture, **TINY)
    straight = fit_cascade(items, tmp_path / "b", mask_config=masks, texture_config=texture, **TINY)
    for stage in ("masks", "texture"):
        for file in (resumed / stage).rglob("*.safetensors"):
            twin = straight / file.relative_to(resumed)
            assert file.read_bytes() == twin.read_bytes(), file
    assert json.loads((resumed / "imaging/config.json").read_text()) == json.loads((straight / "imaging/config.json").read_text())


def test_bad_cascade_folders(tiny_cascade, tmp_path):
    with pytest.raises(CellcascadeError, match="not found"):
        Cascade.load(tmp_path / "nothing")
    with pytest.raises(CellcascadeError, match="cascade.json missing"):
        Cascade.load(tiny_cascade / "masks")
    with pytest.raises(CellcascadeError, match="already exists"):
        fit_cascade(load_sample(), tiny_cascade, **TINY)
    with pytest.raises(CellcascadeError, match="crop size must be"):
        fit_cascade(load_sample(), tmp_path / "new", **{**TINY, "preset": "cpu", "crop_size": 30})
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_finish_image_gives_real_dtype_and_missing_noise():
    imaging = ImagingModel(dtype="uint8", background_level=10, noise_gain=2.0, noise_offset=4.0)
    flat = np.full((64, 64), 50.0, np.float32)
    out = finish_image(flat, imaging, np.random.default_rng(0))
    assert out.dtype == np.uint8
    assert 0.6 * np.sqrt(104) < out.std() < 1.4 * np.sqrt(104)  # variance 2*50 + 4 added to a noiseless image


def test_brightness_spread_varies_the_cells_and_keeps_the_labels(tiny_cascade):
    cascade = Cascade.load(tiny_cascade)
    options = dict(seed=3, density=40.0, shapes_per_image=2, mask_steps=2, texture_steps=2)
    plain = cascade.generate(0, (40, 48), **options)
    varied = cascade.generate(0, (40, 48), brightness_spread=0.5, **options)
    np.testing.assert_array_equal(varied.labels, plain.labels)
    assert varied.cells == plain.cells and varied.image.dtype == plain.image.dtype
    assert not np.array_equal(varied.image, plain.image)
    again = cascade.generate(0, (40, 48), brightness_spread=0.5, **options)
    np.testing.assert_array_equal(again.image, varied.image)


def test_generate_refuses_a_bad_brightness_spread_before_writing(tiny_cascade, tmp_path, capsys):
    for extra, message in ((["--brightness-spread", "-1"], "at least 0"),
                           (["--brightness-spread", "0.3", "--dim", "3", "--size", "8", "40", "48"], "--dim 2")):
        args = [a for a in GENERATE if a not in ("--size", "40", "48")] if "--dim" in extra else GENERATE
        assert main(["generate", str(tiny_cascade), *args, *extra, "--out", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
