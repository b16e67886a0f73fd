"""Output folders that appear only when complete: work goes to a hidden temporary folder, renamed at the end."""

from __future__ import annotations

import contextlib
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
