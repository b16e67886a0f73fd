"""Dataset writers: TIFF pairs, Cell Tracking Challenge layout, OME-Zarr; round trips in 2D and 3D."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from cellcascade.data import read_ctc, read_pairs
from cellcascade.errors import CellcascadeError
from cellcascade.io.dataset_writer import FORMATS, DatasetWriter, write_sample

SPACING = {2: (0.25, 0.5), 3: (2.0, 0.25, 0.5)}  # (y, x) / (z, y, x) in micrometres, all different


def make_sample(ndim: int, seed: int, dtype=np.uint16) -> tuple[np.ndarray, np.ndarray]:
    """A small random image and a label image with a few boxes (ids 1..4), (Y, X) or (Z, Y, X)."""
    rng = np.random.default_rng(seed)
    shape = (12, 20) if ndim == 2 else (3, 12, 20)
    labels = np.zeros(shape, np.int32)
    for i in range(4):
        labels[..., 2:8, 1 + 4 * i: 4 + 4 * i] = i + 1
    image = rng.integers(0, np.iinfo(dtype).max, shape, endpoint=True).astype(dtype)
    return image, labels


def read_ome_zarr(path):
    """(image node, labels node) from ome_zarr's reader: each with .data (list of levels) and .metadata."""
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    nodes = list(Reader(parse_url(str(path)))())
    image = nodes[0]
    labels = [n for n in nodes if str(n.zarr.path).endswith("labels/cells")]
    assert len(labels) == 1
    return image, labels[0]


def write_dataset(folder, format, ndim, n=2, dtype=np.uint16, spacing=True):
    writer = DatasetWriter(folder, format, spacing=SPACING[ndim] if spacing else None, count=n)
    samples = [make_sample(ndim, seed, dtype) for seed in range(n)]
    files = [writer.add(i, image, labels) for i, (image, labels) in enumerate(samples)]
    return samples, files


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_tiff_pairs_round_trip_through_read_pairs(tmp_path, ndim, dtype):
    samples, files = write_dataset(tmp_path, "tiff", ndim, dtype=dtype)
    assert files[1] == {"image": "img_0001.tif", "labels": "img_0001_masks.tif"}
    items = read_pairs(tmp_path)
    assert [item.name for item in items] == ["img_0000", "img_0001"]
    for item, (image, labels) in zip(items, samples):
        assert item.image.dtype == dtype and item.image.shape == image.shape
        np.testing.assert_array_equal(item.image, image)
        np.testing.assert_array_equal(item.labels, labels)
    assert tifffile.imread(tmp_path / "img_0000_masks.tif").dtype == np.uint16


@pytest.mark.parametrize("ndim", [2, 3])
def test_ctc_layout_round_trip_through_read_ctc(tmp_path, ndim):
    samples, files = write_dataset(tmp_path, "ctc", ndim, n=3)
    assert files[2] == {"image": "01/t002.tif", "labels": "01_GT/SEG/man_seg002.tif"}
    assert sorted(p.name for p in (tmp_path / "01").iterdir()) == ["t000.tif", "t001.tif", "t002.tif"]
    items = read_ctc(tmp_path)
    assert [item.name for item in items] == ["01/t000", "01/t001", "01/t002"]
    for item, (image, labels) in zip(items, samples):
        assert item.image.dtype == np.uint16 and item.image.ndim == ndim
        np.testing.assert_array_equal(item.image, image)
        np.testing.assert_array_equal(item.labels, labels)


def test_ctc_frame_numbers_widen_past_1000_frames(tmp_path):
    assert DatasetWriter(tmp_path, "ctc", count=1000).files(999)["image"] == "01/t999.tif"
    writer = DatasetWriter(tmp_path, "ctc", count=1001)
    assert writer.files(7) == {"image": "01/t0007.tif", "labels": "01_GT/SEG/man_seg0007.tif"}
    assert writer.files(1000)["image"] == "01/t1000.tif"
    image, labels = make_sample(2, 0)
    writer.add(1000, image, labels)
    np.testing.assert_array_equal(read_ctc(tmp_path)[0].labels, labels)
    with pytest.raises(CellcascadeError, match="count="):
        DatasetWriter(tmp_path, "ctc").files(1000)  # 3 digits without a count: no silent mix of widths
    with pytest.raises(CellcascadeError, match="out of range"):
        DatasetWriter(tmp_path, "tiff", count=2).files(2)


def test_3d_tiff_has_zyx_axes_and_voxel_size(tmp_path):
    write_dataset(tmp_path, "tiff", 3, n=1)
    for name in ("img_0000.tif", "img_0000_masks.tif"):
        with tifffile.TiffFile(tmp_path / name) as tif:
            assert tif.is_imagej
            assert tif.series[0].axes == "ZYX" and tif.series[0].shape == (3, 12, 20)
            assert tif.imagej_metadata["spacing"] == pytest.approx(2.0)
            assert tif.imagej_metadata["unit"] == "micron"
            x_res, y_res = tif.pages[0].resolution  # pixels per unit
            assert (1 / y_res, 1 / x_res) == pytest.approx((0.25, 0.5))


def test_2d_tiff_has_pixel_size_and_no_spacing_means_pixels(tmp_path):
    write_dataset(tmp_path / "um", "ctc", 2, n=1)
    with tifffile.TiffFile(tmp_path / "um" / "01" / "t000.tif") as tif:
        assert tif.series[0].axes == "YX" and tif.imagej_metadata["unit"] == "micron"
        assert tif.pages[0].resolution == pytest.approx((2.0, 4.0))
    write_dataset(tmp_path / "px", "tiff", 3, n=1, spacing=False)
    with tifffile.TiffFile(tmp_path / "px" / "img_0000.tif") as tif:
        assert tif.series[0].axes == "ZYX" and tif.imagej_metadata["unit"] == "pixel"
        assert "spacing" not in tif.imagej_metadata


@pytest.mark.parametrize("ndim", [2, 3])
def test_ome_zarr_round_trip_with_axes_and_scale(tmp_path, ndim):
    samples, files = write_dataset(tmp_path, "ome-zarr", ndim, dtype=np.uint8)
    assert files[1] == {"image": "img_0001.ome.zarr", "labels": "img_0001.ome.zarr/labels/cells"}
    axes = ["z", "y", "x"][-ndim:]
    for i, (image, labels) in enumerate(samples):
        image_node, labels_node = read_ome_zarr(tmp_path / files[i]["image"])
        for node, expected in ((image_node, image), (labels_node, labels)):
            assert len(node.data) == 1  # one resolution level
            data = np.asarray(node.data[0])
            assert data.dtype == (np.uint8 if node is image_node else np.uint16)
            np.testing.assert_array_equal(data, expected)
            assert [a["name"] for a in node.metadata["axes"]] == axes
            assert all(a["type"] == "space" and a["unit"] == "micrometer" for a in node.metadata["axes"])
            scale = node.metadata["coordinateTransformations"][0][0]
            assert scale["type"] == "scale" and scale["scale"] == pytest.approx(SPACING[ndim])


def test_ome_zarr_without_spacing_has_unit_scale_and_no_unit(tmp_path):
    samples, files = write_dataset(tmp_path, "ome-zarr", 3, n=1, spacing=False)
    image_node, labels_node = read_ome_zarr(tmp_path / files[0]["image"])
    assert image_node.metadata["coordinateTransformations"][0][0]["scale"] == [1.0, 1.0, 1.0]
    assert all("unit" not in a for a in image_node.metadata["axes"])
    np.testing.assert_array_equal(np.asarray(labels_node.data[0]), samples[0][1])


def test_label_ids_above_65535_are_kept(tmp_path):
    labels = np.zeros((8, 8), np.int64)
    labels[1, 1], labels[3, 3], labels[5, 5] = 1, 65536, 90000  # few ids: ome-zarr inspects every distinct id
    image = np.zeros(labels.shape, np.uint16)
    tiff = write_sample(tmp_path / "t", "tiff", 0, image, labels, spacing=(0.5, 0.5))
    np.testing.assert_array_equal(read_pairs(tmp_path / "t")[0].labels, labels)
    assert tifffile.imread(tmp_path / "t" / tiff["labels"]).dtype == np.int32  # ImageJ has no uint32
    zarr_files = write_sample(tmp_path / "z", "ome-zarr", 0, image, labels)
    _, labels_node = read_ome_zarr(tmp_path / "z" / zarr_files["image"])
    data = np.asarray(labels_node.data[0])
    assert data.dtype == np.uint32
    np.testing.assert_array_equal(data, labels)


def test_float_images_are_stored_as_float32(tmp_path):
    image, labels = make_sample(2, 0)
    image = image / 7.0  # float64
    write_sample(tmp_path, "tiff", 0, image, labels)
    stored = tifffile.imread(tmp_path / "img_0000.tif")
    assert stored.dtype == np.float32
    np.testing.assert_allclose(stored, image, rtol=1e-6)


def test_bad_requests_raise_one_line_errors(tmp_path):
    image, labels = make_sample(2, 0)
    with pytest.raises(CellcascadeError, match="unknown output format 'zarr'"):
        DatasetWriter(tmp_path, "zarr")
    with pytest.raises(CellcascadeError, match="unit"):
        DatasetWriter(tmp_path, "tiff", spacing=(1, 1), unit="parsec")
    with pytest.raises(CellcascadeError, match="spacing"):
        DatasetWriter(tmp_path, "tiff", spacing=(1.0, -1.0))
    cases = [
        (DatasetWriter(tmp_path, "tiff", spacing=SPACING[3]), image, labels, "spacing"),
        (DatasetWriter(tmp_path, "tiff"), image, labels[:-1], "shape"),
        (DatasetWriter(tmp_path, "tiff"), image[None, None], labels[None, None], "2D"),
        (DatasetWriter(tmp_path, "tiff"), image.astype(np.int64), labels, "dtype int64"),
        (DatasetWriter(tmp_path, "tiff"), image, labels.astype(np.float32), "integers"),
        (DatasetWriter(tmp_path, "tiff"), image, -labels, "negative"),
    ]
    for writer, bad_image, bad_labels, message in cases:
        with pytest.raises(CellcascadeError, match=message) as info:
            writer.add(0, bad_image, bad_labels)
        assert "\n" not in str(info.value)
    with pytest.raises(CellcascadeError, match="index"):
        DatasetWriter(tmp_path, "tiff").add(-1, image, labels)
    assert list(tmp_path.iterdir()) == []  # nothing written by a refused sample


def test_every_format_is_listed_and_writes_the_files_it_reports(tmp_path):
    image, labels = make_sample(3, 0)
    for format in FORMATS:
        files = write_sample(tmp_path / format, format, 0, image, labels, spacing=SPACING[3])
        assert set(files) == {"image", "labels"}
        assert all((tmp_path / format / path).exists() for path in files.values())


def test_rewrite_pairs_transforms_every_pair_into_a_folder_that_appears_whole(tmp_path):
    import json

    from cellcascade.io.output import rewrite_pairs

    source = tmp_path / "in"
    source.mkdir()
    for name, value in (("b", 7), ("a", 3)):
        tifffile.imwrite(source / f"{name}.tif", np.full((4, 6), value, np.uint16))
        tifffile.imwrite(source / f"{name}_masks.tif", np.eye(4, 6, dtype=np.uint16))

    def double(index, image, labels):
        return image * 2, labels + 1, (index, int(image[0, 0]))

    infos = rewrite_pairs(source, tmp_path / "out", double, record=lambda infos: ("done.json", {"n": len(infos)}))
    assert infos == [(0, 3), (1, 7)]  # in name order
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "out" / "b.tif"), np.full((4, 6), 14))
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "out" / "a_masks.tif"), np.eye(4, 6) + 1)
    assert json.loads((tmp_path / "out" / "done.json").read_text()) == {"n": 2}

    def fails_on_the_second(index, image, labels):
        if index == 1:
            raise CellcascadeError("broken")
        return image, labels, None

    with pytest.raises(CellcascadeError, match="broken"):
        rewrite_pairs(source, tmp_path / "half", fails_on_the_second)
    with pytest.raises(CellcascadeError, match="exists"):
        rewrite_pairs(source, tmp_path / "out", double)
    with pytest.raises(CellcascadeError, match="no NAME_masks"):
        rewrite_pairs(tmp_path / "out" / "missing", tmp_path / "other", double)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out"]  # nothing half-written
