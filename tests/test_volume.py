"""3D generation: 2D masks lifted to 3D (multiview + reconstruction), fit --3d -> generate --dim 3 on tiny configs:
every output format with axes and voxel size, determinism, resume, clear errors."""

import json

import numpy as np
import pytest
import tifffile
import torch
from diffusers import DDIMScheduler
from scipy import ndimage as ndi

from cellcascade.cli import main
from cellcascade.data import load_sample, read_ctc, read_pairs
from cellcascade.errors import CellcascadeError
from cellcascade.models.multiview import build_multiview_unet
from cellcascade.pipelines.cascade import Cascade, MultiviewStage, fit_cascade
from cellcascade.pipelines.lift import largest_component, lift_masks
from cellcascade.pipelines.multiview import MultiviewPipeline
from cellcascade.reconstruction import ring_views
from cellcascade.shapes3d import centred_iou, ellipsoid_of_revolution
from cellcascade.training.loop import TrainConfig
from cellcascade.training.mask import NOISE_SCHEDULE
from cellcascade.training.multiview import MultiviewDataConfig

TINY = dict(crop_size=16, patch_size=16, preset="tiny", device="cpu", progress=False)
TINY_VIEWS = MultiviewDataConfig(size=16, n_side=4, shapes_per_mask=1)
SPACING = (2.0, 1.0, 1.0)


class SphereOracle(MultiviewPipeline):
    """Side views of a sphere: for a disc, every side view is the top view (same frame)."""

    def denoise(self, top, num_inference_steps, generator):
        return top.repeat(1, self.unet.num_views, 1, 1).numpy()


class BlankViews(MultiviewPipeline):
    """A model whose side views are empty: every cell must fall back to the ellipsoid."""

    def denoise(self, top, num_inference_steps, generator):
        return -np.ones((top.shape[0], self.unet.num_views, *top.shape[2:]), np.float32)


def pipeline(kind):
    return kind(build_multiview_unet(32, ring_views(8, top=False), preset="tiny"), DDIMScheduler(**NOISE_SCHEDULE))


def test_a_disc_with_sphere_views_lifts_to_the_sphere_at_anisotropic_spacing():
    yy, xx = np.mgrid[-12:13, -12:13]
    disc = yy**2 + xx**2 <= 100
    lifted = lift_masks(pipeline(SphereOracle), [disc], SPACING)
    zz, yy, xx = np.mgrid[-6:7, -12:13, -12:13]
    ball = largest_component((zz * SPACING[0]) ** 2 + yy**2 + xx**2 <= 100)
    assert lifted.source == ["multiview"] and lifted.spacing == SPACING
    cell = lifted.masks[0]
    assert cell.dtype == bool and cell.ndim == 3
    assert centred_iou(cell, ball) > 0.85
    # physical height ~ diameter: z slices of 2 units, so about half as many slices as xy pixels
    assert abs(cell.shape[0] * SPACING[0] - cell.shape[2]) <= 4


def test_carved_cells_stay_inside_their_2d_mask():
    yy, xx = np.mgrid[-12:13, -12:13]
    notched = (yy**2 + xx**2 <= 100) & ~((yy < -3) & (xx > 3))  # the top view is exact: the notch must stay empty
    for carve in (True, False):
        cell = lift_masks(pipeline(SphereOracle), [notched], SPACING, carve=carve).masks[0]
        footprint = cell.any(axis=0)
        # the best placement of the footprint over the mask: with carving every footprint pixel lies in the mask
        inside = ndi.correlate(notched.astype(int), footprint.astype(int), mode="constant", origin=[
            -(n // 2) for n in footprint.shape])
        if carve:
            assert inside.max() == footprint.sum()
        assert 0.5 * notched.sum() <= footprint.sum() <= 2 * notched.sum()


def test_lifting_is_deterministic_and_empty_views_fall_back_to_the_ellipsoid():
    yy, xx = np.mgrid[-9:10, -14:15]
    ellipse = (yy / 8) ** 2 + (xx / 13) ** 2 <= 1
    oracle = pipeline(SphereOracle)
    a = lift_masks(oracle, [ellipse], SPACING, generator=torch.Generator().manual_seed(3))
    b = lift_masks(oracle, [ellipse], SPACING, generator=torch.Generator().manual_seed(3))
    np.testing.assert_array_equal(a.masks[0], b.masks[0])
    blank = lift_masks(pipeline(BlankViews), [ellipse, ellipse[2:-2]], SPACING, retries=1)
    assert blank.source == ["ellipsoid", "ellipsoid"]
    np.testing.assert_array_equal(blank.masks[0], ellipsoid_of_revolution(ellipse, SPACING))


def test_lift_rejects_bad_input():
    oracle = pipeline(SphereOracle)
    with pytest.raises(CellcascadeError, match="no masks"):
        lift_masks(oracle, [], SPACING)
    with pytest.raises(CellcascadeError, match="spacing"):
        lift_masks(oracle, [np.ones((5, 5), bool)], (0.0, 1.0, 1.0))
    with pytest.raises(CellcascadeError, match="2D"):
        lift_masks(oracle, [np.ones((2, 5, 5), bool)], SPACING)


def multiview_stage(steps=4):
    return MultiviewStage(data=TINY_VIEWS, config=TrainConfig(steps=steps, batch_size=4, checkpoint_every=2))


def tiny_configs():
    return TrainConfig(steps=2, batch_size=4, checkpoint_every=2), TrainConfig(steps=2, batch_size=4, checkpoint_every=2)


@pytest.fixture(scope="module")
def cascade_3d(tmp_path_factory):
    masks, texture = tiny_configs()
    return fit_cascade(load_sample(), tmp_path_factory.mktemp("cascade3d") / "model", mask_config=masks,
                       texture_config=texture, multiview=multiview_stage(), **TINY)


GENERATE_3D = ["--dim", "3", "--n", "2", "--size", "12", "40", "48", "--z-step", "2", "--pixel-size", "0.5",
               "--cells", "2-3", "--shapes-per-image", "2", "--steps", "2", "--multiview-steps", "2", "--fit-steps", "3",
               "--texture-steps", "2", "--seed", "4", "--quiet"]


def test_cascade_with_a_3d_stage_has_it_in_the_index(cascade_3d):
    info = json.loads((cascade_3d / "cascade.json").read_text())
    assert info["stages"]["multiview"] == "multiview"
    training = json.loads((cascade_3d / "multiview" / "training.json").read_text())
    assert training["cells_2d"] > 50 and training["data"]["n_side"] == 4
    assert Cascade.load(cascade_3d).multiview.views == ring_views(4, top=False)


@pytest.mark.parametrize("fmt", ["tiff", "ctc", "ome-zarr"])
def test_generate_3d_every_format_with_axes_and_voxel_size(cascade_3d, tmp_path, fmt):
    out = tmp_path / fmt
    assert main(["generate", str(cascade_3d), *GENERATE_3D, "--format", fmt, "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert [s["index"] for s in manifest["samples"]] == [0, 1]
    assert (out / "preview.png").stat().st_size > 1000
    if fmt == "tiff":
        items = [(i.image, i.labels) for i in read_pairs(out)]
        with tifffile.TiffFile(out / manifest["samples"][0]["image"]) as tif:
            assert tif.series[0].axes == "ZYX" and tif.imagej_metadata["spacing"] == pytest.approx(1.0)
            assert 1 / tif.pages[0].resolution[0] == pytest.approx(0.5)
    elif fmt == "ctc":
        items = [(i.image, i.labels) for i in read_ctc(out)]
    else:
        from ome_zarr.io import parse_url
        from ome_zarr.reader import Reader

        items = []
        for s in manifest["samples"]:
            nodes = list(Reader(parse_url(str(out / s["image"])))())
            [labels] = [n for n in nodes if str(n.zarr.path).endswith("labels/cells")]
            assert [a["name"] for a in nodes[0].metadata["axes"]] == ["z", "y", "x"]
            assert nodes[0].metadata["coordinateTransformations"][0][0]["scale"] == pytest.approx([1.0, 0.5, 0.5])
            items.append((np.asarray(nodes[0].data[0]), np.asarray(labels.data[0])))
    for (image, labels), sample in zip(items, manifest["samples"]):
        assert image.shape == labels.shape == (12, 40, 48)
        assert image.dtype == np.uint16
        assert labels.max() == len(sample["cells"]) >= 1
        assert {c["shape"] for c in sample["cells"]} <= {"multiview", "ellipsoid"}


def test_same_seed_same_volume_independent_of_n(cascade_3d, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["generate", str(cascade_3d), *GENERATE_3D, "--out", str(a)]) == 0
    args = list(GENERATE_3D)
    args[args.index("--n") + 1] = "1"
    assert main(["generate", str(cascade_3d), *args, "--out", str(b)]) == 0
    for name in ("img_0000.tif", "img_0000_masks.tif"):
        np.testing.assert_array_equal(tifffile.imread(a / name), tifffile.imread(b / name))
    assert not np.array_equal(tifffile.imread(a / "img_0000.tif"), tifffile.imread(a / "img_0001.tif"))


def test_resumed_3d_stage_equals_uninterrupted(tmp_path):
    masks, texture = tiny_configs()
    items = load_sample()
    work = fit_cascade(items, tmp_path / "a", mask_config=masks, texture_config=texture,
                       multiview=multiview_stage(), stop_after={"multiview": 2}, **TINY)
    assert work.name == "a.partial" and not (work / "multiview").exists()
    resumed = fit_cascade(items, tmp_path / "a", mask_config=masks, texture_config=texture,
                          multiview=multiview_stage(), **TINY)
    straight = fit_cascade(items, tmp_path / "b", mask_config=masks, texture_config=texture,
                           multiview=multiview_stage(), **TINY)
    files = sorted((resumed / "multiview").rglob("*.safetensors"))
    assert files
    for file in files:
        assert file.read_bytes() == (straight / file.relative_to(resumed)).read_bytes(), file


def test_generate_3d_errors_leave_nothing(cascade_3d, tmp_path):
    masks, texture = tiny_configs()
    flat = fit_cascade(load_sample(), tmp_path / "flat", mask_config=masks, texture_config=texture, **TINY)
    out = tmp_path / "out"
    assert main(["generate", str(flat), *GENERATE_3D, "--out", str(out)]) == 2
    wrong_size = list(GENERATE_3D)
    wrong_size[wrong_size.index("--size") : wrong_size.index("--size") + 4] = ["--size", "32", "40"]
    assert main(["generate", str(cascade_3d), *wrong_size, "--out", str(out)]) == 2
    assert main(["generate", str(cascade_3d), *GENERATE_3D, "--z-step", "0", "--out", str(out)]) == 2
    assert not out.exists()


def test_fit_3d_on_the_command_line_with_optional_3d_masks(tmp_path, pairs_folder):
    rng = np.random.default_rng(0)
    for image in pairs_folder.glob("img?.tif"):  # 2 images of 6 ellipses: add camera noise (the imaging fit needs it)
        tifffile.imwrite(image, rng.poisson(tifffile.imread(image).astype(float)).astype(np.uint16))
    volumes = tmp_path / "volumes"
    volumes.mkdir()
    zz, yy, xx = np.mgrid[:12, :40, :40]
    labels = np.zeros((12, 40, 40), np.uint16)
    labels[(zz - 6) ** 2 / 16 + (yy - 12) ** 2 / 36 + (xx - 12) ** 2 / 49 <= 1] = 1
    labels[(zz - 6) ** 2 / 9 + (yy - 28) ** 2 / 25 + (xx - 26) ** 2 / 25 <= 1] = 2
    tifffile.imwrite(volumes / "v.tif", (labels * 50).astype(np.uint16))
    tifffile.imwrite(volumes / "v_masks.tif", labels)
    common = ["fit", str(pairs_folder), "--preset", "tiny", "--crop-size", "16", "--patch-size", "16",
              "--mask-steps", "2", "--texture-steps", "2", "--multiview-steps", "2", "--batch-size", "4",
              "--views", "4", "--quiet"]
    out = tmp_path / "model"
    assert main([*common, "--masks-3d", str(volumes), "--masks-3d-z-step", "2", "--multiview-prediction", "epsilon",
                 "--out", str(out)]) == 0
    training = json.loads((out / "multiview" / "training.json").read_text())
    assert training["cells_3d"] == 2 and training["cells_2d"] == 12 and training["prediction_type"] == "epsilon"
    assert training["view_chords"] is True  # fit's default
    assert training["data"]["spacing"] == [2.0, 1.0, 1.0] and training["data"]["axial_ratio"] == [0.6, 1.0]
    multiview = Cascade.load(out).multiview
    assert multiview is not None and multiview.scheduler.config.prediction_type == "epsilon"
    bad = tmp_path / "bad"
    assert main([*common, "--3d", "--axial-ratio", "1", "0.5", "--out", str(bad)]) == 2
    assert main([*common, "--masks-3d", str(pairs_folder), "--out", str(bad)]) == 2  # 2D data as 3D masks
    assert not bad.exists() and not bad.with_name("bad.partial").exists()


def test_axial_psf_smooths_along_z_only_and_keeps_the_labels(cascade_3d, tmp_path):
    from cellcascade.evaluation.continuity import stripe_score

    plain, blurred = tmp_path / "plain", tmp_path / "blurred"
    args = list(GENERATE_3D)
    args[args.index("--n") + 1] = "1"
    assert main(["generate", str(cascade_3d), *args, "--out", str(plain)]) == 0
    assert main(["generate", str(cascade_3d), *args, "--axial-psf", "3", "--out", str(blurred)]) == 0
    labels = tifffile.imread(plain / "img_0000_masks.tif")
    np.testing.assert_array_equal(labels, tifffile.imread(blurred / "img_0000_masks.tif"))
    scores = [stripe_score(tifffile.imread(d / "img_0000.tif").astype(float), labels, (2.0, 1.0, 1.0))
              for d in (plain, blurred)]
    assert scores[1] < 0.7 * scores[0]
    assert main(["generate", str(cascade_3d), *args, "--axial-psf", "0", "--out", str(tmp_path / "bad")]) == 2
