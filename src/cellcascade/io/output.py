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

    ``transform(index, image, labels)`` gets the pair's arrays (image in its dtype, labels integer, both (Y, X)) and
    returns ``(image, labels, info)``; the new pair keeps the names and `info` is collected. ``record(infos)``, if
    given, returns ``(file name, dict)``: a JSON file written beside the pairs (e.g. what was done, and totals). `out`
    appears only when all of it is written (:func:`output_folder`); it must not exist yet. Returns the `info` of every
    pair, in name order.
    """
    import tifffile
    from tqdm import tqdm

    source = Path(source)
    masks = sorted(source.glob("*_masks.tif"))
    if not masks:
        raise CellcascadeError(f"{source}: no NAME_masks.tif files")
    if Path(out).exists():
        raise CellcascadeError(f"{out}: exists; choose a new folder")
    infos = []
    with output_folder(out) as tmp:
        for index, mask_file in enumerate(tqdm(masks, desc=desc, unit="image")):
            image_file = mask_file.with_name(mask_file.name.replace("_masks.tif", ".tif"))
            image, labels, info = transform(index, tifffile.imread(image_file), tifffile.imread(mask_file))
            tifffile.imwrite(tmp / image_file.name, image, compression="zlib")
            tifffile.imwrite(tmp / mask_file.name, labels, compression="zlib")
            infos.append(info)
        if record is not None:
            name, content = record(infos)
            (tmp / name).write_text(json.dumps(content, indent=1))
    return infos
