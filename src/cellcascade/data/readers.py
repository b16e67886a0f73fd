"""Readers for annotated data: the Cell Tracking Challenge layout, image/mask pairs, and the embedded sample.

Every reader returns a list of :class:`~cellcascade.data.annotated.AnnotatedImage`, only for images that have a
mask. Errors are :class:`~cellcascade.errors.CellcascadeError` with a one-line message.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np
import tifffile

from cellcascade.data.annotated import AnnotatedImage
from cellcascade.errors import CellcascadeError

IMAGE_SUFFIXES = (".tif", ".tiff", ".png")
SAMPLE_NAME = "sample"


def read_image_file(path: str | Path) -> np.ndarray:
    """Read a TIFF (or PNG) into an array; squeeze singleton axes. Raises CellcascadeError if unreadable."""
    path = Path(path)
    try:
        if path.suffix.lower() == ".png":
            from skimage.io import imread

            array = np.asarray(imread(path))
        else:
            array = tifffile.imread(path)
    except Exception as exc:  # tifffile raises many types; the user needs only the file and the reason
        raise CellcascadeError(f"cannot read {path}: {exc}".splitlines()[0]) from None
    return np.squeeze(array)


def read_labels_file(path: str | Path) -> np.ndarray:
    """Read an instance-label file as int32 (floats holding whole numbers accepted). Raises CellcascadeError."""
    labels = read_image_file(path)
    if labels.dtype.kind == "f":
        if not np.all(np.isfinite(labels)) or np.any(np.mod(labels, 1) != 0):
            raise CellcascadeError(f"{path}: the mask must hold integer instance labels, found non-integer values")
    elif labels.dtype.kind not in "iu":
        raise CellcascadeError(f"{path}: the mask must hold integer instance labels, found dtype {labels.dtype}")
    if labels.max(initial=0) > np.iinfo(np.int32).max:
        raise CellcascadeError(f"{path}: label ids too large")
    return labels.astype(np.int32)


def _frame_number(name: str) -> str | None:
    match = re.search(r"(\d+)$", name)
    return match.group(1) if match else None


def read_ctc(root: str | Path, truth: str = "auto", dense: bool = False) -> list[AnnotatedImage]:
    """Read a Cell Tracking Challenge folder: ``NN/tTTT.tif`` with ``NN_GT/SEG/man_segTTT.tif`` (or ``NN_ST``).

    Parameters
    ----------
    root : path
        Folder holding one or more sequences (``01``, ``02``, …) and their ``_GT``/``_ST`` folders.
    truth : {"auto", "gold", "silver"}
        Which segmentation truth to use; "auto" takes gold truth where a frame has it, else silver truth.
    dense : bool
        Whether the masks annotate every cell (label 0 = background).

    Returns
    -------
    list of AnnotatedImage, one per frame that has a mask (2D or 3D, as the files are).

    Examples
    --------
    >>> items = read_ctc("Fluo-N2DH-GOWT1")  # doctest: +SKIP
    >>> items[0].image.shape
    (1024, 1024)
    """
    root = Path(root)
    if truth not in ("auto", "gold", "silver"):
        raise CellcascadeError(f"truth must be auto, gold or silver, not {truth!r}")
    folders = {"gold": ["GT"], "silver": ["ST"], "auto": ["GT", "ST"]}[truth]
    sequences = sorted(p for p in root.iterdir() if p.is_dir() and re.fullmatch(r"\d+", p.name))
    items: list[AnnotatedImage] = []
    for sequence in sequences:
        images = {
            _frame_number(p.stem): p
            for p in sorted(sequence.iterdir())
            if p.suffix.lower() in IMAGE_SUFFIXES and p.stem.startswith("t")
        }
        masks: dict[str, Path] = {}
        for kind in reversed(folders):  # gold truth overrides silver truth
            seg = root / f"{sequence.name}_{kind}" / "SEG"
            if seg.is_dir():
                for p in sorted(seg.iterdir()):
                    # man_segTTT.tif only; man_seg_TTT_ZZZ.tif are single annotated slices of a 3D frame
                    if p.suffix.lower() in IMAGE_SUFFIXES and re.fullmatch(r"man_seg\d+", p.stem):
                        masks[_frame_number(p.stem)] = p
        for frame, mask_path in sorted(masks.items()):
            if frame not in images:
                continue
            image = read_image_file(images[frame])
            labels = read_labels_file(mask_path)
            items.append(AnnotatedImage(image, labels, name=f"{sequence.name}/t{frame}", dense=dense))
    if not items:
        raise CellcascadeError(f"{root}: no Cell Tracking Challenge frame with a mask found (expected 01/t000.tif with 01_GT/SEG/man_seg000.tif)")
    return items


def read_pairs(folder: str | Path, dense: bool = False) -> list[AnnotatedImage]:
    """Read a folder of image/mask pairs named as Cellpose does: ``NAME.tif`` with ``NAME_masks.tif``.

    Images without a mask are ignored (they are not annotated). Returns a list of AnnotatedImage.
    """
    folder = Path(folder)
    files = {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}
    items = []
    for stem, mask_path in files.items():
        if not stem.endswith("_masks"):
            continue
        image_stem = stem[: -len("_masks")]
        if image_stem not in files:
            raise CellcascadeError(f"{mask_path}: no image {image_stem}.tif beside this mask")
        image = read_image_file(files[image_stem])
        labels = read_labels_file(mask_path)
        if image.ndim == labels.ndim + 1 and image.shape[:-1] == labels.shape and image.shape[-1] in (3, 4):
            image = image[..., :3].mean(axis=-1)  # RGB image of a single stain: use its mean
        items.append(AnnotatedImage(image, labels, name=image_stem, dense=dense))
    if not items:
        raise CellcascadeError(f"{folder}: no image/mask pair found (expected NAME.tif with NAME_masks.tif)")
    return items


def sample_folder() -> Path:
    """Folder of the real annotated 2D sample inside the installed ``stardist`` package (not imported: no TensorFlow)."""
    spec = importlib.util.find_spec("stardist")
    if spec is None or not spec.submodule_search_locations:
        raise CellcascadeError("the embedded sample needs the 'stardist' package: pip install stardist")
    return Path(list(spec.submodule_search_locations)[0]) / "data" / "images"


def load_sample() -> list[AnnotatedImage]:
    """The embedded default: one real, densely annotated nuclei image (Data Science Bowl 2018, 512×512, 125 nuclei).

    Returns
    -------
    list with one AnnotatedImage: image uint16 (Y, X), labels int32 (Y, X), dense=True.
    """
    folder = sample_folder()
    image = read_image_file(folder / "img2d.tif")
    labels = read_labels_file(folder / "mask2d.tif")
    return [AnnotatedImage(image, labels, name="stardist-img2d", dense=True)]


def load_sample_3d() -> list[AnnotatedImage]:
    """The synthetic 3D sample shipped with ``stardist`` (image and labels (Z, Y, X)); dense."""
    folder = sample_folder()
    image = read_image_file(folder / "img3d.tif")
    labels = read_labels_file(folder / "mask3d.tif")
    return [AnnotatedImage(image, labels, name="stardist-img3d", dense=True)]


def read_dataset(source: str | Path, dense: bool | None = None) -> list[AnnotatedImage]:
    """Read annotated data from ``"sample"`` (the embedded sample), a CTC folder, or a folder of pairs.

    ``dense=None`` keeps each source's default: True for the sample, False (sparse) for user data.
    """
    if str(source) == SAMPLE_NAME:
        items = load_sample()
    else:
        path = Path(source)
        if not path.exists():
            raise CellcascadeError(f"{path}: no such file or folder")
        if not path.is_dir():
            raise CellcascadeError(f"{path}: expected a folder (CTC layout or image/mask pairs), or 'sample'")
        is_ctc = any(p.is_dir() and re.fullmatch(r"\d+_(GT|ST)", p.name) for p in path.iterdir())
        items = read_ctc(path) if is_ctc else read_pairs(path)
    if dense is not None:
        for item in items:
            item.dense = dense
    return items
