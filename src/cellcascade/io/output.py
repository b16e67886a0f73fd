"""Output folders that appear only when complete: work goes to a hidden temporary folder, renamed at the end."""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path

from cellcascade.errors import CellcascadeError


@contextlib.contextmanager
def output_folder(out: str | Path, overwrite: bool = False, *, shared: bool = False, is_main: bool = True,
                  wait=lambda: None):
    """Yield a temporary folder beside `out`; on success it replaces `out`, on any error it is removed.

    Raises CellcascadeError at once if `out` exists (and is not empty) and `overwrite` is False, or if its parent
    folder does not exist.

    With ``shared=True`` (several processes writing one output, e.g. under ``accelerate launch``) every process
    gets the same temporary folder; only the main process (`is_main`) creates, renames or removes it, and `wait`
    (a barrier) keeps the others in step.
    """
    out = Path(out)
    if out.exists() and not overwrite and (not out.is_dir() or any(out.iterdir())):
        raise CellcascadeError(f"{out}: already exists; choose another output folder or pass --overwrite")
    if out.exists() and not out.is_dir():
        raise CellcascadeError(f"{out}: exists and is not a folder")
    parent = out.absolute().parent
    if not parent.is_dir():
        raise CellcascadeError(f"{parent}: folder does not exist")
    tmp = parent / f".{out.name}.partial"
    if is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    if shared:
        wait()
    try:
        yield tmp
    except BaseException:
        if is_main:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    if shared:
        wait()
    if is_main:
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)


def rewrite_pairs(source: str | Path, out: str | Path, transform, *, record=None, desc: str = "images") -> list:
    """Write every ``NAME.tif`` + ``NAME_masks.tif`` pair of `source`, transformed, to the new folder `out`.

    The pairs are read by :func:`cellcascade.data.read_pairs` (its checks and one-line errors) and written by
    :func:`cellcascade.io.tiff.write_tiff`. ``transform(index, image, labels)`` gets the pair's arrays (image in its
    file's dtype, labels int32, both (Y, X)) and returns ``(image, labels, info)``; the new pair keeps the names and
    `info` is collected. ``record(infos)``, if given, returns ``(file name, dict)``: a JSON file written beside the
    pairs (e.g. what was done, and totals). `out` appears only when all of it is written (:func:`output_folder`); it
    must not exist yet. Returns the `info` of every pair, in name order.
    """
    from tqdm import tqdm

    from cellcascade.data import read_pairs
    from cellcascade.io.tiff import write_tiff

    if Path(out).exists():
        raise CellcascadeError(f"{out}: exists; choose a new folder")
    if not any(Path(source).glob("*_masks.tif")):
        raise CellcascadeError(f"{source}: no NAME_masks.tif files")
    items = read_pairs(source)
    infos = []
    with output_folder(out) as tmp:
        for index, item in enumerate(tqdm(items, desc=desc, unit="image")):
            image, labels, info = transform(index, item.image, item.labels)
            write_tiff(tmp / f"{item.name}.tif", image)
            write_tiff(tmp / f"{item.name}_masks.tif", labels)
            infos.append(info)
        if record is not None:
            name, content = record(infos)
            (tmp / name).write_text(json.dumps(content, indent=1))
    return infos
