import numpy as np
import pytest
import tifffile

from cellcascade.data import (
    AnnotatedImage,
    dihedral,
    extract_crops,
    load_sample,
    read_ctc,
    read_dataset,
    read_pairs,
    require_ndim,
)
from cellcascade.errors import CellcascadeError

from conftest import ellipse_labels, shared_data


def write_ctc(root, frames=("000", "003"), gold=("000",), silver=("000", "003"), shape=(48, 48)):
    (root / "01").mkdir(parents=True)
    (root / "01_GT" / "SEG").mkdir(parents=True)
    (root / "01_ST" / "SEG").mkdir(parents=True)
    for f in frames + ("009",):  # frame 009 has no mask: skipped
        tifffile.imwrite(root / "01" / f"t{f}.tif", np.full(shape, int(f) + 1, np.uint8))
    for f in gold:
        tifffile.imwrite(root / "01_GT" / "SEG" / f"man_seg{f}.tif", ellipse_labels(shape, n=2).astype(np.uint16))
    for f in silver:
        tifffile.imwrite(root / "01_ST" / "SEG" / f"man_seg{f}.tif", ellipse_labels(shape, n=3, seed=5).astype(np.uint16))
    return root


def test_ctc_reads_only_frames_with_masks_and_prefers_gold(tmp_path):
    items = read_ctc(write_ctc(tmp_path / "ctc"))
    assert [i.name for i in items] == ["01/t000", "01/t003"]
    assert items[0].labels.max() == 2  # gold truth (2 cells) beats silver truth (3 cells) for frame 000
    assert items[1].labels.max() == 3  # silver truth where there is no gold
    assert items[1].image[0, 0] == 4
    assert not items[0].dense and not items[0].known_background().any()
    assert [i.name for i in read_ctc(tmp_path / "ctc", truth="gold")] == ["01/t000"]
    assert [i.name for i in read_dataset(tmp_path / "ctc")] == ["01/t000", "01/t003"]


def test_ctc_3d(tmp_path):
    root = tmp_path / "ctc3d"
    (root / "01").mkdir(parents=True)
    (root / "01_GT" / "SEG").mkdir(parents=True)
    labels = np.zeros((5, 20, 20), np.uint16)
    labels[1:4, 5:10, 5:10] = 1
    tifffile.imwrite(root / "01" / "t000.tif", np.ones((5, 20, 20), np.uint16), photometric="minisblack")
    tifffile.imwrite(root / "01_GT" / "SEG" / "man_seg000.tif", labels, photometric="minisblack")
    tifffile.imwrite(root / "01_GT" / "SEG" / "man_seg_000_002.tif", labels[2])  # a 2D slice annotation: ignored
    (item,) = read_ctc(root)
    assert item.ndim == 3 and item.labels.shape == (5, 20, 20)
    require_ndim([item], 3)
    with pytest.raises(CellcascadeError, match="2D data is required"):
        require_ndim([item], 2)


def test_pairs(pairs_folder):
    items = read_pairs(pairs_folder)
    assert [i.name for i in items] == ["img0", "img1"]
    assert items[0].labels.dtype == np.int32 and items[0].labels.max() == 6
    with pytest.raises(CellcascadeError, match="3D data is required"):
        require_ndim(items, 3)


def test_embedded_sample_is_dense_and_real():
    (item,) = load_sample()
    assert item.image.shape == (512, 512) and item.image.dtype == np.uint16
    assert len(np.unique(item.labels)) - 1 == 125
    assert item.dense and item.known_background().sum() == (item.labels == 0).sum()


def test_shared_ctc_sample_reads():
    items = read_ctc(shared_data("Fluo-N2DH-GOWT1"))
    assert len(items) == 6 and items[0].image.shape == (1024, 1024)


@pytest.mark.parametrize(
    "setup, message",
    [
        ("missing", "no such file or folder"),
        ("float_mask", "integer instance labels"),
        ("zero_mask", "all zero"),
        ("shape_mismatch", "differ"),
        ("unreadable", "cannot read"),
        ("empty_folder", "no image/mask pair"),
    ],
)
def test_bad_input_gives_clear_error(tmp_path, setup, message):
    folder = tmp_path / "data"
    folder.mkdir()
    image = np.ones((32, 32), np.uint8)
    labels = ellipse_labels((32, 32), n=1).astype(np.uint16)
    if setup == "float_mask":
        tifffile.imwrite(folder / "a_masks.tif", labels.astype(np.float32) + 0.5)
    elif setup == "zero_mask":
        tifffile.imwrite(folder / "a_masks.tif", np.zeros_like(labels))
    elif setup == "shape_mismatch":
        tifffile.imwrite(folder / "a_masks.tif", labels[:20])
    elif setup == "unreadable":
        (folder / "a_masks.tif").write_bytes(b"this is not a tiff")
    if setup not in ("missing", "empty_folder"):
        tifffile.imwrite(folder / "a.tif", image)
    with pytest.raises(CellcascadeError, match=message) as info:
        read_dataset(tmp_path / "nowhere" if setup == "missing" else folder)
    assert "\n" not in str(info.value)


def test_validate_rejects_float_labels_directly():
    with pytest.raises(CellcascadeError, match="integer"):
        AnnotatedImage(np.ones((8, 8)), np.full((8, 8), 0.5), "x")


@pytest.mark.parametrize("size", [32, 48])
def test_crops_are_centred_and_sized(size):
    labels = np.zeros((100, 100), np.int32)
    labels[20:31, 40:61] = 1  # 11 x 21 box, centroid (25, 50)
    labels[60:70, 0:10] = 2  # touches the left border
    labels[20:31, 61:70] = 3  # a neighbour of cell 1
    image = np.where(labels == 1, 100, 10).astype(np.uint16)
    crops = extract_crops([AnnotatedImage(image, labels, "t", dense=False)], size=size)
    first = crops[0]
    assert first.mask.shape == first.texture.shape == (size, size)
    rows, cols = np.nonzero(first.mask)
    assert abs(rows.mean() - (size - 1) / 2) <= 0.5 and abs(cols.mean() - (size - 1) / 2) <= 0.5
    assert first.mask.sum() == 11 * 21
    assert first.usable_for_shape and not crops[1].usable_for_shape and crops[1].touches_border
    # Texture: the cell's own pixels are known, the neighbour's and (sparse) unannotated pixels unknown.
    assert np.all(first.texture[first.mask] == 100)
    assert np.isnan(first.texture[~first.mask]).all()
    m = first.measurements
    assert m["area"] == 231 and m["mean_intensity"] == 100 and m["eccentricity"] > 0.8


def test_dense_crops_know_background_and_scale_is_stored():
    (item,) = load_sample()
    crops = extract_crops([item], size=32, scale="auto")
    assert all(c.scale == crops[0].scale < 1 for c in crops)
    usable = [c for c in crops if c.usable_for_shape]
    assert len(usable) > 100
    assert all(not (c.mask[0].any() or c.mask[:, -1].any()) for c in usable)
    background = ~np.isnan(crops[0].texture) & ~crops[0].mask
    assert background.any()  # dense annotation: label 0 is background, so it is known


def test_dihedral_gives_eight_distinct_poses():
    a = np.arange(9).reshape(3, 3)
    poses = {dihedral(a, k).tobytes() for k in range(8)}
    assert len(poses) == 8
