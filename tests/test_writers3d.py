"""3D outputs: a placed 3D population written as ImageJ TIFF, CTC layout and OME-Zarr with its voxel size; the
orthogonal-view preview; the manifest with the 3D cell table."""

import json

import matplotlib.image
import numpy as np
import pytest
import tifffile

from cellcascade.data import read_ctc
from cellcascade.errors import CellcascadeError
from cellcascade.io.dataset_writer import DatasetWriter
from cellcascade.io.manifest import write_manifest
from cellcascade.io.preview import orthogonal_slices, save_volume_preview, volume_preview_figure
from cellcascade.population import place_cells_3d

SPACING = (2.0, 0.25, 0.5)  # (dz, dy, dx) µm, all different


@pytest.fixture(scope="module")
def volume():
    """(image uint16 (Z, Y, X), labels uint16, cell table) of a small placed population."""
    z, y, x = np.mgrid[-2:3, -12:13, -6:7]
    nucleus = (z * 2.0 / 4.5) ** 2 + (y * 0.25 / 3.0) ** 2 + (x * 0.5 / 3.0) ** 2 <= 1
    population = place_cells_3d([nucleus], (10, 64, 40), spacing=SPACING, n_cells=5, rng=0)
    rng = np.random.default_rng(0)
    image = (100 + 800 * (population.labels > 0) + rng.integers(0, 50, population.labels.shape)).astype(np.uint16)
    return image, population.labels, population.cells


def test_tiff_is_an_imagej_zyx_stack_with_the_voxel_size(tmp_path, volume):
    image, labels, _ = volume
    files = DatasetWriter(tmp_path, "tiff", spacing=SPACING).add(0, image, labels)
    for key, expected in (("image", image), ("labels", labels)):
        with tifffile.TiffFile(tmp_path / files[key]) as tif:
            assert tif.is_imagej
            series = tif.series[0]
            assert series.axes == "ZYX" and series.shape == (10, 64, 40)
            np.testing.assert_array_equal(series.asarray(), expected)
            assert tif.imagej_metadata["spacing"] == pytest.approx(SPACING[0])
            assert tif.imagej_metadata["unit"] == "micron"
            x_res, y_res = tif.pages[0].resolution  # pixels per unit
            assert (1 / y_res, 1 / x_res) == pytest.approx(SPACING[1:])


def test_ctc_3d_layout_reads_back_with_read_ctc(tmp_path, volume):
    image, labels, _ = volume
    writer = DatasetWriter(tmp_path, "ctc", spacing=SPACING, count=2)
    files = [writer.add(i, image if i == 0 else image[::-1], labels if i == 0 else labels[::-1]) for i in range(2)]
    assert files[1] == {"image": "01/t001.tif", "labels": "01_GT/SEG/man_seg001.tif"}
    items = read_ctc(tmp_path)
    assert [item.name for item in items] == ["01/t000", "01/t001"]
    np.testing.assert_array_equal(items[0].image, image)
    np.testing.assert_array_equal(items[0].labels, labels)
    np.testing.assert_array_equal(items[1].labels, labels[::-1])
    assert items[0].image.shape == items[0].labels.shape == (10, 64, 40)
    with tifffile.TiffFile(tmp_path / "01_GT" / "SEG" / "man_seg000.tif") as tif:
        assert tif.series[0].axes == "ZYX" and tif.imagej_metadata["spacing"] == pytest.approx(2.0)


def test_ome_zarr_3d_round_trip_with_physical_scale(tmp_path, volume):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    image, labels, _ = volume
    files = DatasetWriter(tmp_path, "ome-zarr", spacing=SPACING).add(0, image, labels)
    nodes = list(Reader(parse_url(str(tmp_path / files["image"])))())
    label_nodes = [n for n in nodes if str(n.zarr.path).endswith("labels/cells")]
    assert len(label_nodes) == 1
    for node, expected in ((nodes[0], image), (label_nodes[0], labels)):
        np.testing.assert_array_equal(np.asarray(node.data[0]), expected)
        assert [a["name"] for a in node.metadata["axes"]] == ["z", "y", "x"]
        assert all(a["unit"] == "micrometer" for a in node.metadata["axes"])
        scale = node.metadata["coordinateTransformations"][0][0]
        assert scale["type"] == "scale" and scale["scale"] == pytest.approx(SPACING)


def test_writer_refuses_a_2d_spacing_for_a_volume(tmp_path, volume):
    image, labels, _ = volume
    with pytest.raises(CellcascadeError, match="spacing"):
        DatasetWriter(tmp_path, "tiff", spacing=SPACING[1:]).add(0, image, labels)


def test_orthogonal_slices_are_the_planes_through_the_position():
    volume = np.arange(4 * 5 * 6).reshape(4, 5, 6)
    views = orthogonal_slices(volume, (1, 2, 3))
    np.testing.assert_array_equal(views["XY"], volume[1])
    np.testing.assert_array_equal(views["XZ"], volume[:, 2, :])
    np.testing.assert_array_equal(views["YZ"], volume[:, :, 3])
    np.testing.assert_array_equal(orthogonal_slices(volume)["YZ"], volume[:, :, 3])  # default: the centre voxel
    np.testing.assert_array_equal(orthogonal_slices(volume)["XY"], volume[2])


def test_preview_draws_every_view_at_its_physical_aspect(volume):
    import matplotlib.pyplot as plt

    image, labels, _ = volume
    fig = volume_preview_figure(labels, image, spacing=SPACING, title="t")
    fig.canvas.draw()
    axes = fig.get_axes()
    assert [ax.get_label() for ax in axes] == ["XY", "XZ", "YZ"] * 2
    depth, rows, columns = labels.shape
    expected = {"XY": rows * SPACING[1] / (columns * SPACING[2]),  # displayed height / width, physical
                "XZ": depth * SPACING[0] / (columns * SPACING[2]),
                "YZ": rows * SPACING[1] / (depth * SPACING[0])}
    for ax in axes:
        box = ax.get_window_extent()
        assert box.height / box.width == pytest.approx(expected[ax.get_label()], rel=0.05)
    plt.close(fig)


def test_preview_png_is_written(tmp_path, volume):
    image, labels, _ = volume
    save_volume_preview(tmp_path / "preview.png", labels, image, spacing=SPACING)
    save_volume_preview(tmp_path / "labels.png", labels, spacing=SPACING, position=(5, 30, 20))
    for name in ("preview.png", "labels.png"):
        picture = matplotlib.image.imread(tmp_path / name)
        assert picture.ndim == 3 and picture.shape[0] > 100 and picture.shape[1] > 100
        assert picture[..., :3].std() > 0.05  # not blank
    with pytest.raises(CellcascadeError, match="Z, Y, X"):
        save_volume_preview(tmp_path / "flat.png", labels[0])


def test_manifest_holds_the_3d_cell_table(tmp_path, volume):
    _, _, cells = volume
    write_manifest(tmp_path / "manifest.json", command="test", config={"spacing": SPACING},
                   samples=[{"file": "01/t000.tif", "seed": 0, "cells": cells}])
    data = json.loads((tmp_path / "manifest.json").read_text())
    assert data["config"]["spacing"] == list(SPACING)
    stored = data["samples"][0]["cells"]
    assert len(stored) == len(cells) == 5
    np.testing.assert_allclose(stored[0]["rotation"], cells[0]["rotation"])
    assert len(stored[0]["centroid"]) == 3
